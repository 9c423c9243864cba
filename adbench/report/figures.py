"""Figures (matplotlib, Agg backend, PNG): the paper's Fig. 2, ROC and PR curves, box plots.

A run writes (:data:`RUN_FIGURES`, in ``<run>/figures/``):

* ``overlay.png`` — the paper's Fig. 2 for a few test volumes (:func:`comparison_figure`):
  columns = the largest lesion slice of up to four volumes; rows = image, ground truth, the
  reconstruction (reconstruction methods), the anomaly map with its colorbar, and the map
  binarised at that volume's ⌈Dice⌉ threshold. The ground truth is outlined in red on every
  map row.
* ``roc_pr.png`` — the ROC and precision-recall curves side by side, pooled over the
  evaluation-region voxels of every test volume (:func:`roc_pr_figure`).

Arrays are (H, W, Z) volumes on the preprocessed grid (axial axis last); a slice ``[:, :, z]``
is shown as stored (rows anterior → posterior, columns left → right). Anomaly maps are shown
inside the brain only, each method scaled to its own [1st, 99.5th] percentile over the brain
voxels of the slices shown (the colorbar states the unit and that range), so methods with
different score units stay readable side by side.

Curves are exact (:mod:`adbench.report.curves`). A legend's number is the area of the curve
it labels — pooled AUROC, or pooled AUPRC (average precision) — and the per-volume mean the
tables report is shown beside it, labelled as such: they are different numbers.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from adbench.data.selection import MIN_BRAIN_FRACTION
from adbench.evaluation.metrics import auprc, auroc, dice_max_threshold
from adbench.evaluation.volume import region_mask
from adbench.io import atomic_write
from adbench.report.curves import PooledCurve, pooled_curve, thin

__all__ = ["to_png", "roc_pr_figure", "boxplot_figure", "comparison_figure", "pick_slices",
           "volume_threshold", "map_scale_name", "run_figures", "write_run_figures",
           "leaderboard_figures", "RUN_FIGURES"]

RUN_FIGURES = ("overlay.png", "roc_pr.png")
_DICE = r"$\lceil$Dice$\rceil$"  # mathtext: fonts may lack ⌈ ⌉
_MPL_LABELS = {"dice_max": _DICE}
_LOW, _HIGH = 1, 99.5  # percentiles of the map inside the brain that span its colour scale


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def to_png(fig, *, dpi: int = 110) -> bytes:
    """PNG bytes of ``fig``; the figure is closed."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def roc_pr_figure(curves: Mapping[str, PooledCurve], *,
                  means: Mapping[str, Mapping[str, float]] | None = None, title: str = ""):
    """ROC (left) and precision-recall (right) axes of pooled curves.

    curves: label → :class:`~adbench.report.curves.PooledCurve`. means: label →
    {"auroc", "auprc"} per-volume means (the tables' numbers), shown in the legend after the
    curve's own area and labelled "per-volume mean"; omitted when absent or NaN.
    """
    plt = _plt()
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(9.4, 4.6), layout="constrained")
    means = means or {}
    for i, (label, c) in enumerate(curves.items()):
        color = f"C{i % 10}"
        mean = means.get(label, {})
        ax_roc.plot(*thin(*c.roc()), lw=1.5, color=color,
                    label=_legend(label, c.auroc, mean.get("auroc")))
        ax_pr.plot(*thin(*c.pr()), lw=1.5, color=color, drawstyle="steps-pre",
                   label=_legend(label, c.auprc, mean.get("auprc")))
    ax_roc.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    first = next(iter(curves.values()), None)
    if first is not None and math.isfinite(first.prevalence):
        ax_pr.axhline(first.prevalence, color="0.7", lw=0.8, ls="--",
                      label=f"random ranking (prevalence {100 * first.prevalence:.2f}%)")
    ax_roc.set(xlabel="false positive rate (voxels)", ylabel="true positive rate (voxels)",
               xlim=(0, 1), ylim=(0, 1.01), title="ROC")
    ax_pr.set(xlabel="recall (voxels)", ylabel="precision (voxels)", xlim=(0, 1), ylim=(0, 1.01),
              title="precision-recall")
    for ax, what in ((ax_roc, "AUROC"), (ax_pr, "AUPRC (average precision)")):
        ax.set_aspect("equal")
        ax.legend(fontsize=7, title=f"pooled {what} of the curve, %", title_fontsize=7,
                  loc="upper center", bbox_to_anchor=(0.5, -0.17), frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig   # constrained layout keeps the legends below the axes clear of the labels


def _legend(label: str, area: float, mean: float | None) -> str:
    s = f"{label}: {100 * area:.2f}" if math.isfinite(area) else f"{label}: n/a"
    if mean is not None and math.isfinite(mean):
        s += f"  (per-volume mean {100 * mean:.2f})"
    return s


def boxplot_figure(values: Mapping[str, Mapping[str, Sequence[float]]], metrics: Sequence[str], *,
                   title: str = "", labels: Mapping[str, str] | None = None):
    """values: method → metric → per-volume values, drawn as a box with every volume a dot.

    NaN values are dropped from the box and counted in the method's tick label, beside n.
    The dots are jittered horizontally (seeded), never vertically.
    """
    plt = _plt()
    methods = list(values)
    width = 1.2 + 1.1 * len(methods) * len(metrics)
    fig, axes = plt.subplots(1, len(metrics), figsize=(width, 3.9), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, m in zip(axes[0], metrics):
        data, names = [], []
        for meth in methods:
            v = np.asarray(values[meth].get(m, []), dtype=float)
            f = v[np.isfinite(v)]
            data.append(100 * f)
            nan = f", {v.size - f.size} NaN" if v.size > f.size else ""
            names.append(f"{meth}\nn={f.size}{nan}")
        ax.boxplot(data, widths=0.5, showmeans=True, showfliers=False,
                   meanprops={"marker": "^", "markerfacecolor": "C2", "markeredgecolor": "C2"})
        for i, d in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, d.size), d, s=14, color="k", alpha=0.6,
                       zorder=3, linewidths=0)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=7)
        ax.set_title((labels or {}).get(m, m))
        ax.set_ylabel("per volume, %")
    key = "dots: volumes, ▲: mean, line: median"
    fig.suptitle(f"{title}\n{key}" if title else key, fontsize=9)
    fig.tight_layout()
    return fig


