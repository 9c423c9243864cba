"""Registers the `patchcore` method (PatchCore on VGG16 blocks 3-5, paper §3.2)."""
from adbench import MethodSpec, hookimpl
from adbench.methods.patchcore.detector import PatchCore

DEFAULT_CONFIG = {
    "backbone": "vgg16", "layers": ["block3", "block4", "block5"], "weights": "imagenet",
    "batch_size": 32, "coreset_ratio": 0.1, "max_bank_size": 20_000, "projection_dim": 128,
    "max_pool": 200_000, "pool_reduction": "random", "max_cache_mb": 1024, "neighbourhood": 3,
    "embed_dim": None,
    "brain_margin": 3, "sigma": 4.0, "knn": "torch", "max_train_slices": None,
}

PRESETS = {
    # CI: few slices and a small bank keep fit and per-slice kNN cheap on 2 CPU cores.
    "smoke": {"batch_size": 8, "max_train_slices": 24, "max_bank_size": 1_000,
              "max_pool": 20_000},
    # 10% coreset capped at 20k patches (100 MB): selection from a 200k pool and the per-slice
    # kNN (1280 x 20k x 1280 flops) stay practical on a CPU.
    "default": {},
    # PatchCore's published setting (10% coreset, 3x3 aggregation, JL-128 selection) with the
    # bank capped so the OpenBHB-scale bank stays at 200k x 1280 x 4 B = 1 GB.
    "paper": {"coreset_ratio": 0.1, "max_bank_size": 200_000, "max_pool": 2_000_000,
              "pool_reduction": "greedy"},
}


@hookimpl
def adbench_methods():
    return [MethodSpec(
        name="patchcore", factory=PatchCore, default_config=dict(DEFAULT_CONFIG), kind="feature",
        description="PatchCore: greedy-coreset memory bank of locally aware VGG16 patch "
                    "features, nearest-neighbour distance map",
        presets=PRESETS,
    )]
