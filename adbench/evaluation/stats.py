"""Paired statistics between methods evaluated on the same test volumes (architecture §6).

Inputs are per-volume metric values keyed by subject: ``{subject: value}`` per method, as read
from each run's per_volume.csv. Two methods are compared on the subjects they share where both
values are finite (a NaN volume has no value to pair). Tests:

* paired t-test, ``scipy.stats.ttest_rel`` (two-sided) — the paper's test (Table 1 caption);
* Wilcoxon signed-rank, ``scipy.stats.wilcoxon`` (two-sided) — no normality assumption;
* percentile bootstrap 95% CI of each mean (seeded, resampling volumes).

Star rule (the paper's Table 1): a method is starred for a metric when it is better than the
best *other* method (highest mean among the others) with paired t-test p < 0.05 on their
shared volumes. "Better" = its paired mean difference on those volumes is > 0 (< 0 when lower
is better). At most one method per column can be starred.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from scipy import stats as _st

__all__ = ["paired", "paired_test", "bootstrap_ci", "mean_ci", "star_rule", "ALPHA",
           "MIN_BOOTSTRAP_N"]

ALPHA = 0.05


def paired(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(shared subjects sorted, values of a, values of b) where both values are finite."""
    subjects = sorted(s for s in a.keys() & b.keys()
                      if math.isfinite(float(a[s])) and math.isfinite(float(b[s])))
    return (subjects, np.array([float(a[s]) for s in subjects]),
            np.array([float(b[s]) for s in subjects]))


def paired_test(a: Mapping[str, float], b: Mapping[str, float]) -> dict:
    """Paired comparison of method a against method b on their shared finite volumes.

    Returns {"n", "mean_a", "mean_b", "mean_diff" (a - b), "t", "p_ttest", "w", "p_wilcoxon"};
    statistics are NaN when undefined (n < 2, or all differences zero).
    """
    subjects, x, y = paired(a, b)
    n = len(subjects)
    out = {"n": n, "mean_a": float(x.mean()) if n else math.nan,
           "mean_b": float(y.mean()) if n else math.nan,
           "mean_diff": float((x - y).mean()) if n else math.nan,
           "t": math.nan, "p_ttest": math.nan, "w": math.nan, "p_wilcoxon": math.nan}
    d = x - y
    if n < 2 or not np.any(d != 0):
        return out
    # A constant non-zero difference (up to rounding) has zero variance: t is infinite.
    if np.ptp(d) > 1e-12 * np.abs(d).max():
        res = _st.ttest_rel(x, y)
        out["t"], out["p_ttest"] = float(res.statistic), float(res.pvalue)
    else:
        out["t"], out["p_ttest"] = math.copysign(math.inf, d[0]), 0.0
    w = _st.wilcoxon(x, y)
    out["w"], out["p_wilcoxon"] = float(w.statistic), float(w.pvalue)
    return out


def bootstrap_ci(values, *, level: float = 0.95, n_boot: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (NaN ignored), seeded.

    values: 1-D per-volume metric values. (NaN, NaN) with fewer than two finite values.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // v.size)  # bound the memory of the resampling index
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        means[start:start + k] = v[rng.integers(0, v.size, size=(k, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


#: below this many finite volumes a percentile bootstrap CI of the mean undercovers badly
#: (with 3 volumes it is about [min, max] of the values): :func:`mean_ci` gives a t-interval.
MIN_BOOTSTRAP_N = 10


def mean_ci(values, *, level: float = 0.95, seed: int = 0) -> tuple[float, float, str]:
    """(low, high, kind) of the mean of ``values`` (NaN ignored): the percentile bootstrap
    ("bootstrap") from :data:`MIN_BOOTSTRAP_N` finite values on, a Student-t interval ("t")
    below, and (NaN, NaN, "none") with fewer than two."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return math.nan, math.nan, "none"
    if v.size >= MIN_BOOTSTRAP_N:
        return (*bootstrap_ci(v, level=level, seed=seed), "bootstrap")
    from scipy.stats import t as student_t
    half = float(student_t.ppf((1 + level) / 2, v.size - 1)) * float(v.std(ddof=1)) / math.sqrt(v.size)
    m = float(v.mean())
    return m - half, m + half, "t"


def star_rule(per_method: Mapping[str, Mapping[str, float]], *, alpha: float = ALPHA,
              higher_is_better: bool = True) -> dict[str, dict]:
    """Apply the paper's star rule to one metric column.

    per_method: method → {subject: value}. Returns method → {"starred": bool, "best_other":
    name or None, "p": paired t-test p-value against it (NaN if untestable), "p_wilcoxon":
    Wilcoxon signed-rank p-value against it (reported, not used for the star), "n": shared
    volumes, "mean_diff": paired mean difference (method - best other)}. The best other method
    is the one with the highest (lowest, if not ``higher_is_better``) mean over its own finite
    volumes.
    """
    sign = 1.0 if higher_is_better else -1.0
    means = {}
    for m, vals in per_method.items():
        v = np.array([float(x) for x in vals.values()], dtype=np.float64)
        v = v[np.isfinite(v)]
        means[m] = float(v.mean()) if v.size else math.nan
    out = {}
    for m in per_method:
        others = [o for o in per_method if o != m and math.isfinite(means[o])]
        if not others:
            out[m] = {"starred": False, "best_other": None, "p": math.nan,
                      "p_wilcoxon": math.nan, "n": 0, "mean_diff": math.nan}
            continue
        best = max(others, key=lambda o: sign * means[o])
        res = paired_test(per_method[m], per_method[best])
        better = math.isfinite(res["mean_diff"]) and sign * res["mean_diff"] > 0
        p = res["p_ttest"]
        out[m] = {"starred": bool(better and math.isfinite(p) and p < alpha), "best_other": best,
                  "p": p, "p_wilcoxon": res["p_wilcoxon"], "n": res["n"],
                  "mean_diff": res["mean_diff"]}
    return out
