"""Registers the embedded ``synth`` dataset (entry point ``synth`` in pyproject.toml)."""
from __future__ import annotations

from adbench import DatasetSpec, hookimpl
from adbench.datasets.synth.dataset import SynthDataset

DEFAULT_CONFIG = {
    "n_train": 40,          # healthy volumes
    "n_test": 20,           # volumes with one lesion each
    "n_val": 10,            # healthy validation volumes (thresholds at a false-positive rate)
    "lesion_mix": 0.5,      # fraction of tumours among the test volumes (rest: strokes)
    "seed": 0,
    "spacing": 1,           # mm per voxel: 1 = 197x233x189 template grid, 2 = 99x117x95
    "lesion_min_mm": 5.0,   # equivalent-sphere diameter at least this
    "lesion_max_mm": 45.0,  # every lesion inside a ball of this diameter
    "cache_dir": None,      # None: $ADBENCH_CACHE/synth (default ~/.cache/adbench/synth)
    "progress": None,       # progress bar while generating; None: when stderr is a terminal
    "generate": "all",      # a missing volume read generates: "all" missing ones, "each" itself
}

PRESETS = {
    "smoke": {"n_train": 4, "n_test": 3, "n_val": 2, "spacing": 2},       # seconds; for tests and CI
    "default": {},
    "cpu-quick": {"n_train": 60, "n_test": 20},                # enough to train a small StyleGAN2
    # SCRPS's cpu-long was measured on synth's default 40 training volumes (issue #19); the
    # baselines beside it: --preset cpu-quick --set dataset.n_train=40 (the same slices)
    "cpu-long": {"n_train": 40, "n_test": 20},
    "gpu-quick": {"n_train": 150, "n_test": 40, "n_val": 20},
    "paper": {"n_train": 400, "n_test": 100, "n_val": 40},
}


@hookimpl
def adbench_datasets():
    return [DatasetSpec(
        name="synth", factory=SynthDataset, default_config=dict(DEFAULT_CONFIG),
        splits=("train", "test"),  # and "val": SynthDataset.has_val_split
        description="embedded: MNI152-derived healthy volumes and tumour/stroke lesions "
                    "with exact masks (no download)",
        presets={k: dict(v) for k, v in PRESETS.items()})]
