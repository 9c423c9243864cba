"""Paired differences, Holm's correction and the p-value matrix against hand values and scipy."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from scipy import stats

from adbench.evaluation.stats import MIN_BOOTSTRAP_N, holm, paired_difference, pvalue_matrix


def keyed(values, prefix="s"):
    return {f"{prefix}{i:02d}": float(v) for i, v in enumerate(values)}


def test_paired_difference_matches_hand_computed_values():
    # d = a - b = [1, 2, 3, 4]: mean 2.5, s_d = sqrt(5/3), t_{0.975, 3} = 3.182446305284263
    a, b = keyed([3, 5, 7, 9]), keyed([2, 3, 4, 5])
    r = paired_difference(a, b)
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert r["n"] == 4 and r["mean_diff"] == pytest.approx(2.5)
    assert r["ci_t"] == pytest.approx((2.5 - half, 2.5 + half), rel=1e-12)
    assert r["ci_t"] == pytest.approx((0.4457397, 4.5542603), abs=1e-6)
    assert r["d_z"] == pytest.approx(2.5 / math.sqrt(5 / 3))
    assert r["p_ttest"] == pytest.approx(stats.ttest_rel([3, 5, 7, 9], [2, 3, 4, 5]).pvalue)
    # n = 4 < 10: no bootstrap CI, and the result says so
    assert all(math.isnan(x) for x in r["ci_bca"])
    assert f"< {MIN_BOOTSTRAP_N}: no bootstrap CI" in r["bca_note"]


def test_t_interval_matches_scipy_and_only_shared_finite_volumes_pair():
    rng = np.random.default_rng(3)
    x = rng.normal(0.7, 0.1, 15)
    y = x - rng.normal(0.05, 0.03, 15)
    a, b = keyed(x), keyed(y)
    a["s03"] = math.nan           # no pair for s03
    b["extra"] = 0.9              # only in b
    r = paired_difference(a, b)
    keep = np.arange(15) != 3
    d = (x - y)[keep]
    assert r["n"] == 14
    lo, hi = stats.t.interval(0.95, d.size - 1, loc=d.mean(), scale=stats.sem(d))
    assert r["ci_t"] == pytest.approx((lo, hi), rel=1e-12)
    # n >= 10: the BCa interval of scipy.stats.bootstrap on the differences, same seed
    gen = np.random.default_rng(0)
    seeded = ({"rng": gen} if "rng" in inspect.signature(stats.bootstrap).parameters
              else {"random_state": gen})           # scipy < 1.15
    ref = stats.bootstrap((d,), np.mean, method="BCa", n_resamples=9999,
                          **seeded).confidence_interval
    assert r["ci_bca"] == pytest.approx((ref.low, ref.high), rel=1e-12) and r["bca_note"] == ""
    assert r["ci_bca"][0] < d.mean() < r["ci_bca"][1]
    # sign: a - b; swapping the methods negates the difference and its interval
    s = paired_difference(b, a)
    assert s["mean_diff"] == pytest.approx(-r["mean_diff"])
    assert s["ci_t"] == pytest.approx((-hi, -lo), rel=1e-12)
    assert s["d_z"] == pytest.approx(-r["d_z"])


def test_constant_and_too_few_differences():
    r = paired_difference(keyed([0.5] * 12), keyed([0.4] * 12))
    assert r["ci_t"] == pytest.approx((0.1, 0.1)) and r["ci_bca"] == pytest.approx((0.1, 0.1))
    assert r["d_z"] == math.inf
    one = paired_difference({"a": 0.5}, {"a": 0.2})
    assert one["n"] == 1 and one["mean_diff"] == pytest.approx(0.3)
    assert math.isnan(one["ci_t"][0]) and "no CI" in one["bca_note"]


@pytest.mark.parametrize("p, expected", [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),  # m=4: 4·.005, 3·.01, 2·.03, max(.04, .06)
    ([0.3, 0.6, 0.01], [0.6, 0.6, 0.03]),
    ([0.6, 0.7], [1.0, 1.0]),                                # capped at 1
    ([0.02, math.nan, 0.04], [0.04, math.nan, 0.04]),        # NaN: untestable, not counted in m
    ([0.05], [0.05]),
])
def test_holm_hand_values(p, expected):
    np.testing.assert_allclose(holm(p), expected, rtol=1e-12)


def test_holm_agrees_with_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(1).uniform(0, 0.2, 9)
    np.testing.assert_allclose(holm(p), multitest.multipletests(p, method="holm")[1], rtol=1e-12)


def test_pvalue_matrix_is_the_pairwise_paired_t_test():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.5, 0.8, 8)
    vals = {"a": base, "b": base + rng.normal(0.02, 0.02, 8), "c": base - 0.1 + rng.normal(0, 0.05, 8)}
    names, mat = pvalue_matrix({k: keyed(v) for k, v in vals.items()})
    assert names == ["a", "b", "c"] and np.isnan(np.diag(mat)).all()
    np.testing.assert_array_equal(mat, mat.T)
    assert mat[0, 2] == pytest.approx(stats.ttest_rel(vals["a"], vals["c"]).pvalue)
    assert mat[1, 2] == pytest.approx(stats.ttest_rel(vals["b"], vals["c"]).pvalue)
