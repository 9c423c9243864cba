"""Figures: what the runner writes, their panel layout, and the numbers they print.

Every number a figure shows is checked against the metric code and against scikit-learn: the
⌈Dice⌉ threshold of the binarised row, the pooled AUROC and AUPRC of the legends, and the
area of the curve actually drawn.
"""
from __future__ import annotations

import re

import matplotlib
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from adbench.evaluation.metrics import auprc, auroc
from adbench.evaluation.volume import evaluate_volume, region_mask
from adbench.report.figures import (RUN_FIGURES, boxplot_figure, comparison_figure, pick_slices,
                                    roc_pr_figure, run_figures, volume_threshold, write_run_figures)

matplotlib.use("Agg")
import matplotlib.pyplot as plt


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def make_volumes(n=3, *, reconstruction=False, seed=1):
    """Synthetic (24, 20, 6) volumes; volume 1 has no lesion (it must not break the figures)."""
    rng = np.random.default_rng(seed)
    vols = []
    for i in range(n):
        brain = np.zeros((24, 20, 6), bool)
        brain[2:22, 2:18, :5] = True
        lesion = np.zeros_like(brain)
        if i != 1:
            lesion[8:12, 6:10, 1 + i:4] = True
        v = {"subject": f"s{i}", "image": rng.random(brain.shape), "brain": brain,
             "lesion": lesion, "map": np.round(rng.normal(size=brain.shape) + 1.5 * lesion, 1)}
        if reconstruction:
            v["reconstruction"] = v["image"] * 0.9
        vols.append(v)
    return vols


def region_pairs(vols, rule="lesion"):
    pairs = []
    for v in vols:
        r, _ = region_mask(v["lesion"], v["brain"], slice_rule=rule)
        pairs.append((v["map"][r], v["lesion"][r]))
    return pairs


def legend_numbers(ax) -> list[tuple[float, float | None]]:
    """(curve area, per-volume mean or None) of each legend entry with a curve, in %."""
    out = []
    for t in ax.get_legend().get_texts():
        m = re.match(r".*: ([\d.]+)(?:  \(per-volume mean ([\d.]+)\))?$", t.get_text())
        if m:
            out.append((float(m[1]), float(m[2]) if m[2] else None))
    return out


def test_write_run_figures_names_and_images(tmp_path):
    vols = make_volumes()
    assert pick_slices(vols) == [(0, 1), (2, 3)]
    paths = write_run_figures(tmp_path, vols)
    assert [p.name for p in paths] == list(RUN_FIGURES) == ["overlay.png", "roc_pr.png"]
    import matplotlib.image as mpimg
    for p in paths:
        assert p.parent == tmp_path / "figures"
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.std() > 0.01
    roc_pr = mpimg.imread(paths[1])
    assert roc_pr.shape[1] > 1.6 * roc_pr.shape[0]  # two square panels side by side
    assert write_run_figures(tmp_path / "none", vols[1:2]) == []  # no lesion: nothing to draw


@pytest.mark.parametrize("recon", [False, True])
def test_overlay_layout(recon):
    """Rows: image, ground truth, [reconstruction], map (+ colorbar), map ≥ ⌈Dice⌉ thr."""
    vols = make_volumes(reconstruction=recon)
    fig = run_figures(vols, scale="A_per")["overlay.png"]
    rows, cols = (5 if recon else 4), 2
    assert len(fig.axes) == rows * cols + 1  # one colorbar, for the one map row
    grid = np.array(fig.axes[:rows * cols]).reshape(rows, cols)
    labels = [ax.get_ylabel() for ax in grid[:, 0]]
    assert labels[:2] == ["image", "ground truth"] and ("reconstruction" in labels) == recon
    assert labels[-2].startswith("anomaly map") and "≥ t" in labels[-1]
    for ax in grid[-2:].ravel():  # the ground truth outlined on every map row
        assert ax.collections, "no ground-truth contour"
    cbar = fig.axes[-1]
    lo, hi = np.percentile(np.concatenate([vols[i]["map"][:, :, z][vols[i]["brain"][:, :, z]]
                                           for i, z in pick_slices(vols)]), [1, 99.5])
    assert cbar.get_ylabel().startswith("A_per, 1st–99.5th")
    assert f"[{lo:.3g}, {hi:.3g}]" in cbar.get_ylabel()
    assert cbar.get_ylim() == pytest.approx((lo, hi))


def test_binarised_row_uses_the_metric_threshold():
    vols = make_volumes()
    fig = run_figures(vols)["overlay.png"]
    grid = np.array(fig.axes[:8]).reshape(4, 2)
    for ax, (i, z) in zip(grid[-1], pick_slices(vols)):
        v = vols[i]
        dice, t, region = volume_threshold(v)
        row = evaluate_volume(v["map"], v["lesion"], v["brain"])
        assert dice == row["dice_max"]  # the threshold the ⌈Dice⌉ of per_volume.csv reaches
        pred = (v["map"] >= t) & region
        les = v["lesion"].astype(bool)
        assert 2 * (pred & les).sum() / (pred.sum() + les[region].sum()) == pytest.approx(dice)
        drawn = ~np.ma.getmaskarray(ax.images[-1].get_array())
        np.testing.assert_array_equal(drawn, pred[:, :, z])
        assert f"t = {t:.3g}" in ax.get_title() and f"{100 * dice:.1f}%" in ax.get_title()


