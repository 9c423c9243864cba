"""Run folders built from constructed per-volume values (through adbench.report.write_run)."""
from __future__ import annotations

import numpy as np
import pytest

from adbench.rundir import write_run

VGG_A = {"perceptual": {"backbone": "vgg16", "source": "env", "path": "/x/vgg.pth", "sha256": "a" * 64}}
VGG_A_CACHE = {"perceptual": {"backbone": "vgg16", "source": "torchvision-cache", "path": "/y",
                              "sha256": "a" * 64}}
VGG_RANDOM = {"perceptual": {"backbone": "vgg16", "source": "random", "path": None, "sha256": None}}


def rows_from(values: dict[str, list[float]], subjects=None) -> list[dict]:
    n = len(next(iter(values.values())))
    subjects = subjects or [f"sub{i:03d}" for i in range(n)]
    rows = []
    for i, s in enumerate(subjects):
        row = {"subject": s}
        for m in ("auroc", "dice_max", "auprc"):
            row[m] = float(values[m][i]) if m in values else 0.5
        row.update(n_voxels=1000, n_lesion_voxels=50, n_slices=3)
        rows.append(row)
    return rows


@pytest.fixture
def make_run(tmp_path):
    def make(method, dataset, values, *, seed=0, weights=None, slice_rule="lesion", root=None,
             run_id="r0", subjects=None, config=None, train_on=None):
        """config: resolved-config sections as config.yaml holds them (method_config, ...)."""
        d = (root or tmp_path / "runs") / dataset / method / f"{run_id}-s{seed}"
        return write_run(d, rows_from(values, subjects), method=method, dataset=dataset,
                         seed=seed, weights=weights, slice_rule=slice_rule, config=config,
                         train_on=train_on)
    return make


@pytest.fixture
def table_values():
    """alpha beats beta (the best other) with a tiny paired spread: starred on both metrics."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.8, size=12)
    return {
        "alpha": {"auroc": base + 0.05 + rng.normal(0, 0.005, 12),
                  "dice_max": base - 0.3 + rng.normal(0, 0.005, 12)},
        "beta": {"auroc": base, "dice_max": base - 0.35},
        "zscore": {"auroc": base - 0.2, "dice_max": base - 0.5},
    }
