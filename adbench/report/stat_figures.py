"""Leaderboard figures of statistics: the pairwise p-value heatmap and metric vs lesion size.

* :func:`pvalue_heatmap` — per metric, the (k, k) matrix of two-sided paired t-test p-values
  between the k rows of one dataset's column (:func:`adbench.evaluation.stats.pvalue_matrix`,
  uncorrected), coloured by log10 p, every cell annotated with its p;
* :func:`lesion_size_figure` — per metric, one point per test volume and method: x the
  volume's lesion volume in ml (the ``lesion_ml`` column of per_volume.csv, log scale), y its
  metric in percent. Runs without that column are left out; with none, no figure.

:func:`table_stat_figures` gives both for one (table, dataset) of a leaderboard.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from adbench.evaluation.stats import pvalue_matrix

__all__ = ["pvalue_heatmap", "lesion_size_figure", "table_stat_figures", "LESION_COLUMN"]

LESION_COLUMN = "lesion_ml"
_P_FLOOR = 1e-6   # colour scale: log10 p from -6 (and below) to 0


def _plt():
    from adbench.report.figures import _plt as plt
    return plt()


def pvalue_heatmap(matrices: Mapping[str, tuple[list[str], np.ndarray]], *, title: str = "",
                   labels: Mapping[str, str] | None = None):
    """matrices: metric → (row names, (k, k) p matrix). One square panel per metric, the
    colour log10 p on [-6, 0] (viridis: dark = small p), each cell's p written in it; the
    diagonal and untestable pairs are grey and empty."""
    plt = _plt()
    import matplotlib as mpl
    k = max((len(n) for n, _ in matrices.values()), default=1)
    side = 1.0 + 0.55 * k
    fig, axes = plt.subplots(1, max(1, len(matrices)), figsize=(side * len(matrices) + 2.0, side + 1.2),
                             squeeze=False, layout="constrained")
    cmap = mpl.colormaps["viridis"].with_extremes(bad="0.85")
    im = None
    for col, (ax, (metric, (names, mat))) in enumerate(zip(axes[0], matrices.items())):
        with np.errstate(divide="ignore"):
            logp = np.log10(np.clip(mat, _P_FLOOR, 1.0))
        im = ax.imshow(np.ma.masked_invalid(logp), cmap=cmap, vmin=math.log10(_P_FLOOR), vmax=0)
        for i in range(len(names)):
            for j in range(len(names)):
                p = mat[i, j]
                if math.isfinite(p):
                    ax.text(j, i, f"{p:.2g}" if p >= 1e-3 else f"{p:.0e}", ha="center",
                            va="center", fontsize=6.5,
                            color="white" if math.log10(max(p, _P_FLOOR)) < -3 else "black")
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names if col == 0 else [], fontsize=7)
        ax.set_title((labels or {}).get(metric, metric), fontsize=9)
    if im is not None:
        cb = fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
        cb.set_label("log10 p (paired t-test, two-sided, uncorrected)", fontsize=7)
        cb.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def lesion_size_figure(points: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
                       metrics: Sequence[str], *, title: str = "",
                       labels: Mapping[str, str] | None = None):
    """points: method → metric → (lesion ml per volume, the metric per volume as a fraction).

    One panel per metric; x log-scaled lesion volume (ml), y the metric in percent; one
    colour and marker per method, one point per volume with both values finite."""
    plt = _plt()
    import matplotlib as mpl
    import matplotlib.ticker
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.3 * len(metrics) + 1.5, 3.8),
                             squeeze=False)
    markers = "os^Dv<>pPX*h"
    for ax, m in zip(axes[0], metrics):
        for i, (meth, per) in enumerate(points.items()):
            x, y = (np.asarray(a, dtype=float) for a in per.get(m, ([], [])))
            ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
            ax.scatter(x[ok], 100 * y[ok], s=16, color=f"C{i % 10}", marker=markers[i % len(markers)],
                       alpha=0.8, linewidths=0, label=f"{meth} (n={int(ok.sum())})")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("lesion volume (ml, log scale)")
        ax.set_ylabel("per volume, %")
        ax.set_title((labels or {}).get(m, m), fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle((f"{title}\n" if title else "") + "one point per test volume", fontsize=9)
    fig.tight_layout()
    return fig


def _lesion_points(run, metrics) -> dict | None:
    if not any(LESION_COLUMN in row for row in run.per_volume):
        return None
    ml = [row.get(LESION_COLUMN, math.nan) for row in run.per_volume]
    ml = [float(v) if isinstance(v, (int, float)) else math.nan for v in ml]
    if not any(math.isfinite(v) for v in ml):
        return None
    return {m: (ml, [run.values(m)[row["subject"]] for row in run.per_volume]) for m in metrics}


def table_stat_figures(t, ti: int, ds: str, tag: str, to_png,
                       labels: Mapping[str, str]) -> list[tuple[str, str, bytes]]:
    """(file name, caption, PNG) of the p-value heatmap (two rows or more) and the
    lesion-size figure (when a run has ``lesion_ml``) of table ``t`` (number ``ti``) on
    dataset ``ds``; ``tag`` starts the file names."""
    runs = {row: t.runs[(row, ds)] for row in t.rows if (row, ds) in t.runs}
    out = []
    if len(runs) >= 2:
        mats = {m: pvalue_matrix({row: r.values(m) for row, r in runs.items()}) for m in t.metrics}
        out.append((f"{tag}_pvalues.png",
                    f"{t.title}: {ds}, pairwise paired t-test p-values (uncorrected; the "
                    "tables' p_Holm are corrected)",
                    to_png(pvalue_heatmap(mats, title=ds, labels=labels))))
    points = {row: p for row, r in runs.items() if (p := _lesion_points(r, t.metrics))}
    if points:
        out.append((f"{tag}_lesion_size.png",
                    f"{t.title}: {ds}, each metric against lesion volume (one point per volume)",
                    to_png(lesion_size_figure(points, t.metrics, title=ds, labels=labels))))
    return out
