"""Figures: per-run figures the runner writes, and ROC points checked against sklearn."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from adbench.report.figures import pick_slices, roc_points, write_run_figures


def test_roc_points_are_exact_roc_points():
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(3):
        y = rng.random(500) < 0.2
        s = np.round(rng.normal(size=500) + y, 1)  # ~60 distinct levels, heavy ties
        pairs.append((s, y))
    fpr, tpr = roc_points(pairs)
    s_all = np.concatenate([p[0] for p in pairs])
    y_all = np.concatenate([p[1] for p in pairs])
    sk_fpr, sk_tpr, _ = roc_curve(y_all, s_all, drop_intermediate=False)
    ours = {(round(a, 12), round(b, 12)) for a, b in zip(fpr, tpr)}
    theirs = {(round(a, 12), round(b, 12)) for a, b in zip(sk_fpr, sk_tpr)}
    assert ours <= theirs  # every plotted point is an exact ROC point ...
    assert len(ours) > 0.9 * len(theirs)  # ... and almost all of them are plotted
    assert np.max(np.diff(fpr)) <= np.max(np.diff(sk_fpr)) + 0.01  # no visible gap added
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_write_run_figures(tmp_path):
    rng = np.random.default_rng(1)
    vols = []
    for i in range(3):
        brain = np.zeros((24, 20, 6), bool)
        brain[2:22, 2:18, :5] = True
        lesion = np.zeros_like(brain)
        if i != 1:  # a volume without lesion must not break the figures
            lesion[8:12, 6:10, 1 + i:4] = True
        vols.append({"subject": f"s{i}", "image": rng.random(brain.shape), "brain": brain,
                     "lesion": lesion, "map": rng.random(brain.shape) + lesion})
    assert pick_slices(vols) == [(0, 1), (2, 3)]
    paths = write_run_figures(tmp_path, vols)
    assert [p.name for p in paths] == ["overlay.png", "roc.png"]
    import matplotlib.image as mpimg
    for p in paths:
        assert p.parent == tmp_path / "figures"
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.std() > 0.01
    assert write_run_figures(tmp_path / "none", vols[1:2]) == []  # no lesion: nothing to draw

    # a reconstruction method's volumes carry their reconstruction: one more (grey) row
    for v in vols:
        v["reconstruction"] = v["image"] * 0.9
    (overlay, _) = write_run_figures(tmp_path / "recon", vols)
    h3, h4 = (mpimg.imread(p).shape[0] for p in (paths[0], overlay))
    assert h4 / h3 == pytest.approx(4 / 3, rel=0.08)
