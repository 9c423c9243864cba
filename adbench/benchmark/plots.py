"""Sweep plots (the paper's Fig. 3(b)): a metric against the swept value, with error bars.

For one method, test dataset and metric, a point is one value of the x key (the varied key
with the most distinct values; ties: the first in the grid file), one series per
combination of the other varied keys (e.g. ``l2=9`` and ``l2=0`` in the K2 sweep; keys tied to
x, such as K1 = 5 K2, are left out of the series' names). A point's
value is the mean over test volumes of the per-volume metric (first averaged over the seeds
of the cell, as the leaderboard aggregates seeds), its error bar the standard deviation over
volumes (ddof = 1, as ``summary.json``), and ``n`` the number of volumes with a finite value.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from adbench.io import atomic_write, safe_filename
from adbench.rundir import load_run

__all__ = ["sweep_points", "write_sweep_plots", "x_key"]

COLUMNS = ("method", "dataset", "metric", "x_key", "x", "series", "mean", "std", "n", "n_seeds")


def x_key(cells: list[dict]) -> str | None:
    """The varied key plotted on x: the one with the most distinct values."""
    keys: dict[str, set] = {}
    for c in cells:
        for k, v in c["varied"].items():
            keys.setdefault(k, set()).add(repr(v))
    if not keys:
        return None
    most = max(len(v) for v in keys.values())
    return next(k for k, v in keys.items() if len(v) == most and most > 1) if most > 1 else None


def sweep_points(cells: list[dict], metric: str) -> list[dict]:
    """Rows of :data:`COLUMNS` for done cells ``[{"method", "dataset", "seed", "varied": {k:
    v}, "run_dir"}]``; per (method, dataset), x = :func:`x_key` of that method's cells."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["method"], c["dataset"]), []).append(c)
    for (method, dataset), mine in groups.items():
        xk = x_key(mine)
        if xk is None:
            continue
        tied = _tied(mine, xk)
        points: dict[tuple, tuple] = {}
        for c in mine:
            others = tuple((k, v) for k, v in c["varied"].items() if k != xk and k not in tied)
            points.setdefault((repr(others), repr(c["varied"].get(xk))), (others, []))[1].append(c)
        for others, runs in points.values():
            per_subject: dict[str, list[float]] = {}
            for c in runs:   # the seeds of one cell
                for s, v in load_run(c["run_dir"]).values(metric).items():
                    per_subject.setdefault(s, []).append(v)
            vals = np.array([np.mean(v) for v in per_subject.values()], dtype=float)
            vals = vals[np.isfinite(vals)]
            out.append({"method": method, "dataset": dataset, "metric": metric, "x_key": xk,
                        "x": runs[0]["varied"].get(xk),
                        "series": ", ".join(f"{k}={v}" for k, v in others),
                        "mean": float(vals.mean()) if vals.size else math.nan,
                        "std": float(vals.std(ddof=1)) if vals.size > 1 else math.nan,
                        "n": int(vals.size), "n_seeds": len(runs)})
    return out


def _tied(cells: list[dict], xk: str) -> set[str]:
    """Keys that take one value per value of ``xk`` (e.g. K1 = 5 K2 in the K2 sweep): part
    of the x value, not separate series."""
    per: dict[str, dict[str, set]] = {}
    for c in cells:
        x = repr(c["varied"].get(xk))
        for k, v in c["varied"].items():
            per.setdefault(k, {}).setdefault(x, set()).add(repr(v))
    return {k for k, by_x in per.items() if k != xk and all(len(v) == 1 for v in by_x.values())
            and all(k in c["varied"] for c in cells)}


def write_sweep_plots(cells: list[dict], out_dir: Path, metrics: list[str]) -> list[Path]:
    """``sweep.csv`` (every point) and one PNG per (method, dataset, metric) into ``out_dir``;
    returns the files written (none when nothing in the grid is swept)."""
    rows = [r for m in metrics for r in sweep_points(cells, m)]
    if not rows:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    written = [out_dir / "sweep.csv"]
    atomic_write(written[0], buf.getvalue())
    for key in dict.fromkeys((r["method"], r["dataset"], r["metric"]) for r in rows):
        mine = [r for r in rows if (r["method"], r["dataset"], r["metric"]) == key]
        fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
        numeric = all(isinstance(r["x"], (int, float)) and not isinstance(r["x"], bool)
                      for r in mine)
        labels = list(dict.fromkeys(str(r["x"]) for r in mine))
        for series in dict.fromkeys(r["series"] for r in mine):
            pts = [r for r in mine if r["series"] == series]
            pts.sort(key=lambda r: r["x"] if numeric else labels.index(str(r["x"])))
            xs = [r["x"] if numeric else labels.index(str(r["x"])) for r in pts]
            ax.errorbar(xs, [100 * r["mean"] for r in pts], yerr=[100 * r["std"] for r in pts],
                        marker="o", capsize=3, label=series or None)
        if not numeric:
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(mine[0]["x_key"])
        ax.set_ylabel(f"{key[2]} (%)")
        ax.set_title(f"{key[0]} on {key[1]}")
        if any(r["series"] for r in mine):
            ax.legend(fontsize=8)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png")
        plt.close(fig)
        path = out_dir / safe_filename(f"{key[0]}-{key[1]}-{key[2]}.png")
        atomic_write(path, png.getvalue())
        written.append(path)
    return written