def pick_slices(volumes: Sequence[Mapping], n: int = 4) -> list[tuple[int, int]]:
    """(volume index, z) of the largest lesion cross-section, for up to n volumes with lesion."""
    out = []
    for i, v in enumerate(volumes):
        area = np.asarray(v["lesion"]).astype(bool).sum(axis=(0, 1))
        if area.max() > 0:
            out.append((i, int(np.argmax(area))))
        if len(out) == n:
            break
    return out


def volume_threshold(volume: Mapping, *, slice_rule: str = "lesion",
                     min_brain_fraction: float = MIN_BRAIN_FRACTION,
                     ) -> tuple[float, float, np.ndarray]:
    """(⌈Dice⌉, its threshold t, region R) of one volume, as the evaluation computes them.

    :func:`adbench.evaluation.metrics.dice_max_threshold` on the region scores of
    :func:`adbench.evaluation.volume.region_mask`: the ⌈Dice⌉ equals per_volume.csv's
    dice_max, and ``(map >= t) & R`` is the prediction that reaches it.
    """
    lesion = np.asarray(volume["lesion"]).astype(bool)
    region, _ = region_mask(lesion, volume["brain"], slice_rule=slice_rule,
                            min_brain_fraction=min_brain_fraction)
    dice, t = dice_max_threshold(np.asarray(volume["map"])[region], lesion[region])
    return dice, t, region


def map_scale_name(localisation: str | None, method: str) -> str:
    """What a run's map values are, for its colorbar: A_per, or the method's own score."""
    return "A_per" if str(localisation or "").startswith("perceptual") else f"{method} map"


