"""Voxel- and slice-level localisation metrics, computed exactly (architecture §6).

Every metric takes anomaly scores (higher = more anomalous) and binary labels of the same
shape (flattened; any shape is accepted, 1-D is the norm) and returns a Python float. A metric
that is undefined because the labels hold a single class returns NaN; callers count NaNs and
never drop them (:func:`summarize` reports ``<m>_n_nan``).

Exactness. All three voxel metrics rest on one representation: the positive scores and the
negative scores, each sorted once (``O(n log n)``). Candidate thresholds are the distinct
positive scores; for a threshold ``t`` the prediction is ``score >= t``, so every voxel with
an equal score enters together (ties grouped). Counts come from ``np.searchsorted`` on the
sorted arrays, which keeps everything vectorised and in integers until the final division.

* ``auroc``     = P(s_pos > s_neg) + 0.5 P(s_pos = s_neg), the Mann-Whitney form, equal to
  :func:`sklearn.metrics.roc_auc_score` (trapezoidal ROC area with ties as diagonal steps).
* ``dice_max``  = max_t 2 TP(t) / (|pred(t)| + |lesion|)  (the paper's ⌈Dice⌉). Only distinct
  positive scores can be maximisers: lowering ``t`` through a group of negatives only adds to
  the denominator, and the empty prediction scores 0.
* ``auprc``     = sum_t (R(t) - R(t+)) P(t), equal to
  :func:`sklearn.metrics.average_precision_score` (step-wise, no interpolation).

Set-level metrics: :func:`pooled_dice_max` (one global threshold over a whole test set, merged
without concatenating the negatives) and :func:`slice_auroc` on slice scores produced by
:func:`slice_scores` with the reduction named in :data:`SLICE_SCORE`.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["auroc", "dice_max", "auprc", "dice_max_threshold", "pooled_dice_max",
           "slice_scores", "slice_auroc", "summarize", "SLICE_SCORE", "METRICS", "STD_DDOF"]

METRICS = ("auroc", "dice_max", "auprc")
STD_DDOF = 1  # sample standard deviation over volumes, as the paper's "mean ± std"
SLICE_SCORE = "p99"  # slice score = 99th percentile of the map inside the slice's brain mask
_SLICE_REDUCTIONS = ("p99", "max", "mean")
_CHUNK = 1 << 20


def _validate(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.shape != y.shape:
        raise ValueError(f"scores shape {s.shape} != labels shape {y.shape}; "
                         "pass one score per labelled voxel")
    s = s.ravel()
    y = y.ravel()
    if s.dtype.kind not in "fiub":
        raise ValueError(f"scores must be numeric, got dtype {s.dtype}")
    if s.dtype.kind == "f":
        if s.dtype.itemsize < 4:  # float16 sorts slowly and compares the same as float32
            s = s.astype(np.float32)
        if np.isnan(s).any():
            raise ValueError(f"scores contain {int(np.isnan(s).sum())} NaN value(s); "
                             "an anomaly map must be finite or at least ordered")
    if y.dtype != bool:
        if y.size and not np.isin(y, (0, 1)).all():
            bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
            raise ValueError(f"labels must be binary (0/1 or bool), got values such as {bad.tolist()}")
        y = y.astype(bool)
    return s, y


def _split_sorted(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(sorted positive scores, sorted negative scores), ascending."""
    s, y = _validate(scores, labels)
    return np.sort(s[y]), np.sort(s[~y])


def _auroc_sorted(pos: np.ndarray, neg: np.ndarray) -> float:
    if pos.size == 0 or neg.size == 0:
        return math.nan
    below = np.searchsorted(neg, pos, side="left").astype(np.int64)
    equal = np.searchsorted(neg, pos, side="right").astype(np.int64) - below
    # 2U in integers: each positive beats `below` negatives and ties with `equal` of them.
    twice_u = int(2 * below.sum() + equal.sum())
    return twice_u / (2.0 * pos.size * neg.size)


