"""Thresholds estimated without test labels, and Dice at a fixed threshold.

The oracle ⌈Dice⌉ (``dice_max``) looks at each test volume's labels to choose its threshold;
a deployed detector cannot. Here the threshold is set on *healthy validation* data instead:
the anomaly scores of the brain voxels of healthy validation slices (subjects disjoint from
the training subjects) are pooled, and for a false-positive rate α the threshold is their
(1 − α) quantile,

    t_α = Q_{1−α}(s_1, …, s_n),      Q by linear interpolation between order statistics
                                      (numpy's default ``method="linear"``):
    h = (n − 1)(1 − α),  t_α = s_(⌊h⌋) + (h − ⌊h⌋)(s_(⌊h⌋+1) − s_(⌊h⌋)),

so that on fresh healthy data from the same distribution a voxel is called anomalous
(``score >= t_α``, the rule of every Dice here) with probability ≈ α. On each test volume the
Dice at t_α is computed over the same region R_v as ``dice_max``:

    Dice(t) = 2·|{s >= t} ∩ L| / (|{s >= t}| + |L|),   NaN when both sets are empty.

Columns: ``dice_fpr1`` for α = 0.01, ``dice_fpr5`` for α = 0.05 (:func:`column_name`).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

__all__ = ["FPR_LEVELS", "column_name", "quantile_threshold", "fpr_thresholds", "dice_at",
           "check_levels", "validation_scores", "evenly_spaced",
           "healthy_volumes", "apply_thresholds"]

#: Default false-positive rates (runner key ``fpr_levels``).
FPR_LEVELS = (0.01, 0.05)


def check_levels(levels: Iterable[float], key: str = "runner.fpr_levels") -> tuple[float, ...]:
    """``levels`` as floats in (0, 1), or a ValueError naming ``key``."""
    out = []
    for v in levels:
        f = float(v)
        if not 0.0 < f < 1.0:
            raise ValueError(f"{key}: {v!r} is not a false-positive rate in (0, 1); "
                             f"give fractions, e.g. [0.01, 0.05] for 1% and 5%")
        out.append(f)
    if len(set(out)) != len(out):
        raise ValueError(f"{key}: {list(levels)} repeats a rate; give each once")
    return tuple(out)


def column_name(fpr: float) -> str:
    """The per_volume.csv column of Dice at the threshold of rate ``fpr``: 0.01 → ``dice_fpr1``,
    0.05 → ``dice_fpr5``, 0.005 → ``dice_fpr0.5`` (percent, shortest form)."""
    return f"dice_fpr{float(fpr) * 100:.10g}"


def quantile_threshold(healthy_scores, fpr: float) -> float:
    """t_α: the (1 − ``fpr``) quantile of ``healthy_scores`` (1-D, finite), linear
    interpolation between order statistics (the module docstring's formula). NaN when there
    are no scores."""
    s = np.asarray(healthy_scores, dtype=np.float64).ravel()
    if s.size == 0:
        return math.nan
    if not np.isfinite(s).all():
        raise ValueError(f"healthy validation scores hold {int((~np.isfinite(s)).sum())} "
                         f"non-finite value(s); the detector's maps must be finite")
    h = (s.size - 1) * (1.0 - float(fpr))
    lo = int(math.floor(h))
    hi = min(lo + 1, s.size - 1)
    part = np.partition(s, (lo, hi)) if hi != lo else np.partition(s, lo)
    return float(part[lo] + (h - lo) * (part[hi] - part[lo]))


def fpr_thresholds(healthy_scores, levels: Sequence[float] = FPR_LEVELS) -> dict[str, float]:
    """{column name: t_α} for each rate in ``levels`` (see :func:`column_name`)."""
    return {column_name(a): quantile_threshold(healthy_scores, a) for a in check_levels(levels)}


def dice_at(scores, labels, threshold: float) -> float:
    """Dice of ``scores >= threshold`` against boolean ``labels`` (same shape); NaN when the
    threshold is NaN or neither prediction nor lesion has a voxel."""
    if threshold is None or math.isnan(float(threshold)):
        return math.nan
    s = np.asarray(scores)
    y = np.asarray(labels).astype(bool, copy=False)
    if s.shape != y.shape:
        raise ValueError(f"dice_at: scores {s.shape} and labels {y.shape} differ in shape")
    pred = s >= threshold
    denom = int(pred.sum()) + int(y.sum())
    if denom == 0:
        return math.nan
    return 2.0 * int((pred & y).sum()) / denom


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` positions in ``range(n)``, evenly spaced, first and last included."""
    k = min(int(n), int(k))
    if k <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def validation_scores(detector, ctx, scorer, volumes: Iterable, batch_size: int, *,
                      per_volume: int, max_slices: int) -> tuple[np.ndarray, dict]:
    """Pooled map values over the brain voxels of healthy validation slices.

    volumes     iterable of (subject, image (H, W, Z) in [-1, 1], brain (H, W, Z) bool,
                candidate slice indices z), finalised like the test volumes (same histogram
                reference); consumed one at a time.
    per_volume  at most this many slices of a volume, evenly spaced among its candidates;
    max_slices  and at most this many in all.
    Returns (scores 1-D float64, info {"subjects", "n_slices", "n_voxels"}).
    """
    import torch

    from adbench.evaluation.test_set import predict_maps

    pooled, subjects, n_slices = [], [], 0
    for sid, image, brain, z in volumes:
        if n_slices >= max_slices:
            break
        z = np.asarray(z, np.int64)
        zz = z[evenly_spaced(len(z), min(per_volume, max_slices - n_slices))]
        if not len(zz):
            continue
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image[:, :, zz], -1, 0)))[:, None]
        m, _ = predict_maps(detector, x.float(), ctx, scorer, batch_size)
        b = np.moveaxis(brain[:, :, zz], -1, 0).astype(bool)
        pooled.append(m.numpy().astype(np.float64)[b])
        subjects.append(sid)
        n_slices += len(zz)
    scores = np.concatenate(pooled) if pooled else np.zeros(0)
    return scores, {"subjects": subjects, "n_slices": n_slices, "n_voxels": int(scores.size)}


