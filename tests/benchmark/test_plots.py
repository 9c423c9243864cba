"""Sweep plot points: x = the most varied key, tied keys folded into x, one series per
value of the other keys; mean over volumes of the seed-averaged per-volume metric."""
from __future__ import annotations

import numpy as np
import pytest

from adbench.benchmark.plots import sweep_points, write_sweep_plots
from adbench.rundir import write_run


def _run(path, aurocs):
    rows = [{"subject": f"s{i}", "auroc": a, "dice_max": a / 2, "auprc": a / 3, "n_voxels": 10,
             "n_lesion_voxels": 2, "n_slices": 1} for i, a in enumerate(aurocs)]
    return write_run(path, rows, method="scrps", dataset="brats")


def test_k2_sweep_points(tmp_path):
    rng = np.random.default_rng(0)
    cells, truth = [], {}
    for k2 in (5, 10, 20):
        for l2 in (9, 0):
            per_seed = rng.uniform(0.4, 0.9, size=(2, 4))   # 2 seeds x 4 volumes
            for seed in (0, 1):
                d = _run(tmp_path / f"k{k2}-l{l2}-s{seed}", per_seed[seed].tolist())
                cells.append({"method": "scrps", "dataset": "brats", "seed": seed,
                              "varied": {"k2": k2, "k1": 5 * k2, "l2": l2}, "run_dir": d})
            v = per_seed.mean(axis=0)
            truth[(k2, f"l2={l2}")] = (v.mean(), v.std(ddof=1))
    pts = sweep_points(cells, "auroc")
    assert {p["x_key"] for p in pts} == {"k2"} and len(pts) == 6
    assert {p["series"] for p in pts} == {"l2=9", "l2=0"}   # k1 = 5 k2 is part of x
    for p in pts:
        mean, std = truth[(p["x"], p["series"])]
        assert p["mean"] == pytest.approx(mean, abs=1e-12)
        assert p["std"] == pytest.approx(std, abs=1e-12)
        assert p["n"] == 4 and p["n_seeds"] == 2
    files = write_sweep_plots(cells, tmp_path / "plots", ["auroc"])
    assert [f.name for f in files] == ["sweep.csv", "scrps-brats-auroc.png"]


def test_no_sweep_no_plot(tmp_path):
    d = _run(tmp_path / "one", [0.5, 0.6])
    cells = [{"method": "scrps", "dataset": "brats", "seed": 0, "varied": {}, "run_dir": d}]
    assert sweep_points(cells, "auroc") == [] and write_sweep_plots(cells, tmp_path, ["auroc"]) == []
