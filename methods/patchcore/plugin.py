"""Registers the `patchcore` method (PatchCore on VGG16 blocks 3-5, paper §3.2)."""
from adbench import MethodSpec, hookimpl

from .detector import PatchCore

DEFAULT_CONFIG = {
    "backbone": "vgg16", "layers": ["block3", "block4", "block5"], "weights": "imagenet",
    "batch_size": 32, "coreset_ratio": 0.1, "max_bank_size": 200_000, "projection_dim": 128,
    "max_pool": 1_000_000, "max_cache_mb": 1024, "neighbourhood": 3, "embed_dim": None,
    "brain_margin": 3, "sigma": 4.0, "knn": "torch",
}

PRESETS = {
    # CI: a small bank keeps fit and per-slice kNN cheap on 2 CPU cores.
    "smoke": {"batch_size": 8, "coreset_ratio": 0.1, "max_bank_size": 2_000,
              "max_pool": 50_000},
    "default": {},
    # PatchCore's published setting (10% coreset, 3x3 aggregation, JL-128 selection) with the
    # bank capped so the OpenBHB-scale bank stays at 200k x 1280 x 4 B = 1 GB.
    "paper": {"coreset_ratio": 0.1, "max_bank_size": 200_000, "max_pool": 2_000_000},
}


@hookimpl
def adbench_methods():
    return [MethodSpec(
        name="patchcore", factory=PatchCore, default_config=dict(DEFAULT_CONFIG), kind="feature",
        description="PatchCore: greedy-coreset memory bank of locally aware VGG16 patch "
                    "features, nearest-neighbour distance map",
        presets=PRESETS,
    )]
