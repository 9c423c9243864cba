"""Registers the `scrps` method (paper defaults, plus smoke / cpu-quick / gpu-quick presets)."""
from adbench import MethodSpec, hookimpl

from .detector import SCRPS

DEFAULT_CONFIG = {
    "stylegan": "paper", "stylegan_config": {},
    "inversion_steps": 2000, "inversion_lr": 0.01, "mse_weight": 10.0,
    "perceptual_mode": "lpips", "perceptual_blocks": [1, 2, 3, 4, 5],
    "inversion_batch_size": 32, "repository_fraction": 0.05, "repository_chunk": 64,
    "k1": 100, "k2": 20, "l1": 6, "l2": 9, "two_stage": True,
    "weights": "imagenet", "precision": "fp32", "compile": False,
    "retrieved_perceptual": True, "retrieval_chunk": 65536,
}

PRESETS = {
    # CI: 10-iteration narrow StyleGAN2, 2 inversion steps on VGG16 block 1 only (the cost of
    # inversion on 2 cores is VGG16's), a handful of repository codes.
    "smoke": {"stylegan": "smoke", "inversion_steps": 2, "perceptual_blocks": [1],
              "inversion_batch_size": 64, "k1": 10, "k2": 4, "retrieved_perceptual": False},
    # 2 CPU cores, <= 30 minutes end to end on synth: narrow StyleGAN2 (channel_max 128), short
    # inversion on VGG16 blocks 1-2.
    "cpu-quick": {"stylegan": "cpu-quick", "inversion_steps": 12, "inversion_lr": 0.05,
                  "perceptual_blocks": [1, 2], "inversion_batch_size": 64,
                  "k1": 50, "k2": 10, "retrieved_perceptual": False},
    # One H200, <= 8 minutes end to end including StyleGAN2 training: full-width generator,
    # batched bf16 inversion with a shortened schedule (larger steps).
    "gpu-quick": {"stylegan": "gpu-quick", "inversion_steps": 100, "inversion_lr": 0.03,
                  "inversion_batch_size": 256, "precision": "bf16"},
    "paper": {},
}


@hookimpl
def adbench_methods():
    return [MethodSpec(
        name="scrps", factory=SCRPS, default_config=dict(DEFAULT_CONFIG), kind="reconstruction",
        description="StyleGAN2 latent code retrieval and partial swap (Wei et al., MICCAI 2025)",
        presets={k: dict(v) for k, v in PRESETS.items()},
    )]