def healthy_volumes(ds, name: str, cfg, reference, *, strict: bool, report: list, progress: bool):
    """The "val" split of ``ds`` as :func:`validation_scores` reads it: (subject, finalised
    image, brain, slices) per volume, the slices chosen by the training slice rule ("brain"
    when that rule is "lesion": a healthy volume has no lesion slice)."""
    from adbench.data.cache import finalize_image, iter_preprocessed
    from adbench.data.dataset import VAL_SPLIT
    from adbench.data.selection import select_slices

    rule = cfg.slices_train if cfg.slices_train != "lesion" else "brain"
    for pre in iter_preprocessed(ds, name, VAL_SPLIT, cfg, strict=strict, report=report,
                                 progress=progress):
        z = select_slices(pre.brain, None, rule, cfg.min_brain_fraction)
        yield pre.subject_id, finalize_image(pre, reference, cfg), pre.brain, z


def apply_thresholds(spec, val_ds, validation: dict, reference, detector, ctx, result, *,
                     progress: bool) -> dict:
    """The runner's step after the test set: predict the healthy validation slices of
    ``val_ds`` (``validation["subjects"]``, at most ``runner.val_max_slices``), set t_α for
    each α of ``runner.fpr_levels``, add the Dice-at-t_α columns to ``result.rows`` (over
    each volume's region, ``result.regions``) and return the summary's part: their
    ``<col>_mean`` ..., ``thresholds``, ``validation`` and ``breakdowns`` (by lesion size and
    type, :func:`adbench.evaluation.volume.breakdowns`)."""
    from adbench.evaluation.metrics import METRICS, summarize
    from adbench.evaluation.volume import breakdowns

    levels = check_levels(spec.runner["fpr_levels"])
    report: list[dict] = []
    scores, info = np.zeros(0), {"subjects": [], "n_slices": 0, "n_voxels": 0}
    if validation["subjects"]:
        cap = int(spec.runner["val_max_slices"])
        vols = healthy_volumes(val_ds, spec.train_on, spec.preprocess, reference,
                               strict=spec.strict, report=report, progress=progress)
        scores, info = validation_scores(detector, ctx, result.scorer, vols,
                                         int(spec.runner["batch_size"]), max_slices=cap,
                                         per_volume=-(-cap // len(validation["subjects"])))
    values = fpr_thresholds(scores, levels)
    for row in result.rows:
        s, y = result.regions[row["subject"]]
        row.update({col: dice_at(s, y, t) for col, t in values.items()})
    realised = {c: float((scores >= t).mean()) if scores.size else None for c, t in values.items()}
    return {**summarize(result.rows, tuple(values)),
            "thresholds": {"fpr_levels": list(levels), "values": values,
                           "validation_fpr": realised,
                           "rule": "score >= t; t = (1 - fpr) quantile (linear) of the pooled "
                                   "brain-voxel scores of healthy validation slices"},
            "validation": {**validation, "subjects_predicted": info["subjects"],
                           "n_slices": info["n_slices"], "n_voxels": info["n_voxels"],
                           "skipped": report},
            "breakdowns": breakdowns(result.rows, (*METRICS, *values))}