def test_legend_gives_the_area_of_the_drawn_curves():
    """The bug: a pooled curve labelled with the per-volume mean (32.2 beside an area of 0.45)."""
    vols = make_volumes(4, seed=3)
    for i, v in enumerate(vols):  # each volume on its own offset: pooling ranks across volumes
        v["map"] = v["map"] + 1.0 * i
    pairs = region_pairs(vols)
    s = np.concatenate([p[0] for p in pairs])
    y = np.concatenate([p[1] for p in pairs])
    fig = run_figures(vols)["roc_pr.png"]
    ax_roc, ax_pr = fig.axes
    pooled_roc, pooled_ap = roc_auc_score(y, s), average_precision_score(y, s)
    mean_roc = np.nanmean([auroc(a, b) for a, b in pairs])
    mean_ap = np.nanmean([auprc(a, b) for a, b in pairs])
    assert abs(pooled_roc - mean_roc) > 0.005  # the data tell the two numbers apart
    ((a_roc, m_roc),) = legend_numbers(ax_roc)
    ((a_pr, m_pr),) = legend_numbers(ax_pr)
    assert (a_roc, m_roc) == (round(100 * pooled_roc, 2), round(100 * mean_roc, 2))
    assert (a_pr, m_pr) == (round(100 * pooled_ap, 2), round(100 * mean_ap, 2))
    # ... and the number is the area of the line drawn (thinned for drawing: within 0.2%)
    fpr, tpr = ax_roc.lines[0].get_xydata().T
    assert np.trapezoid(tpr, fpr) == pytest.approx(pooled_roc, abs=2e-3)
    recall, precision = ax_pr.lines[0].get_xydata().T
    assert ax_pr.lines[0].get_drawstyle() == "steps-pre"
    assert np.sum(np.diff(recall) * precision[1:]) == pytest.approx(pooled_ap, abs=2e-3)
    assert ax_pr.lines[1].get_ydata()[0] == pytest.approx(y.mean())  # chance: the prevalence


def test_run_curves_pool_every_volume_given():
    """The runner passes every test volume's region (not just those shown) and the means."""
    vols = make_volumes(2)
    more = region_pairs(make_volumes(5, seed=9))
    fig = run_figures(vols, pairs=more, means={"auroc": 0.5, "auprc": 0.25})["roc_pr.png"]
    s = np.concatenate([p[0] for p in more])
    y = np.concatenate([p[1] for p in more])
    assert legend_numbers(fig.axes[0]) == [(round(100 * roc_auc_score(y, s), 2), 50.0)]
    assert legend_numbers(fig.axes[1]) == [(round(100 * average_precision_score(y, s), 2), 25.0)]
    assert "5 test volume(s)" in fig.texts[0].get_text()


def test_roc_pr_figure_many_methods_and_nan_means():
    vols = make_volumes()
    from adbench.report.curves import pooled_curve
    c = pooled_curve(region_pairs(vols))
    fig = roc_pr_figure({"a": c, "b": c}, means={"a": {"auroc": float("nan")}})
    assert [n for n, _ in legend_numbers(fig.axes[0])] == [round(100 * c.auroc, 2)] * 2
    assert [m for _, m in legend_numbers(fig.axes[0])] == [None, None]  # NaN mean: not shown


def test_boxplot_draws_every_volume():
    vals = {"a": {"auroc": [0.5, 0.6, float("nan"), 0.7]}, "b": {"auroc": [0.8, 0.9]}}
    fig = boxplot_figure(vals, ["auroc"])
    (ax,) = fig.axes
    dots = [c.get_offsets() for c in ax.collections]
    assert [len(d) for d in dots] == [3, 2]
    np.testing.assert_allclose(dots[0][:, 1], [50, 60, 70])
    assert np.all(np.abs(dots[1][:, 0] - 2) <= 0.12)  # jittered around its box only
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["a\nn=3, 1 NaN", "b\nn=2"]


def test_comparison_figure_one_colorbar_per_method():
    im = [np.random.default_rng(0).random((10, 10)) for _ in range(3)]
    les = [np.pad(np.ones((2, 2), bool), 4) for _ in range(3)]
    br = [np.ones((10, 10), bool)] * 3
    fig = comparison_figure(im, les, br, {"m1": im, "m2": [2 * x for x in im]},
                            scales={"m1": "A_per", "m2": "z-score"})
    assert len(fig.axes) == 4 * 3 + 2
    assert [ax.get_ylabel().split(",")[0] for ax in fig.axes[-2:]] == ["A_per", "z-score"]