def _scaled(maps: list[np.ndarray], brains: list[np.ndarray],
            ) -> tuple[list[np.ndarray], float, float]:
    inside = np.concatenate([m[b] for m, b in zip(maps, brains)]) if maps else np.zeros(1)
    lo, hi = (np.percentile(inside, [_LOW, _HIGH]) if inside.size else (0.0, 1.0))
    if not hi > lo:
        hi = lo + 1.0
    return [np.where(b, m, np.nan) for m, b in zip(maps, brains)], float(lo), float(hi)


def _outline(ax, lesion: np.ndarray) -> None:
    """The ground truth as a red line (over a white one, visible on jet's reds)."""
    if lesion.any():
        ax.contour(lesion.astype(np.float32), levels=[0.5], colors="white", linewidths=1.6)
        ax.contour(lesion.astype(np.float32), levels=[0.5], colors="red", linewidths=0.8)


def comparison_figure(images: list[np.ndarray], lesions: list[np.ndarray], brains: list[np.ndarray],
                      maps: Mapping[str, list[np.ndarray]], *, titles: Sequence[str] = (),
                      greys: Mapping[str, list[np.ndarray]] | None = None,
                      scales: Mapping[str, str] | None = None,
                      binarised: Mapping[str, Sequence[tuple[np.ndarray, str]]] | None = None):
    """The paper's Fig. 2: columns = slices; rows = image, ground truth, greys, each method's map.

    images, lesions, brains: per shown slice (H, W); maps: method → per shown slice (H, W),
    each row in jet over its own [1st, 99.5th] percentile inside the brain, with a colorbar
    naming ``scales[method]`` (default "score") and that range; the ground truth is outlined
    in red on it. greys: more rows drawn like the image (e.g. "reconstruction" → per slice),
    on the image's grey scale, between the ground truth and the maps. binarised: method → per
    shown slice (prediction (H, W) bool, panel title), a row after that method's map: the
    prediction in cyan over the image, with the ground truth outlined.

    Axes: rows × columns image axes, then one colorbar axis per map row.
    """
    plt = _plt()
    import matplotlib as mpl
    greys, scales, binarised = dict(greys or {}), dict(scales or {}), dict(binarised or {})
    n = len(images)
    kinds = ([("image", None), ("ground truth", None)] + [(g, "grey") for g in greys]
             + [r for m in maps for r in ([(m, "map")] + ([(m, "bin")] if m in binarised else []))])
    rows = len(kinds)
    fig = plt.figure(figsize=(1.6 * n + 2.0, 1.9 * rows))
    gs = fig.add_gridspec(rows, n + 1, width_ratios=[1.0] * n + [0.07])
    axes = np.array([[fig.add_subplot(gs[r, j]) for j in range(n)] for r in range(rows)])
    cmap = mpl.colormaps["jet"].with_extremes(bad="black")
    cyan = mpl.colors.ListedColormap(["#00e5ff"])
    ranges = [(float(np.min(im)), float(np.max(im))) for im in images]
    for r, (name, kind) in enumerate(kinds):
        if kind == "map":
            shown, lo, hi = _scaled(maps[name], brains)
        for j in range(n):
            ax, (ilo, ihi) = axes[r, j], ranges[j]
            if kind == "map":
                im = ax.imshow(shown[j], cmap=cmap, vmin=lo, vmax=hi)
                _outline(ax, lesions[j])
                continue
            grey = greys[name][j] if kind == "grey" else images[j]
            ax.imshow(grey, cmap="gray", vmin=ilo, vmax=ihi)
            if r == 1:
                ax.imshow(np.ma.masked_where(~lesions[j], lesions[j]), cmap="autumn", alpha=0.6)
            elif kind == "bin":
                pred, panel = binarised[name][j]
                ax.imshow(np.ma.masked_where(~pred, np.ones(pred.shape)), cmap=cyan, alpha=0.75)
                _outline(ax, lesions[j])
                ax.set_title(panel, fontsize=6)
        if kind == "map":
            cb = fig.colorbar(im, cax=fig.add_subplot(gs[r, n]))
            cb.ax.tick_params(labelsize=6)
            cb.set_label(f"{scales.get(name, 'score')}, {_LOW}st–{_HIGH}th\npercentile in brain: "
                         f"[{lo:.3g}, {hi:.3g}]", fontsize=6)
    for j, t in enumerate(titles[:n]):
        axes[0, j].set_title(t, fontsize=7)
    for r, (name, kind) in enumerate(kinds):
        label = {"map": f"{name}\n(red: ground truth)",
                 "bin": f"{name} ≥ t\n(t: {_DICE} threshold)"}.get(kind, name)
        axes[r, 0].set_ylabel(label, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def run_figures(volumes: list[dict], *,
                pairs: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                means: Mapping[str, float] | None = None, scale: str = "score",
                slice_rule: str = "lesion", min_brain_fraction: float = MIN_BRAIN_FRACTION) -> dict:
    """{file name: figure} of one run, those of :data:`RUN_FIGURES` there is data for.

    volumes: dicts with "subject" and (H, W, Z) arrays "image", "map", "lesion", "brain", and
    "reconstruction" for a reconstruction method (a grey row of its own): a few test volumes,
    shown in overlay.png at their largest lesion slice. pairs: (scores, labels) of every test
    volume's evaluation region, for roc_pr.png (default: the regions of ``volumes``). means:
    {"auroc", "auprc"} per-volume means for the legend (default: computed from ``pairs``).
    scale: what the map values are (see :func:`map_scale_name`), for the colorbar.
    """
    out = {}
    chosen = pick_slices(volumes)
    if chosen:
        bins = []
        for i, z in chosen:
            dice, t, region = volume_threshold(volumes[i], slice_rule=slice_rule,
                                               min_brain_fraction=min_brain_fraction)
            pred = ((np.asarray(volumes[i]["map"])[:, :, z] >= t) & region[:, :, z]
                    if math.isfinite(t) else np.zeros(region.shape[:2], bool))
            bins.append((pred, f"t = {t:.3g}, {_DICE} = {100 * dice:.1f}%"))
        recon = all("reconstruction" in volumes[i] for i, _ in chosen)
        out["overlay.png"] = comparison_figure(
            [np.asarray(volumes[i]["image"])[:, :, z] for i, z in chosen],
            [np.asarray(volumes[i]["lesion"]).astype(bool)[:, :, z] for i, z in chosen],
            [np.asarray(volumes[i]["brain"]).astype(bool)[:, :, z] for i, z in chosen],
            {"anomaly map": [np.asarray(volumes[i]["map"])[:, :, z] for i, z in chosen]},
            titles=[f"{volumes[i]['subject']} z={z}" for i, z in chosen],
            greys=({"reconstruction": [np.asarray(volumes[i]["reconstruction"])[:, :, z]
                                       for i, z in chosen]} if recon else None),
            scales={"anomaly map": scale}, binarised={"anomaly map": bins})
    if pairs is None:
        pairs = []
        for v in volumes:
            _, _, region = volume_threshold(v, slice_rule=slice_rule,
                                            min_brain_fraction=min_brain_fraction)
            lesion = np.asarray(v["lesion"]).astype(bool)
            pairs.append((np.asarray(v["map"])[region], lesion[region]))
    curve = pooled_curve(list(pairs))
    if curve.defined:
        if means is None:
            means = {m: _nanmean([f(s, y) for s, y in pairs])
                     for m, f in (("auroc", auroc), ("auprc", auprc))}
        out["roc_pr.png"] = roc_pr_figure(
            {"this run": curve}, means={"this run": means},
            title=f"{curve.n_volumes} test volume(s), region voxels pooled (slices: {slice_rule})")
    return out


def write_run_figures(run_dir: str | Path, volumes: list[dict], **kw) -> list[Path]:
    """Write :func:`run_figures` to ``run_dir/figures/``; returns the paths written."""
    written = []
    for name, fig in run_figures(volumes, **kw).items():
        path = Path(run_dir) / "figures" / name
        atomic_write(path, to_png(fig))
        written.append(path)
    return written


def _nanmean(values) -> float:
    f = [v for v in values if math.isfinite(v)]
    return float(np.mean(f)) if f else math.nan


def leaderboard_figures(lb, *, n_slices: int = 4, max_roc_volumes: int | None = None,
                        with_maps: bool = True) -> list[tuple[str, str, bytes]]:
    """(file name, caption, PNG) for each table and dataset of a leaderboard.

    ``t<i>_<dataset>_boxplot.png``, ``..._pvalues.png`` (pairwise p-value heatmap) and
    ``..._lesion_size.png`` (when per_volume.csv has ``lesion_ml``) come from per_volume.csv
    (:mod:`adbench.report.stat_figures`); ``..._roc_pr.png`` (pooled ROC
    and PR curves) and ``..._comparison.png`` (Fig. 2) need every run's maps/ folder and are
    left out (with no error) for datasets where a run has none. ``max_roc_volumes`` caps the
    volumes read per run for the curves (None = all).
    """
    from adbench.report.stat_figures import table_stat_figures
    from adbench.report.tables import METRIC_LABELS
    from adbench.rundir import RunDirError, load_map_volume, map_subjects

    out = []
    for ti, t in enumerate(lb.tables, start=1):
        for ds in t.datasets:
            runs = {row: t.runs[(row, ds)] for row in t.rows if (row, ds) in t.runs}
            tag = f"t{ti}_{_slug(ds)}"
            vals = {row: {m: list(r.values(m).values()) for m in t.metrics}
                    for row, r in runs.items()}
            out.append((f"{tag}_boxplot.png",
                        f"{t.title}: {ds}, per-volume metrics (dots: volumes)",
                        to_png(boxplot_figure(vals, t.metrics, title=ds,
                                              labels={**METRIC_LABELS, **_MPL_LABELS}))))
            out += table_stat_figures(t, ti, ds, tag, to_png, {**METRIC_LABELS, **_MPL_LABELS})
            if not with_maps:
                continue
            subjects = {row: map_subjects(r) for row, r in runs.items()}
            if not all(subjects.values()):
                continue
            rule = (t.definitions or {}).get("slice_rule", "lesion")
            fraction = (t.definitions or {}).get("min_brain_fraction") or MIN_BRAIN_FRACTION
            try:
                curves, means = {}, {}
                for row, r in runs.items():
                    pairs = []
                    for s in subjects[row][:max_roc_volumes]:
                        v = load_map_volume(r, s, with_image=False)
                        _, _, region = volume_threshold(v, slice_rule=rule,
                                                        min_brain_fraction=fraction)
                        pairs.append((v["map"][region], v["lesion"][region]))
                    curves[row] = pooled_curve(pairs)
                    means[row] = {m: _nanmean(r.values(m).values()) for m in ("auroc", "auprc")}
                n_vol = sorted({c.n_volumes for c in curves.values()})
                out.append((f"{tag}_roc_pr.png",
                            f"{t.title}: {ds}, ROC and precision-recall pooled over region voxels "
                            f"({'/'.join(map(str, n_vol))} volumes per run)",
                            to_png(roc_pr_figure(curves, means=means, title=ds))))
                common = sorted(set.intersection(*(set(s) for s in subjects.values())))
                first = next(iter(runs.values()))
                vols = [load_map_volume(first, s) for s in common[:4 * n_slices]]
                chosen = pick_slices(vols, n_slices)
                if chosen:
                    maps = {row: [load_map_volume(r, vols[i]["subject"],
                                                  with_image=False)["map"][:, :, z]
                                  for i, z in chosen] for row, r in runs.items()}
                    scales = {row: map_scale_name(r.summary.get("localisation"), r.method)
                              for row, r in runs.items()}
                    fig = comparison_figure([vols[i]["image"][:, :, z] for i, z in chosen],
                                            [vols[i]["lesion"][:, :, z] for i, z in chosen],
                                            [vols[i]["brain"][:, :, z] for i, z in chosen], maps,
                                            titles=[f"{vols[i]['subject']} z={z}"
                                                    for i, z in chosen],
                                            scales=scales)
                    out.append((f"{tag}_comparison.png",
                                f"{t.title}: {ds}, same slices for every method (paper Fig. 2)",
                                to_png(fig)))
            except RunDirError:
                continue  # an incomplete maps/ folder: tables still stand, figures skipped
    return out


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)
