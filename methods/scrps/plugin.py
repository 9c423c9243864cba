"""Registers the `scrps` method (paper defaults, plus smoke / cpu-quick / gpu-quick presets)."""
from adbench import MethodSpec, hookimpl
from adbench.methods.scrps.detector import SCRPS

PRESETS = {
    # CI, well under a minute of SCRPS work on 2 idle cores: the narrow smoke StyleGAN2 for 4
    # iterations, 3 MSE-only inversion steps (no VGG16 in the loop), a handful of codes.
    "smoke": {"stylegan": "smoke",
              "stylegan_config": {"iterations": 4, "checkpoint_interval": 4, "sample_interval": 4},
              "inversion_steps": 3, "inversion_lr": 0.05, "perceptual_weight": 0.0,
              "inversion_batch_size": 64, "k1": 10, "k2": 4, "retrieved_perceptual": False,
              # used only with --set inversion_init=encoder (e.g. benchmarks/perf/inversion_init.py)
              "encoder_config": {"width": 8, "max_channels": 16, "head_channels": 4,
                                 "iterations": 4, "batch_size": 4, "checkpoint_interval": 4,
                                 "log_interval": 2, "sample_interval": 4, "num_samples": 4}},
    # 2 CPU cores, synth, from an empty cache (synth volumes too), <= 30 minutes end to end.
    # The cpu-quick StyleGAN2 stops at 900 of its 2,200 iterations, then a short MSE-only
    # inversion (12 Adam steps at lr 0.1, ~40-57 image-steps/s) of 3% of the training slices
    # and of every test slice, started from an encoder's W+ codes (encoder.py: trained after
    # the StyleGAN2, generator frozen, on its own samples and the healthy slices, MSE-only
    # like the inversion). A pipeline-level run, not the paper's fidelity: VGG16 in the
    # inversion loop costs ~19 GFLOP per image-step here (~1 image-step/s on 2 cores), out
    # of reach. The StyleGAN2 is scored every 300 iterations here (KID/FID on VGG16
    # features, SWD; ~8 s each); add "quality_interval": 0 to stylegan_config to skip them.
    # Sized by measurement (session 7, idle cores): with 1,100 + 150 iterations the run took
    # 31.8 min: synth generation and slices 3.6 min, StyleGAN2 17.9 min (0.90 s/iteration),
    # encoder 1.9 min (0.74 s/iteration), repository 0.7 min, 256 validation slices 2.4 min
    # and 513 test slices 4.5 min (0.53 s each: 12 inversion steps ~0.29 s, A_per ~0.25 s).
    # 900 + 100 iterations: measured 28.4 min end to end from an empty cache (synth and
    # slices 4.1 min, StyleGAN2 14.8 min at 0.9-1.3 s/iteration, encoder 1.1 min, repository
    # 0.8, validation 2.2, test 4.5; session 7, idle cores). The cost: the encoder's
    # real-slice loss is 1.46 at 100 iterations (1.05 at 600 in session 6), G_ema's SWD 159
    # at 900 against 73 at 1,400 (blobs either way, not brains: issue #19's cpu-long preset
    # is the recipe for quality). What limits SCRPS here: benchmarks/perf/scrps_limits.py.
    "cpu-quick": {"stylegan": "cpu-quick", "stylegan_config": {"iterations": 900, "quality_interval": 300},
                  "inversion_init": "encoder",
                  "encoder_config": {"width": 16, "max_channels": 64, "head_channels": 8,
                                     "iterations": 100, "batch_size": 8, "lr": 1e-3,
                                     "checkpoint_interval": 50, "log_interval": 25,
                                     "sample_interval": 50},
                  "inversion_steps": 12, "inversion_lr": 0.1, "perceptual_weight": 0.0,
                  # 2 cores: B = 16 ran 57 image-steps/s, B = 64 only 33 (perf/inversion.py)
                  "inversion_batch_size": 16, "repository_fraction": 0.03,
                  "k1": 25, "k2": 5, "retrieved_perceptual": False},
    # One H200, <= 8 minutes end to end including StyleGAN2 training: full-width generator,
    # the paper's loss (VGG16 blocks 1-5 + 10 MSE), batched bf16 inversion with a shortened
    # schedule (~2,100 slices x 50 steps at ~800+ image-steps/s), started from an encoder
    # trained with the same loss (2,000 iterations of 2 x 32 slices: an estimate of a few
    # minutes, not yet measured on the H200).
    "gpu-quick": {"stylegan": "gpu-quick", "inversion_init": "encoder",
                  "encoder_config": {"width": 32, "max_channels": 256, "head_channels": 16,
                                     "iterations": 2000, "batch_size": 32, "lr": 1e-3,
                                     "checkpoint_interval": 500, "sample_interval": 500},
                  "inversion_steps": 50, "inversion_lr": 0.05,
                  "inversion_batch_size": 256, "precision": "bf16"},
    "paper": {},
}
# 2 CPU cores, synth: the cpu-long StyleGAN2 (6,000 iterations, issue #19's two-hour recipe)
# and the cpu-quick pipeline after it, with the encoder trained 6x longer (600 iterations)
# and 20 inversion steps instead of 12. Measured 58.7 min from a warm synth cache (session 8,
# idle cores): StyleGAN2 47.8 min (0.44-0.49 s/iteration), encoder 4.0, repository 0.5,
# 256 validation slices 1.7, 513 test slices 3.7 (0.43 s each). docs/benchmark.md has its
# quality curve, samples and leaderboard.
PRESETS["cpu-long"] = {
    **{k: v for k, v in PRESETS["cpu-quick"].items() if k != "stylegan_config"},
    "stylegan": "cpu-long", "inversion_steps": 20,
    "encoder_config": {**PRESETS["cpu-quick"]["encoder_config"], "iterations": 600,
                       "checkpoint_interval": 100, "log_interval": 50, "sample_interval": 200}}


@hookimpl
def adbench_methods():
    return [MethodSpec(
        name="scrps", factory=SCRPS, kind="reconstruction",
        description="StyleGAN2 latent code retrieval and partial swap (Wei et al., MICCAI 2025)",
        presets={k: dict(v) for k, v in PRESETS.items()},
        # retrieval and swap act at predict time only: ablations reuse the fitted model
        predict_keys=("k1", "k2", "l1", "l2", "two_stage", "retrieved_perceptual", "retrieval_chunk"),
        # a generator trained elsewhere (torchrun on N GPUs): its sha256 keys the model cache
        file_keys=("generator",),
    )]
