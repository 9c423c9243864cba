"""Per-volume evaluation with one stated region rule (architecture §6).

For a test volume v the evaluation region is

    R_v = brain_v ∩ (axial slices selected by ``slice_rule``)

and every voxel metric of :mod:`adbench.evaluation.metrics` is computed on the anomaly scores and lesion
labels inside R_v. ``slice_rule``:

* ``"lesion"`` (default, the paper's protocol): the axial slices whose lesion mask is non-empty;
* ``"brain"``: the axial slices whose brain area is at least ``min_brain_fraction`` (5%);
* ``"all"``: every axial slice with brain (R_v = brain).

The slices are chosen by :func:`adbench.data.selection.select_slices`, the same function that
chooses the training slices and the slices a detector predicts, so they cannot disagree.

Background voxels never count: including them inflates AUROC (a known flaw of some public
code). :data:`DEFINITIONS` (via :func:`definitions`) is written with every result, so tables
never mix runs evaluated under different rules.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from adbench.data.selection import MIN_BRAIN_FRACTION, SLICE_RULES, check_rule, select_slices
from adbench.evaluation import metrics as _m

__all__ = ["evaluate_volume", "region_mask", "definitions", "DEFINITIONS", "SLICE_RULES",
           "ROW_KEYS", "LESION_DEFINITIONS", "LESION_ML_EDGES", "lesion_ml", "lesion_type",
           "size_bin", "breakdowns"]

ROW_KEYS = ("auroc", "dice_max", "auprc", "n_voxels", "n_lesion_voxels", "n_slices")

DEFINITIONS = {
    "region_rule": "brain ∩ selected axial slices",
    "slice_rule": "lesion",
    "auroc": "exact, tie-aware (Mann-Whitney U), equal to sklearn roc_auc_score",
    "dice_variant": "max over all thresholds, exact (pred = score >= t, ties grouped)",
    "auprc": "average precision, equal to sklearn average_precision_score",
    "pooled_dice_max": "max over one global threshold on all test-set region voxels, exact",
    "slice_score": f"{_m.SLICE_SCORE}: 99th percentile of the map inside the slice's brain mask, "
                   "all slices with brain; label = lesion in the slice",
    "nan_policy": "NaN when the region holds one class; counted (<m>_n_nan), never dropped",
    "std_ddof": _m.STD_DDOF,
}


def definitions(slice_rule: str = "lesion", min_brain_fraction: float = MIN_BRAIN_FRACTION) -> dict:
    """A copy of :data:`DEFINITIONS` with ``slice_rule`` set; write it with every result."""
    check_rule(slice_rule)
    out = {**DEFINITIONS, "slice_rule": slice_rule}
    if slice_rule == "brain":   # the rule's threshold changes which slices count
        out["min_brain_fraction"] = float(min_brain_fraction)
    return out


def region_mask(lesion, brain, *, slice_rule: str = "lesion",
                min_brain_fraction: float = MIN_BRAIN_FRACTION) -> tuple[np.ndarray, int]:
    """(R (H, W, Z) bool, number of selected axial slices) for ``slice_rule``."""
    les = np.asarray(lesion).astype(bool, copy=False)
    br = np.asarray(brain).astype(bool, copy=False)
    if les.ndim != 3 or les.shape != br.shape:
        raise ValueError(f"lesion {les.shape} and brain {br.shape} must be (H, W, Z) of one shape")
    z = select_slices(br, les, slice_rule, min_brain_fraction)
    sel = np.zeros(br.shape[2], dtype=bool)
    sel[z] = True
    return br & sel[None, None, :], len(z)


def evaluate_volume(anomaly_map, lesion, brain, *, slice_rule: str = "lesion",
                    min_brain_fraction: float = MIN_BRAIN_FRACTION) -> dict:
    """Voxel metrics of one volume over R = brain ∩ selected axial slices.

    anomaly_map  (H, W, Z) float, higher = more anomalous; must be finite inside R.
    lesion       (H, W, Z) bool/0-1 ground truth.
    brain        (H, W, Z) bool/0-1 brain mask.
    Returns {"auroc", "dice_max", "auprc", "n_voxels", "n_lesion_voxels", "n_slices"}; the
    metrics are NaN when R holds only one class (e.g. no lesion inside the brain), never
    dropped. Lesion voxels outside the brain are outside R and are not counted.
    """
    m = np.asarray(anomaly_map)
    if m.ndim != 3:
        raise ValueError(f"anomaly_map must be (H, W, Z), got shape {m.shape}")
    for name, a in (("lesion", lesion), ("brain", brain)):
        if np.shape(a) != m.shape:
            raise ValueError(f"{name} shape {np.shape(a)} != anomaly_map shape {m.shape}")
    region, n_slices = region_mask(lesion, brain, slice_rule=slice_rule,
                                   min_brain_fraction=min_brain_fraction)
    scores = m[region]
    labels = np.asarray(lesion).astype(bool, copy=False)[region]
    if scores.dtype.kind == "f" and not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).sum())
        raise ValueError(f"anomaly_map has {bad} non-finite value(s) inside the evaluation region")
    pos, neg = _m._split_sorted(scores, labels)
    return {
        "auroc": _m._auroc_sorted(pos, neg),
        "dice_max": _m._dice_sorted(pos, neg)[0],
        "auprc": _m._auprc_sorted(pos, neg),
        "n_voxels": int(scores.size),
        "n_lesion_voxels": int(pos.size),
        "n_slices": n_slices,
    }


#: What ``lesion_ml`` and the bins mean; written in summary.json beside the breakdowns (not in
#: :data:`DEFINITIONS`, whose keys decide which runs a leaderboard compares).
LESION_DEFINITIONS = {
    "lesion_ml": "lesion voxels of the preprocessed lesion mask (inside the brain) x the "
                 "preprocessed grid's voxel volume |det A[:3, :3]| in mm^3 / 1000: world units, "
                 "so the source scan's lesion volume up to resampling error",
    "lesion_size_bins": "[lo, hi) in ml; the last bin has no upper edge",
    "lesion_type": "Volume.meta lesion_type (synth: tumour/stroke) or grade (BraTS: HGG/LGG)",
}

#: Fixed lesion-size bin edges in ml: [0, 1), [1, 5), [5, 10), [10, 25), [25, 50),
#: [50, 100), [100, inf). Small strokes fall in the first bins, most gliomas in the last ones.
LESION_ML_EDGES = (0.0, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, math.inf)


def lesion_ml(lesion, affine) -> float:
    """Lesion volume in ml: voxels of ``lesion`` (H, W, Z) × |det affine[:3, :3]| mm³ / 1000."""
    vox_mm3 = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))
    return int(np.count_nonzero(lesion)) * vox_mm3 / 1000.0


def lesion_type(meta: Mapping) -> str:
    """The lesion type a dataset records in ``Volume.meta``: ``lesion_type`` (synth: tumour or
    stroke; BraTS: HGG or LGG), else BraTS's ``grade``; "" when unknown."""
    return str(meta.get("lesion_type") or meta.get("grade") or "")


