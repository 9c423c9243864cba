"""Registers the `fanogan` method (paper defaults, plus smoke / cpu-quick / gpu-quick presets)."""
from adbench import MethodSpec, hookimpl
from adbench.methods.fanogan.detector import FAnoGAN

PRESETS = {
    # CI: seconds on 2 cores. Networks 4 -> 8 channels, 10 critic steps (2 generator steps),
    # 5 encoder steps; a pipeline check, not a model.
    "smoke": {"latent_dim": 16, "base": 4, "channel_max": 8, "batch_size": 4,
              "gan_iterations": 10, "encoder_iterations": 5, "checkpoint_interval": 10,
              "log_interval": 5, "sample_interval": 10, "num_samples": 2,
              "predict_batch_size": 16},
    # 2 idle CPU cores, about 6 minutes of training (its length does not depend on the number
    # of training slices). Measured with 1 thread on a shared machine, 40 iterations:
    # 0.146-0.159 s per critic step, 0.08-0.12 s per encoder step; halved for 2 cores:
    # 3,500 x 0.077 + 1,000 x 0.05 = 5.3 min (6 min if 2 threads give only 1.7x). Narrow
    # networks (8 -> 64 channels, z of 128) and a faster optimiser than the paper's: Adam
    # 5e-4, betas (0.5, 0.9) for G and D (on synth slices, at the paper's 1e-4 the samples
    # were still grey blobs after 1,000 critic steps; at 5e-4 brain-shaped after 750), Adam
    # 1e-3 for the encoder (its loss levels off after ~500 steps). n_critic, λ, κ as in the paper.
    "cpu-quick": {"base": 8, "channel_max": 64, "batch_size": 8, "gan_iterations": 3500,
                  "lr": 5e-4, "betas": [0.5, 0.9], "encoder_iterations": 1000,
                  "encoder_optimizer": "adam", "encoder_lr": 1e-3, "checkpoint_interval": 500,
                  "log_interval": 50, "sample_interval": 500},
    # Full width (64 -> 512 channels, batch 64), the paper's GAN optimiser; 10,000 critic
    # steps (2,000 generator steps) and 3,000 Adam encoder steps. An estimate, NOT measured:
    # ~10 GFLOP per image per critic step (gradient penalty included) puts a step at
    # 15-25 ms on one H200, so about 3-5 minutes of training.
    "gpu-quick": {"gan_iterations": 10000, "encoder_iterations": 3000,
                  "encoder_optimizer": "adam", "encoder_lr": 1e-4,
                  "checkpoint_interval": 1000, "sample_interval": 1000,
                  "predict_batch_size": 256},
    # The authors' settings (wgangp_64x64.py, z_encoding_izif.py): the signature's defaults.
    "paper": {},
}


@hookimpl
def adbench_methods():
    return [MethodSpec(
        name="fanogan", factory=FAnoGAN, kind="reconstruction",
        description="f-AnoGAN: WGAN-GP and izi_f encoder, reconstruction G(E(x)) "
                    "(Schlegl et al., MedIA 2019)",
        presets={k: dict(v) for k, v in PRESETS.items()},
        predict_keys=("predict_batch_size",),   # batching only: the fitted model is reused
    )]
