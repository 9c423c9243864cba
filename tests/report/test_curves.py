"""Pooled ROC/PR curves: exact against the metric code and scikit-learn, streamed per volume."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from adbench.evaluation.metrics import auprc, auroc
from adbench.report import curves
from adbench.report.curves import pooled_curve, thin


def tied_pairs(n_volumes=3, n=500, seed=0, decimals=1):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n_volumes):
        y = rng.random(n) < 0.2
        s = np.round(rng.normal(size=n) + y, decimals)  # few distinct levels: heavy ties
        pairs.append((s, y))
    return pairs


def pooled(pairs):
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


@pytest.mark.parametrize("decimals", [0, 1, 6])
def test_areas_equal_the_metrics_and_sklearn(decimals):
    pairs = tied_pairs(decimals=decimals)
    s, y = pooled(pairs)
    c = pooled_curve(pairs)
    assert c.auroc == auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert c.auprc == auprc(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert (c.n_pos, c.n_neg, c.n_volumes) == (int(y.sum()), int((~y).sum()), 3)
    fpr, tpr = c.roc()  # the exact polygon: its trapezoidal area is the AUROC ...
    assert np.trapezoid(tpr, fpr) == pytest.approx(c.auroc, abs=1e-12)
    recall, precision = c.pr()  # ... and the step area under the PR points is the AP
    assert np.sum(np.diff(recall) * precision[1:]) == pytest.approx(c.auprc, abs=1e-12)


def test_roc_vertices_are_sklearn_roc_points():
    pairs = tied_pairs()
    s, y = pooled(pairs)
    fpr, tpr = pooled_curve(pairs).roc()
    sk_fpr, sk_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    ours = {(round(a, 12), round(b, 12)) for a, b in zip(fpr, tpr)}
    theirs = {(round(a, 12), round(b, 12)) for a, b in zip(sk_fpr, sk_tpr)}
    assert ours <= theirs  # every vertex is an exact ROC point
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_negatives_streamed_in_chunks(monkeypatch):
    pairs = tied_pairs(n=3000, decimals=2)
    whole = pooled_curve(pairs)
    monkeypatch.setattr(curves, "_CHUNK", 7)
    chunked = pooled_curve(pairs)
    np.testing.assert_array_equal(whole.fp, chunked.fp)
    np.testing.assert_array_equal(whole.neg_ties, chunked.neg_ties)


def test_undefined_and_errors():
    c = pooled_curve([(np.array([0.1, 0.2]), np.array([False, False]))])
    assert not c.defined and math.isnan(c.auroc) and math.isnan(c.auprc)
    with pytest.raises(TypeError, match="sequence"):
        pooled_curve(iter(tied_pairs()))
    with pytest.raises(ValueError, match="NaN"):
        pooled_curve([(np.array([np.nan, 1.0]), np.array([True, False]))])


def test_thin_keeps_the_area():
    pairs = tied_pairs(n_volumes=4, n=50_000, decimals=6)
    c = pooled_curve(pairs)
    fpr, tpr = c.roc()
    x, y = thin(fpr, tpr)
    assert x.size < fpr.size / 10 and (x[0], y[0], x[-1], y[-1]) == (0, 0, 1, 1)
    assert np.trapezoid(y, x) == pytest.approx(c.auroc, abs=2e-3)