def _curve_sorted(pos: np.ndarray, neg: np.ndarray):
    """At each distinct positive score t (ascending): (t, TP(t), FP(t), group size of t)."""
    t, first = np.unique(pos, return_index=True)
    tp = pos.size - first.astype(np.int64)                 # positives with score >= t
    fp = neg.size - np.searchsorted(neg, t, side="left").astype(np.int64)  # negatives >= t
    group = np.diff(np.append(first, pos.size)).astype(np.int64)  # positives with score == t
    return t, tp, fp, group


def _dice_sorted(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    if pos.size == 0 or neg.size == 0:
        return math.nan, math.nan
    t, tp, fp, _ = _curve_sorted(pos, neg)
    dice = 2.0 * tp / (tp + fp + pos.size)
    # Largest threshold reaching the maximum: scan from the top (the last index is the highest t).
    k = len(dice) - 1 - int(np.argmax(dice[::-1]))
    return float(dice[k]), float(t[k])


def _auprc_sorted(pos: np.ndarray, neg: np.ndarray) -> float:
    if pos.size == 0 or neg.size == 0:
        return math.nan
    _, tp, fp, group = _curve_sorted(pos, neg)
    precision = tp / (tp + fp)
    # Summed from the highest threshold down, as sklearn's step-wise AP does.
    return float(np.sum((group / pos.size * precision)[::-1]))


def auroc(scores, labels) -> float:
    """Area under the ROC curve of voxel ``scores`` against binary ``labels``.

    Exact and tie-aware (Mann-Whitney U / (P N)); equal to ``sklearn.metrics.roc_auc_score``.
    scores, labels: arrays of the same shape (flattened). NaN when labels hold one class.
    """
    return _auroc_sorted(*_split_sorted(scores, labels))


def dice_max(scores, labels) -> float:
    """⌈Dice⌉: max over all thresholds t of 2 TP / (|score >= t| + |labels|), exact.

    Ties are grouped (equal scores enter the prediction together). NaN when labels hold one
    class (Dice needs a lesion; with no healthy voxel the localisation task is void).
    """
    return _dice_sorted(*_split_sorted(scores, labels))[0]


def dice_max_threshold(scores, labels) -> tuple[float, float]:
    """(⌈Dice⌉, the largest threshold t reaching it); (NaN, NaN) when labels hold one class."""
    return _dice_sorted(*_split_sorted(scores, labels))


def auprc(scores, labels) -> float:
    """Average precision (area under the step-wise precision-recall curve), exact.

    Equal to ``sklearn.metrics.average_precision_score``. NaN when labels hold one class.
    """
    return _auprc_sorted(*_split_sorted(scores, labels))


def pooled_dice_max(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """⌈Dice⌉ with one global threshold over a whole test set, exact: (dice, threshold).

    pairs: a sequence (read twice, so not a one-shot iterator) of (scores, labels) per volume,
    usually the evaluation region of each volume. Equivalent to :func:`dice_max_threshold` on
    the concatenation, without concatenating the negatives (the bulk of the voxels): pass 1
    collects the positive scores (the only candidate thresholds); pass 2 histograms each
    volume's negatives into those candidates and accumulates. Memory: O(#positives) plus one
    volume at a time. (NaN, NaN) when the pooled labels hold one class.
    """
    if iter(pairs) is pairs:
        raise TypeError("pooled_dice_max needs a sequence (it reads the volumes twice), "
                        "got a one-shot iterator; pass list(...)")
    positives = []
    n_neg_total = 0
    for scores, labels in pairs:
        s, y = _validate(scores, labels)
        positives.append(s[y])
        n_neg_total += int((~y).sum())
    pos = np.sort(np.concatenate(positives)) if positives else np.empty(0)
    del positives
    if pos.size == 0 or n_neg_total == 0:
        return math.nan, math.nan
    t, first = np.unique(pos, return_index=True)
    tp = pos.size - first.astype(np.int64)
    # counts[k] = negatives with t[k-1] <= score < t[k]; a reversed cumsum gives FP(t) = #neg >= t.
    counts = np.zeros(t.size + 1, dtype=np.int64)
    for scores, labels in pairs:
        s, y = _validate(scores, labels)
        neg = s[~y]
        neg.sort()  # in place; sorted keys make searchsorted cache-friendly
        for start in range(0, neg.size, _CHUNK):  # bounds the int64 index array
            idx = np.searchsorted(t, neg[start:start + _CHUNK], side="right")
            counts += np.bincount(idx, minlength=t.size + 1)
    fp = np.cumsum(counts[::-1])[::-1][1:]
    dice = 2.0 * tp / (tp + fp + pos.size)
    k = len(dice) - 1 - int(np.argmax(dice[::-1]))
    return float(dice[k]), float(t[k])


def slice_scores(anomaly_map, lesion, brain, *, reduction: str = SLICE_SCORE):
    """Slice-level scores and labels of one volume: (scores (Z',), labels (Z',), z (Z',)).

    anomaly_map, lesion, brain: (H, W, Z) arrays, axial axis last. Every axial slice with at
    least one brain voxel takes part (not only the lesion slices: a slice-level detection task
    needs healthy slices too). Score = ``reduction`` of the map over the slice's brain voxels:
    ``"p99"`` (99th percentile, linear interpolation; default, robust to single hot voxels),
    ``"max"`` or ``"mean"``. Label = the slice holds a lesion voxel inside the brain.
    """
    if reduction not in _SLICE_REDUCTIONS:
        raise ValueError(f"slice reduction {reduction!r} unknown; expected one of {_SLICE_REDUCTIONS}")
    m = np.asarray(anomaly_map)
    les = np.asarray(lesion).astype(bool)
    br = np.asarray(brain).astype(bool)
    if m.ndim != 3 or les.shape != m.shape or br.shape != m.shape:
        raise ValueError(f"slice_scores needs three (H, W, Z) arrays of one shape, got map "
                         f"{m.shape}, lesion {les.shape}, brain {br.shape}")
    zs = np.flatnonzero(br.any(axis=(0, 1)))
    out = np.empty(zs.size, dtype=np.float64)
    for i, z in enumerate(zs):
        v = m[:, :, z][br[:, :, z]]
        out[i] = (np.percentile(v, 99) if reduction == "p99"
                  else v.max() if reduction == "max" else v.mean())
    labels = (les & br).any(axis=(0, 1))[zs]
    return out, labels, zs


def slice_auroc(slice_scores, slice_labels) -> float:
    """AUROC of slice scores against slice labels (any lesion in the slice), exact.

    Scores come from :func:`slice_scores` (reduction :data:`SLICE_SCORE` by default),
    concatenated over the volumes of a test set. NaN when all slices share one label.
    """
    return auroc(slice_scores, slice_labels)


def summarize(rows: Iterable[Mapping], metrics: Sequence[str] = METRICS) -> dict:
    """Aggregate per-volume rows: ``<m>_mean``, ``<m>_std`` (ddof=1), ``<m>_n``, ``<m>_n_nan``.

    rows: dicts (e.g. per_volume.csv rows) holding each metric as a float (NaN allowed).
    NaN rows are excluded from mean/std and counted in ``<m>_n_nan``; ``<m>_n`` is the number
    of finite values. std is NaN with fewer than two values, mean NaN with none.
    """
    rows = list(rows)
    out: dict = {}
    for m in metrics:
        vals = np.array([float(r[m]) if r.get(m) not in (None, "") else math.nan for r in rows],
                        dtype=np.float64)
        finite = vals[~np.isnan(vals)]
        out[f"{m}_mean"] = float(finite.mean()) if finite.size else math.nan
        out[f"{m}_std"] = float(finite.std(ddof=STD_DDOF)) if finite.size > STD_DDOF else math.nan
        out[f"{m}_n"] = int(finite.size)
        out[f"{m}_n_nan"] = int(vals.size - finite.size)
    return out
