"""Metrics against independent oracles: sklearn, brute force over all thresholds, hypothesis."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from adbench.evaluation import metrics as M


def brute_dice(scores, labels):
    """Dice at every distinct score as threshold (plus +inf), by direct comparison."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    best, best_t = 0.0, math.inf
    for t in np.unique(scores)[::-1]:  # high to low: ties resolved to the largest threshold
        pred = scores >= t
        d = 2 * np.sum(pred & labels) / (pred.sum() + labels.sum())
        if d > best:
            best, best_t = d, t
    return best, best_t


def random_case(rng, n, n_levels=None):
    labels = rng.random(n) < rng.uniform(0.05, 0.6)
    labels[0], labels[1] = True, False
    scores = rng.normal(size=n) + 1.5 * labels
    if n_levels:  # heavy ties
        scores = np.round(scores * n_levels / 4) / n_levels
    return scores.astype(np.float32), labels


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 3, 20])
def test_against_sklearn_and_brute_force(seed, levels):
    rng = np.random.default_rng(seed)
    scores, labels = random_case(rng, int(rng.integers(20, 3000)), levels)
    assert M.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert M.auprc(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12)
    d, t = M.dice_max_threshold(scores, labels)
    bd, bt = brute_dice(scores, labels)
    assert d == pytest.approx(bd, abs=1e-12)
    assert t == bt
    assert M.dice_max(scores, labels) == d


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=60))
def test_property_ties(pairs):
    """Small integer scores: almost every voxel ties with others."""
    scores = np.array([p[0] for p in pairs], dtype=np.float64)
    labels = np.array([p[1] for p in pairs])
    if labels.all() or not labels.any():
        assert math.isnan(M.auroc(scores, labels))
        assert math.isnan(M.dice_max(scores, labels))
        assert math.isnan(M.auprc(scores, labels))
        return
    assert M.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert M.auprc(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12)
    assert M.dice_max(scores, labels) == pytest.approx(brute_dice(scores, labels)[0], abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.01, 100))
def test_property_invariant_to_monotone_transform(seed, scale):
    rng = np.random.default_rng(seed)
    scores, labels = random_case(rng, 200, 10)
    s64 = scores.astype(np.float64)
    moved = np.exp(s64) * scale  # strictly increasing: every metric depends only on the order
    for f in (M.auroc, M.dice_max, M.auprc):
        assert f(moved, labels) == pytest.approx(f(s64, labels), abs=1e-12)
    # Reversing the order turns AUROC into 1 - AUROC (ties stay ties).
    assert M.auroc(-s64, labels) == pytest.approx(1 - M.auroc(s64, labels), abs=1e-12)


def test_known_values():
    assert M.auroc([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == 1.0
    assert M.auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5  # all tied: a diagonal ROC
    assert M.dice_max([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == 1.0
    # Tie between one lesion voxel and one healthy voxel at the top: both enter together.
    assert M.dice_max([5, 5, 1], [1, 0, 0]) == pytest.approx(2 / 3)
    assert M.dice_max_threshold([0.2, 0.9, 0.5], [1, 1, 0]) == (pytest.approx(0.8), 0.2)


def test_one_class_gives_nan_and_bad_input_raises():
    for f in (M.auroc, M.dice_max, M.auprc):
        assert math.isnan(f([0.1, 0.2], [0, 0]))
        assert math.isnan(f([0.1, 0.2], [1, 1]))
    with pytest.raises(ValueError, match="shape"):
        M.auroc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        M.auroc([np.nan, 0.2], [0, 1])
    with pytest.raises(ValueError, match="binary"):
        M.auroc([0.1, 0.2], [0, 2])


@pytest.mark.parametrize("seed", range(3))
def test_pooled_dice_equals_concatenation(seed):
    rng = np.random.default_rng(seed)
    pairs = [random_case(rng, int(rng.integers(5, 400)), 8) for _ in range(7)]
    pairs.append((np.zeros(10, np.float32), np.zeros(10, bool)))  # a volume without lesion
    d, t = M.pooled_dice_max(pairs)
    bd, bt = brute_dice(np.concatenate([p[0] for p in pairs]),
                        np.concatenate([p[1] for p in pairs]))
    assert d == pytest.approx(bd, abs=1e-12)
    assert t == bt
    with pytest.raises(TypeError, match="sequence"):
        M.pooled_dice_max(iter(pairs))
    assert all(math.isnan(v) for v in M.pooled_dice_max([pairs[-1]]))


def test_slice_scores_and_auroc():
    rng = np.random.default_rng(0)
    h, w, z = 12, 10, 8
    brain = np.zeros((h, w, z), bool)
    brain[2:10, 2:8, 1:7] = True  # slices 0 and 7 hold no brain: excluded
    lesion = np.zeros_like(brain)
    lesion[4:6, 4:6, 3:5] = True
    amap = rng.random((h, w, z)) + 5 * lesion
    amap[~brain] = 1e3  # outside the brain: must not influence any slice score
    s, y, zs = M.slice_scores(amap, lesion, brain)
    assert zs.tolist() == [1, 2, 3, 4, 5, 6]
    assert y.tolist() == [False, False, True, True, False, False]
    expected = [np.percentile(amap[:, :, k][brain[:, :, k]], 99) for k in zs]
    np.testing.assert_allclose(s, expected)
    smax, _, _ = M.slice_scores(amap, lesion, brain, reduction="max")
    np.testing.assert_allclose(smax, [amap[:, :, k][brain[:, :, k]].max() for k in zs])
    assert M.slice_auroc(s, y) == roc_auc_score(y, s) == 1.0
    with pytest.raises(ValueError, match="reduction"):
        M.slice_scores(amap, lesion, brain, reduction="median")


def test_summarize_counts_nan_and_uses_ddof1():
    rows = [{"auroc": 0.9, "dice_max": 0.5}, {"auroc": 0.7, "dice_max": float("nan")},
            {"auroc": 0.8, "dice_max": 0.3}]
    s = M.summarize(rows, metrics=("auroc", "dice_max"))
    assert s["auroc_mean"] == pytest.approx(0.8)
    assert s["auroc_std"] == pytest.approx(np.std([0.9, 0.7, 0.8], ddof=1))
    assert (s["auroc_n"], s["auroc_n_nan"]) == (3, 0)
    assert s["dice_max_mean"] == pytest.approx(0.4)
    assert s["dice_max_std"] == pytest.approx(np.std([0.5, 0.3], ddof=1))
    assert (s["dice_max_n"], s["dice_max_n_nan"]) == (2, 1)
    one = M.summarize([{"auroc": 0.5}], metrics=("auroc",))
    assert one["auroc_mean"] == 0.5 and math.isnan(one["auroc_std"])