def size_bin(ml: float, edges: Sequence[float] = LESION_ML_EDGES) -> str | None:
    """The label "[lo, hi)" of the bin holding ``ml`` (None for NaN or below the first edge)."""
    if ml is None or math.isnan(float(ml)):
        return None
    for lo, hi in zip(edges[:-1], edges[1:]):
        if lo <= ml < hi:
            return f"[{lo:g}, {hi:g})"
    return None


def breakdowns(rows: Iterable[Mapping], metrics: Sequence[str],
               edges: Sequence[float] = LESION_ML_EDGES) -> dict:
    """Metrics by lesion-size bin and by lesion type, for summary.json.

    Returns {"by_lesion_size": {"edges_ml": edges (inf as None), "bins": [{"bin", "lo_ml",
    "hi_ml", "n", "<m>_mean", "<m>_std", "<m>_n", "<m>_n_nan", ...}, ...]} (every bin, empty
    ones with n = 0), "by_lesion_type": {type: {"n", "<m>_mean", ...}} (types seen; none
    when the dataset records none)}. Means and stds as :func:`adbench.evaluation.metrics.summarize`.
    """
    rows = list(rows)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        label = f"[{lo:g}, {hi:g})"
        sel = [r for r in rows if size_bin(r.get("lesion_ml", math.nan), edges) == label]
        bins.append({"bin": label, "lo_ml": float(lo), "hi_ml": None if math.isinf(hi) else float(hi),
                     "n": len(sel), **_m.summarize(sel, metrics)})
    types: dict = {}
    for t in sorted({str(r.get("lesion_type") or "") for r in rows} - {""}):
        sel = [r for r in rows if r.get("lesion_type") == t]
        types[t] = {"n": len(sel), **_m.summarize(sel, metrics)}
    return {"definitions": dict(LESION_DEFINITIONS),
            "by_lesion_size": {"edges_ml": [None if math.isinf(e) else float(e) for e in edges],
                               "bins": bins},
            "by_lesion_type": types}
