"""Registers the `patchcore` method (PatchCore on VGG16 blocks 3-5, paper §3.2)."""
from adbench import MethodSpec, hookimpl
from adbench.methods.patchcore.detector import PatchCore

PRESETS = {
    # CI: few slices and a small bank keep fit and per-slice kNN cheap on 2 CPU cores.
    "smoke": {"batch_size": 8, "max_train_slices": 24, "max_bank_size": 1_000,
              "max_pool": 20_000},
    # 10% coreset capped at 20k patches (100 MB): selection from a 200k pool and the per-slice
    # kNN (1280 x 20k x 1280 flops) stay practical on a CPU.
    "default": {},
    # 2 CPU cores in minutes: an evenly spread 1,000 of the training slices (the central ones
    # under the cpu-quick slice rule) and a 10k-patch bank, halving the per-slice kNN.
    "cpu-quick": {"max_train_slices": 1_000, "max_bank_size": 10_000},
    # PatchCore's published setting (10% coreset, 3x3 aggregation, JL-128 selection) with the
    # bank capped so the OpenBHB-scale bank stays at 200k x 1280 x 4 B = 1 GB.
    "paper": {"coreset_ratio": 0.1, "max_bank_size": 200_000, "max_pool": 2_000_000,
              "pool_reduction": "greedy"},
}


@hookimpl
def adbench_methods():
    return [MethodSpec(
        name="patchcore", factory=PatchCore, kind="feature",
        description="PatchCore: greedy-coreset memory bank of locally aware VGG16 patch "
                    "features, nearest-neighbour distance map",
        presets=PRESETS,
    )]
