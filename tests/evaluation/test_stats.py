"""Paired tests and the star rule on constructed data with known p-values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from adbench.evaluation.stats import bootstrap_ci, paired_test, star_rule

T_CRIT_9 = 2.2621571628  # two-sided 5% critical value of Student's t with 9 d.o.f. (tables)


def differences_with_t(t: float, n: int = 10) -> np.ndarray:
    """n differences whose one-sample t statistic is exactly t (mean t/sqrt(n), sample sd 1)."""
    e = np.linspace(-1, 1, n)
    e = (e - e.mean()) / e.std(ddof=1)
    return t / math.sqrt(n) + e


def make_methods(t: float):
    subj = [f"s{i:02d}" for i in range(10)]
    base = np.linspace(0.6, 0.8, 10)
    d = differences_with_t(t) * 0.01
    return {
        "ours": dict(zip(subj, base + d)),
        "best_other": dict(zip(subj, base)),
        "weak": dict(zip(subj, base - 0.2)),
    }


@pytest.mark.parametrize("t,starred", [(T_CRIT_9 * 1.001, True), (T_CRIT_9 * 0.999, False)])
def test_star_rule_at_the_known_threshold(t, starred):
    res = star_rule(make_methods(t))
    assert res["ours"]["best_other"] == "best_other"
    assert res["ours"]["p"] == pytest.approx(0.05, abs=2e-4)
    assert (res["ours"]["p"] < 0.05) is starred
    assert res["ours"]["starred"] is starred
    assert not res["best_other"]["starred"] and not res["weak"]["starred"]
    assert res["best_other"]["best_other"] == "ours"


def test_star_rule_lower_is_better_and_shared_volumes_only():
    m = make_methods(10.0)
    m["ours"]["extra"] = -5.0  # not shared: must not enter the paired test
    m["best_other"]["s03"] = math.nan  # NaN volumes have no pair
    res = star_rule(m)
    assert res["ours"]["starred"] and res["ours"]["n"] == 9
    flipped = star_rule({k: {s: -v for s, v in d.items()} for k, d in m.items()},
                        higher_is_better=False)
    assert flipped["ours"]["starred"]
    assert flipped["ours"]["p"] == pytest.approx(res["ours"]["p"])


def test_paired_test_known_values():
    a = {"x": 1.0, "y": 2.0, "z": 4.0, "w": 3.0}
    b = {"x": 0.5, "y": 2.5, "z": 1.0, "w": 2.0, "only_b": 9.0}
    r = paired_test(a, b)
    d = np.array([0.5, -0.5, 3.0, 1.0])  # w, x, y, z order does not matter for t
    t = d.mean() / (d.std(ddof=1) / 2)
    assert r["n"] == 4 and r["t"] == pytest.approx(t) and r["mean_diff"] == pytest.approx(1.0)
    # Exact Wilcoxon for n=4: |d| ranks 1.5,1.5,4,3 (ties at 0.5); W = min(R+, R-) = 1.5.
    assert r["w"] == pytest.approx(1.5)
    assert 0 < r["p_wilcoxon"] <= 1
    same = paired_test(a, a)
    assert math.isnan(same["p_ttest"]) and same["mean_diff"] == 0


def test_bootstrap_ci_is_seeded_and_covers_the_mean():
    v = np.random.default_rng(1).normal(0.7, 0.1, size=200)
    lo, hi = bootstrap_ci(v, seed=3)
    assert (lo, hi) == bootstrap_ci(v, seed=3)
    assert lo < v.mean() < hi
    se = v.std(ddof=1) / math.sqrt(v.size)  # normal approximation of the 95% CI width
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert all(math.isnan(x) for x in bootstrap_ci([0.5, math.nan]))
