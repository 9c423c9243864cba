"""Figures (matplotlib, Agg backend, PNG): the paper's Fig. 2, ROC curves, per-volume box plots.

Arrays are (H, W, Z) volumes on the preprocessed grid (axial axis last); a slice ``[:, :, z]``
is shown as stored (rows anterior → posterior, columns left → right). Anomaly maps are shown
inside the brain only, each method scaled to its own [1st, 99.5th] percentile over the slices
shown, so methods with different score units stay readable side by side.

ROC curves are pooled over the evaluation-region voxels of all volumes given (brain ∩ selected
slices, as :func:`adbench.evaluation.volume.region_mask`), and are exact at up to ``n_points``
thresholds chosen from score quantiles; the legend shows the run's mean per-volume AUROC, the
number the tables report, not the pooled curve's area.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from adbench.data.selection import MIN_BRAIN_FRACTION
from adbench.evaluation.volume import region_mask
from adbench.io import atomic_write

__all__ = ["to_png", "roc_points", "roc_figure", "boxplot_figure", "comparison_figure",
           "pick_slices", "write_run_figures", "leaderboard_figures"]


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


def roc_points(pairs: Sequence[tuple[np.ndarray, np.ndarray]], *,
               n_points: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) ascending, pooled over (scores, labels) pairs, exact at ≤ n_points thresholds.

    Thresholds are quantiles of the positives and of a strided sample of the negatives, so the
    curve bends where either class has mass; (0, 0) and (1, 1) are included.
    """
    pos = np.concatenate([np.asarray(s).ravel()[np.asarray(y).ravel().astype(bool)] for s, y in pairs])
    n_neg = sum(int((~np.asarray(y).astype(bool)).sum()) for _, y in pairs)
    if pos.size == 0 or n_neg == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    stride = max(1, n_neg // 200_000)
    neg_sample = np.concatenate([np.asarray(s).ravel()[~np.asarray(y).ravel().astype(bool)][::stride]
                                 for s, y in pairs])
    q = np.linspace(0, 1, n_points // 2)
    t = np.unique(np.concatenate([np.quantile(pos, q), np.quantile(neg_sample, q)]))
    tp = pos.size - np.searchsorted(np.sort(pos), t, side="left")
    fp = np.zeros(t.size, dtype=np.int64)
    for s, y in pairs:
        neg = np.sort(np.asarray(s).ravel()[~np.asarray(y).ravel().astype(bool)])
        fp += neg.size - np.searchsorted(neg, t, side="left")
    fpr = np.concatenate([[1.0], fp / n_neg, [0.0]])[::-1]
    tpr = np.concatenate([[1.0], tp / pos.size, [0.0]])[::-1]
    return fpr, tpr


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], *, title: str = ""):
    """curves: label → (fpr, tpr, mean per-volume AUROC or NaN)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for label, (fpr, tpr, auc) in curves.items():
        lab = label if not math.isfinite(auc) else f"{label} (mean AUROC {100 * auc:.1f})"
        ax.plot(fpr, tpr, lw=1.5, label=lab)
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate (voxels)", ylabel="true positive rate (voxels)",
           xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def boxplot_figure(values: Mapping[str, Mapping[str, Sequence[float]]], metrics: Sequence[str], *,
                   title: str = "", labels: Mapping[str, str] | None = None):
    """values: method → metric → per-volume values (NaN dropped and counted in the label)."""
    plt = _plt()
    methods = list(values)
    fig, axes = plt.subplots(1, len(metrics), figsize=(1.2 + 1.1 * len(methods) * len(metrics), 3.8),
                             squeeze=False)
    for ax, m in zip(axes[0], metrics):
        data, names = [], []
        for meth in methods:
            v = np.asarray(values[meth].get(m, []), dtype=float)
            f = v[np.isfinite(v)]
            data.append(100 * f)
            names.append(meth + (f"\n({v.size - f.size} NaN)" if v.size > f.size else ""))
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=7)
        ax.set_title((labels or {}).get(m, m))
        ax.set_ylabel("per volume, %")
    if title:
        fig.suptitle(title)
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


def _scaled(maps: list[np.ndarray], brains: list[np.ndarray]) -> tuple[list[np.ndarray], float, float]:
    inside = np.concatenate([m[b] for m, b in zip(maps, brains)]) if maps else np.zeros(1)
    lo, hi = (np.percentile(inside, [1, 99.5]) if inside.size else (0.0, 1.0))
    if not hi > lo:
        hi = lo + 1.0
    return [np.where(b, m, np.nan) for m, b in zip(maps, brains)], float(lo), float(hi)


def comparison_figure(images: list[np.ndarray], lesions: list[np.ndarray], brains: list[np.ndarray],
                      maps: Mapping[str, list[np.ndarray]], *, titles: Sequence[str] = (),
                      greys: Mapping[str, list[np.ndarray]] | None = None):
    """The paper's Fig. 2: columns = slices, rows = image, ground truth, each method's map.

    images, lesions, brains: per shown slice (H, W); maps: method → per shown slice (H, W).
    greys: more rows drawn like the image (e.g. "reconstruction" → per slice (H, W)), on the
    image's grey scale, between the ground truth and the maps.
    """
    plt = _plt()
    import matplotlib as mpl
    greys = dict(greys or {})
    n = len(images)
    rows = 2 + len(greys) + len(maps)
    fig, axes = plt.subplots(rows, n, figsize=(1.6 * n + 1.2, 1.9 * rows), squeeze=False)
    cmap = mpl.colormaps["jet"].with_extremes(bad="black")
    for j in range(n):
        lo, hi = float(np.min(images[j])), float(np.max(images[j]))
        axes[0, j].imshow(images[j], cmap="gray", vmin=lo, vmax=hi)
        axes[1, j].imshow(images[j], cmap="gray", vmin=lo, vmax=hi)
        axes[1, j].imshow(np.ma.masked_where(~lesions[j], lesions[j]), cmap="autumn", alpha=0.6)
        for r, ims in enumerate(greys.values(), start=2):
            axes[r, j].imshow(ims[j], cmap="gray", vmin=lo, vmax=hi)
        if j < len(titles):
            axes[0, j].set_title(titles[j], fontsize=7)
    for r, (name, ms) in enumerate(maps.items(), start=2 + len(greys)):
        shown, lo, hi = _scaled(ms, brains)
        for j in range(n):
            axes[r, j].imshow(shown[j], cmap=cmap, vmin=lo, vmax=hi)
    for r, label in enumerate(["image", "ground truth", *greys, *maps]):
        axes[r, 0].set_ylabel(label, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def write_run_figures(run_dir: str | Path, volumes: list[dict], *, slice_rule: str = "lesion",
                      min_brain_fraction: float = MIN_BRAIN_FRACTION) -> list[Path]:
    """Write figures/overlay.png and figures/roc.png for one run; returns the paths written.

    volumes: dicts with "subject" and (H, W, Z) arrays "image", "map", "lesion", "brain", and
    "reconstruction" for a reconstruction method (a row of its own) (a few test volumes: the overlay shows the largest lesion slice of up to four of them,
    the ROC is pooled over their evaluation regions under ``slice_rule``).
    """
    out_dir = Path(run_dir) / "figures"
    written: list[Path] = []
    chosen = pick_slices(volumes)
    if chosen:
        fig = comparison_figure(
            [np.asarray(volumes[i]["image"])[:, :, z] for i, z in chosen],
            [np.asarray(volumes[i]["lesion"]).astype(bool)[:, :, z] for i, z in chosen],
            [np.asarray(volumes[i]["brain"]).astype(bool)[:, :, z] for i, z in chosen],
            {"anomaly map": [np.asarray(volumes[i]["map"])[:, :, z] for i, z in chosen]},
            titles=[f"{volumes[i]['subject']} z={z}" for i, z in chosen],
            greys=({"reconstruction": [np.asarray(volumes[i]["reconstruction"])[:, :, z]
                                       for i, z in chosen]}
                   if all("reconstruction" in volumes[i] for i, _ in chosen) else None))
        p = out_dir / "overlay.png"
        atomic_write(p, to_png(fig))
        written.append(p)
    pairs = []
    for v in volumes:
        lesion = np.asarray(v["lesion"]).astype(bool)
        region, _ = region_mask(lesion, v["brain"], slice_rule=slice_rule,
                                min_brain_fraction=min_brain_fraction)
        pairs.append((np.asarray(v["map"])[region], lesion[region]))
    if any(y.any() for _, y in pairs) and any((~y).any() for _, y in pairs):
        from adbench.evaluation.metrics import auroc
        aucs = [auroc(s, y) for s, y in pairs]
        finite = [a for a in aucs if math.isfinite(a)]
        fpr, tpr = roc_points(pairs)
        fig = roc_figure({"this run": (fpr, tpr, float(np.mean(finite)) if finite else math.nan)},
                         title=f"ROC, {len(pairs)} volume(s), slices: {slice_rule}")
        p = out_dir / "roc.png"
        atomic_write(p, to_png(fig))
        written.append(p)
    return written


def leaderboard_figures(lb, *, n_slices: int = 4, max_roc_volumes: int | None = None,
                        with_maps: bool = True) -> list[tuple[str, str, bytes]]:
    """(file name, caption, PNG) for each table and dataset of a leaderboard.

    Box plots come from per_volume.csv; the ROC curves and the Fig. 2 comparison need every
    run's maps/ folder and are left out (with no error) for datasets where a run has none.
    ``max_roc_volumes`` caps the volumes read per run for the ROC (None = all).
    """
    from adbench.report.tables import METRIC_LABELS
    from adbench.rundir import RunDirError, load_map_volume, map_subjects

    out = []
    for ti, t in enumerate(lb.tables, start=1):
        for ds in t.datasets:
            runs = {row: t.runs[(row, ds)] for row in t.rows if (row, ds) in t.runs}
            tag = f"t{ti}_{_slug(ds)}"
            vals = {row: {m: list(r.values(m).values()) for m in t.metrics} for row, r in runs.items()}
            out.append((f"{tag}_boxplot.png", f"{t.title}: {ds}, per-volume metrics",
                        to_png(boxplot_figure(vals, t.metrics, title=ds,
                                              labels={**METRIC_LABELS, **_MPL_LABELS}))))
            if not with_maps:
                continue
            subjects = {row: map_subjects(r) for row, r in runs.items()}
            if not all(subjects.values()):
                continue
            rule = (t.definitions or {}).get("slice_rule", "lesion")
            fraction = (t.definitions or {}).get("min_brain_fraction") or MIN_BRAIN_FRACTION
            try:
                curves = {}
                for row, r in runs.items():
                    pairs = []
                    for s in subjects[row][:max_roc_volumes]:
                        v = load_map_volume(r, s, with_image=False)
                        region, _ = region_mask(v["lesion"], v["brain"], slice_rule=rule,
                                                min_brain_fraction=fraction)
                        pairs.append((v["map"][region], v["lesion"][region]))
                    auc = [x for x in r.values("auroc").values() if math.isfinite(x)]
                    curves[row] = (*roc_points(pairs), float(np.mean(auc)) if auc else math.nan)
                out.append((f"{tag}_roc.png", f"{t.title}: {ds}, ROC pooled over region voxels",
                            to_png(roc_figure(curves, title=ds))))
                common = sorted(set.intersection(*(set(s) for s in subjects.values())))
                first = next(iter(runs.values()))
                vols = [load_map_volume(first, s) for s in common[:4 * n_slices]]
                chosen = pick_slices(vols, n_slices)
                if chosen:
                    maps = {row: [load_map_volume(r, vols[i]["subject"], with_image=False)["map"][:, :, z]
                                  for i, z in chosen] for row, r in runs.items()}
                    fig = comparison_figure([vols[i]["image"][:, :, z] for i, z in chosen],
                                            [vols[i]["lesion"][:, :, z] for i, z in chosen],
                                            [vols[i]["brain"][:, :, z] for i, z in chosen], maps,
                                            titles=[f"{vols[i]['subject']} z={z}" for i, z in chosen])
                    out.append((f"{tag}_comparison.png",
                                f"{t.title}: {ds}, same slices for every method (paper Fig. 2)",
                                to_png(fig)))
            except RunDirError:
                continue  # an incomplete maps/ folder: tables still stand, figures skipped
    return out


_MPL_LABELS = {"dice_max": r"$\lceil$Dice$\rceil$"}  # mathtext: fonts may lack ⌈ ⌉


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)
