"""The p-value heatmap, the metric-vs-lesion-size figure, and the leaderboard files beside --out."""
from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest
from scipy.stats import ttest_rel

from adbench.report import build_leaderboard, collect
from adbench.report.stat_figures import lesion_size_figure, pvalue_heatmap, table_stat_figures
from adbench.rundir import write_run

from .conftest import rows_from


def test_heatmap_cells_and_lesion_points_are_what_was_given():
    mat = np.array([[np.nan, 0.02], [0.02, np.nan]])
    fig = pvalue_heatmap({"auroc": (["a", "b"], mat)})
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0.02", "0.02"]   # diagonal empty
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    x, y = [1.5, 12.0, np.nan, 40.0], [0.2, 0.5, 0.9, np.nan]
    fig = lesion_size_figure({"m1": {"dice_max": (x, y)}}, ["dice_max"])
    ax = fig.axes[0]
    pts = ax.collections[0].get_offsets()
    np.testing.assert_allclose(np.asarray(pts), [[1.5, 20.0], [12.0, 50.0]])  # NaNs left out
    assert ax.get_xscale() == "log" and "n=2" in ax.get_legend().get_texts()[0].get_text()


def _runs(root, with_lesion: bool):
    rng = np.random.default_rng(0)
    for meth, shift in (("alpha", 0.1), ("beta", 0.0)):
        rows = rows_from({"auroc": rng.uniform(0.5, 0.9, 6) + shift,
                          "dice_max": rng.uniform(0.1, 0.5, 6)})
        if with_lesion:
            for i, r in enumerate(rows):
                r["lesion_ml"] = 0.5 * (i + 1)
        write_run(root / "synth" / meth / "r0", rows, method=meth, dataset="synth", seed=0)


@pytest.mark.parametrize("with_lesion", [True, False])
def test_leaderboard_figures_and_pvalue_files(tmp_path, with_lesion):
    from adbench.commands.leaderboard import main
    root = tmp_path / "runs"
    _runs(root, with_lesion)
    lb = build_leaderboard(collect(root))

    def to_png(fig):   # figures are made but not rasterised (fast); what each holds is checked above
        import matplotlib.pyplot as plt
        n = len(fig.axes)
        plt.close(fig)
        return f"{n} axes".encode()

    figs = table_stat_figures(lb.tables[0], 1, "synth", "t1_synth", to_png, {})
    names = [n for n, _, _ in figs]
    assert "t1_synth_pvalues.png" in names
    assert ("t1_synth_lesion_size.png" in names) == with_lesion   # skipped cleanly without
    assert figs[0][2] == b"3 axes"    # one panel per metric and the colorbar
    out = tmp_path / "out" / "lb.md"
    args = argparse.Namespace(run_dirs=[str(root)], format="md", out=str(out), figures=None,
                              metrics="auroc,dice_max", no_maps=True)
    assert main(args) == 0
    with open(out.parent / "lb_pvalues_t1_synth_auroc.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["method", "alpha", "beta"] and rows[1][1] == "nan"
    t = lb.tables[0]
    a = [t.runs[("alpha", "synth")].values("auroc")[s] for s in sorted(t.runs[("alpha", "synth")].values("auroc"))]
    b = [t.runs[("beta", "synth")].values("auroc")[s] for s in sorted(t.runs[("beta", "synth")].values("auroc"))]
    assert float(rows[1][2]) == pytest.approx(ttest_rel(a, b).pvalue)
    assert "↳ Δ to best" in out.read_text()
