"""Registers the `ganomaly` method (the authors' defaults, plus smoke / cpu-quick / gpu-quick)."""
from adbench import MethodSpec, hookimpl
from adbench.methods.ganomaly.detector import GANomaly

PRESETS = {
    # CI: about a second of GANomaly training on 2 cores (4 iterations of narrow networks).
    "smoke": {"nz": 16, "ngf": 4, "ndf": 4, "channel_max": 32, "batch_size": 4, "iterations": 4,
              "checkpoint_interval": 4, "log_interval": 2, "sample_interval": 4,
              "num_samples": 2},
    # 2 idle CPU cores, about 6 minutes of training: a quarter of the authors' widths (16
    # channels doubling to 256), their nz, weights and Adam, batch 16. Measured 0.785 s of CPU
    # time per iteration in a 1-thread process (the machine was shared, so CPU time rather
    # than wall time), halved for 2 cores: ~0.39 s/iteration, 900 iterations (14.4k images)
    # in ~6 minutes, longer where 2 threads scale worse than 2x.
    "cpu-quick": {"ngf": 16, "ndf": 16, "channel_max": 256, "batch_size": 16, "iterations": 900,
                  "checkpoint_interval": 100, "log_interval": 25, "sample_interval": 100},
    # full width (the authors' networks at 160 x 128) and their batch of 64; an estimate of a
    # few minutes on one H200 with bf16 autocast, not measured
    "gpu-quick": {"iterations": 3000, "checkpoint_interval": 1000, "sample_interval": 1000,
                  "log_interval": 100},
    "paper": {},
}


@hookimpl
def adbench_methods():
    return [MethodSpec(
        name="ganomaly", factory=GANomaly, kind="reconstruction",
        description="GANomaly: encoder-decoder-encoder GAN, latent-distance score "
                    "(Akçay et al., ACCV 2018)",
        presets={k: dict(v) for k, v in PRESETS.items()},
    )]
