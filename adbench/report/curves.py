"""Pooled ROC and precision-recall curves for the figures, exact, with the areas they enclose.

A figure's curve pools the evaluation-region voxels of several volumes (brain ∩ selected slices,
:func:`adbench.evaluation.volume.region_mask`) into one set of (score, label) pairs. The curve
is built on the same representation as :mod:`adbench.evaluation.metrics`: the candidate
thresholds are the distinct positive scores t_k, the prediction is ``score >= t_k`` (ties
grouped), and the negatives are histogrammed into those thresholds one volume at a time (as
:func:`adbench.evaluation.metrics.pooled_dice_max` does), so the bulk of the voxels is never
concatenated. Hence, on the pooled voxels:

* :attr:`PooledCurve.auroc` = the Mann-Whitney AUROC, equal to
  :func:`adbench.evaluation.metrics.auroc` and ``sklearn.metrics.roc_auc_score``; it is also
  the trapezoidal area of the exact ROC polygon :meth:`PooledCurve.roc` (each tie group is a
  diagonal step);
* :attr:`PooledCurve.auprc` = sum_k (R(t_k) - R(t_k+)) P(t_k), the step-wise average precision
  of :func:`adbench.evaluation.metrics.auprc` and ``sklearn.metrics.average_precision_score``;
  it is the area under the step curve :meth:`PooledCurve.pr` drawn with ``steps-pre``.

These are areas of the *pooled* curve. The tables report the *mean over volumes* of the
per-volume metric, which is a different number (a method can rank voxels well inside each
volume and badly across volumes, or the reverse); a figure that shows both labels both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adbench.evaluation.metrics import _validate

__all__ = ["PooledCurve", "pooled_curve", "thin"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class PooledCurve:
    """Counts at each distinct positive score t_k (ascending), pooled over volumes.

    thresholds (K,), tp (K,) = #positives >= t_k, fp (K,) = #negatives >= t_k,
    ties (K,) = #positives == t_k, neg_ties (K,) = #negatives == t_k; n_pos, n_neg totals.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    ties: np.ndarray
    neg_ties: np.ndarray
    n_pos: int
    n_neg: int
    n_volumes: int

    @property
    def defined(self) -> bool:
        """Both classes present (otherwise every area is NaN)."""
        return self.n_pos > 0 and self.n_neg > 0

    @property
    def auroc(self) -> float:
        """P(s_pos > s_neg) + 0.5 P(s_pos = s_neg) over the pooled voxels; NaN if undefined."""
        if not self.defined:
            return math.nan
        below = self.n_neg - self.fp  # negatives strictly below t_k
        twice_u = int(2 * (self.ties * below).sum() + (self.ties * self.neg_ties).sum())
        return twice_u / (2.0 * self.n_pos * self.n_neg)

    @property
    def auprc(self) -> float:
        """Average precision of the pooled voxels (step-wise, from the top); NaN if undefined."""
        if not self.defined:
            return math.nan
        precision = self.tp / (self.tp + self.fp)
        return float(np.sum((self.ties / self.n_pos * precision)[::-1]))

    @property
    def prevalence(self) -> float:
        """Fraction of positive voxels: the precision of a random ranking (the PR chance line)."""
        return self.n_pos / (self.n_pos + self.n_neg) if self.n_pos + self.n_neg else math.nan

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, TPR) of the exact ROC polygon, from (0, 0) to (1, 1), ascending.

        Two vertices per threshold, from the highest down: all voxels strictly above t_k
        predicted, then the tie group at t_k added (a diagonal step when it mixes classes).
        np.trapezoid over it equals :attr:`auroc`.
        """
        if not self.defined:
            return np.array([0.0, 1.0]), np.array([0.0, 1.0])
        above_fp, above_tp = self.fp - self.neg_ties, self.tp - self.ties
        fp = np.stack([above_fp, self.fp], axis=1)[::-1].ravel()
        tp = np.stack([above_tp, self.tp], axis=1)[::-1].ravel()
        fpr = np.concatenate([[0.0], fp / self.n_neg, [1.0]])
        tpr = np.concatenate([[0.0], tp / self.n_pos, [1.0]])
        return fpr, tpr

    def pr(self) -> tuple[np.ndarray, np.ndarray]:
        """(recall, precision) at each threshold, recall ascending, starting at recall 0.

        The first point is (0, precision at the highest threshold); drawn with
        ``drawstyle="steps-pre"`` the area under it is :attr:`auprc`.
        """
        if not self.defined:
            return np.array([0.0, 1.0]), np.array([1.0, 1.0])
        recall = (self.tp / self.n_pos)[::-1]
        precision = (self.tp / (self.tp + self.fp))[::-1]
        return np.concatenate([[0.0], recall]), np.concatenate([[precision[0]], precision])


def pooled_curve(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> PooledCurve:
    """The exact pooled curve of (scores, labels) pairs, one pair per volume's region.

    pairs: a sequence (read twice) of same-shaped score and binary label arrays. Memory:
    O(#positives) plus one volume's negatives at a time.
    """
    if iter(pairs) is pairs:
        raise TypeError("pooled_curve needs a sequence (it reads the volumes twice), "
                        "got a one-shot iterator; pass list(...)")
    positives, n_neg = [], 0
    for scores, labels in pairs:
        s, y = _validate(scores, labels)
        positives.append(s[y])
        n_neg += int((~y).sum())
    pos = np.sort(np.concatenate(positives)) if positives else np.empty(0)
    t, first = np.unique(pos, return_index=True)
    tp = pos.size - first.astype(np.int64)
    ties = np.diff(np.append(first, pos.size)).astype(np.int64)
    # between[j]: negatives with t[j-1] < s < t[j]; equal[j]: negatives with s == t[j].
    between = np.zeros(t.size + 1, dtype=np.int64)
    equal = np.zeros(t.size + 1, dtype=np.int64)
    if t.size:
        for scores, labels in pairs:
            s, y = _validate(scores, labels)
            neg = s[~y]
            for start in range(0, neg.size, _CHUNK):
                chunk = neg[start:start + _CHUNK]
                j = np.searchsorted(t, chunk, side="left")
                eq = np.zeros(chunk.size, dtype=bool)
                inside = j < t.size
                eq[inside] = t[j[inside]] == chunk[inside]
                between += np.bincount(j[~eq], minlength=t.size + 1)
                equal += np.bincount(j[eq], minlength=t.size + 1)
    # FP(t_k) = negatives >= t_k = those equal to t_k or lying above it.
    fp = (np.cumsum((between + equal)[::-1])[::-1])[:t.size] - between[:t.size]
    return PooledCurve(thresholds=t, tp=tp, fp=fp.astype(np.int64), ties=ties,
                       neg_ties=equal[:t.size], n_pos=int(pos.size), n_neg=n_neg,
                       n_volumes=len(pairs))


def thin(x: np.ndarray, y: np.ndarray, *, cell: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """A monotone curve with one point per (cell × cell) square of the unit plot kept.

    For drawing only: the first point of each run of points in the same square, and the last
    point, are kept, so the drawn line stays within ``cell`` of the exact one (an area error
    below ``2 * cell``) while a million-voxel curve becomes a few thousand points.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size <= 2:
        return x, y
    ix, iy = np.floor(x / cell).astype(np.int64), np.floor(y / cell).astype(np.int64)
    key = ix * (int(1 / cell) + 2) + iy
    keep = np.ones(x.size, dtype=bool)
    keep[1:] = key[1:] != key[:-1]
    keep[-1] = True
    return x[keep], y[keep]
