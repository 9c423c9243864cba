"""Paired statistics between methods evaluated on the same test volumes (architecture §6).

Inputs are per-volume metric values keyed by subject: ``{subject: value}`` per method, as read
from each run's per_volume.csv. Two methods are compared on the subjects they share where both
values are finite (a NaN volume has no value to pair). Tests:

* paired t-test, ``scipy.stats.ttest_rel`` (two-sided) — the paper's test (Table 1 caption);
* Wilcoxon signed-rank, ``scipy.stats.wilcoxon`` (two-sided) — no normality assumption;
* percentile bootstrap 95% CI of each mean (seeded, resampling volumes);
* the mean paired difference d̄ = mean(a_i - b_i) with its 95% Student-t interval
  d̄ ± t_{0.975, n-1} · s_d / √n, a BCa bootstrap interval of d̄ (``scipy.stats.bootstrap``,
  seeded, resampling the differences) when n ≥ :data:`MIN_BOOTSTRAP_N`, and the paired effect
  size Cohen's d_z = d̄ / s_d (:func:`paired_difference`);
* Holm's step-down correction over a family of comparisons (:func:`holm`);
* a pairwise matrix of paired t-test p-values (:func:`pvalue_matrix`).

Star rule (the paper's Table 1): a method is starred for a metric when it is better than the
best *other* method (highest mean among the others) with paired t-test p < 0.05 on their
shared volumes. "Better" = its paired mean difference on those volumes is > 0 (< 0 when lower
is better). At most one method per column can be starred.
"""
from __future__ import annotations

import inspect
import math
from typing import Mapping

import numpy as np
from scipy import stats as _st

__all__ = ["paired", "paired_test", "bootstrap_ci", "mean_ci", "star_rule", "ALPHA",
           "MIN_BOOTSTRAP_N", "paired_difference", "holm", "pvalue_matrix"]

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


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], *, level: float = 0.95,
                      n_resamples: int = 9999, seed: int = 0) -> dict:
    """The mean paired difference a - b over the shared finite volumes, with its intervals.

    With d_i = a_i - b_i (i = 1..n), s_d the std of d (ddof=1):

    * ``mean_diff`` = d̄; ``ci_t`` = d̄ ± t_{(1+level)/2, n-1} · s_d / √n (Student t);
    * ``ci_bca``: BCa bootstrap interval of d̄ (``scipy.stats.bootstrap`` on the differences,
      ``n_resamples``, generator seeded with ``seed``) when n ≥ :data:`MIN_BOOTSTRAP_N`, else
      (NaN, NaN) and ``bca_note`` says why no bootstrap CI is given;
    * ``d_z`` = d̄ / s_d (Cohen's d_z, paired; ±inf for a constant non-zero difference);
    * ``p_ttest``: two-sided paired t-test (:func:`paired_test`).

    A constant difference has a zero-width t-interval [d̄, d̄]. Fewer than two pairs give
    NaN everywhere but ``n`` (and ``mean_diff`` for one pair).
    """
    _, x, y = paired(a, b)
    d = x - y
    n = int(d.size)
    nan2 = (math.nan, math.nan)
    out = {"n": n, "mean_diff": float(d.mean()) if n else math.nan, "sd_diff": math.nan,
           "ci_t": nan2, "ci_bca": nan2, "bca_note": "", "d_z": math.nan,
           "p_ttest": paired_test(a, b)["p_ttest"], "level": level}
    if n < 2:
        out["bca_note"] = f"n = {n} < 2: no CI"
        return out
    m, sd = float(d.mean()), float(d.std(ddof=1))
    constant = not np.ptp(d) > 1e-12 * max(float(np.abs(d).max()), 1e-300)
    if constant:
        sd = 0.0
    out["sd_diff"] = sd
    half = float(_st.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    out["ci_t"] = (m - half, m + half)
    out["d_z"] = (m / sd if sd > 0 else (math.copysign(math.inf, m) if m else math.nan))
    if n < MIN_BOOTSTRAP_N:
        out["bca_note"] = f"n = {n} < {MIN_BOOTSTRAP_N}: no bootstrap CI"
    elif constant:
        out["ci_bca"] = (m, m)    # every resample has the same mean (BCa itself is undefined)
        out["bca_note"] = "constant difference"
    else:
        gen = np.random.default_rng(seed)
        # scipy >= 1.15 names the generator ``rng``; older releases ``random_state``
        seeded = ({"rng": gen} if "rng" in inspect.signature(_st.bootstrap).parameters
                  else {"random_state": gen})
        res = _st.bootstrap((d,), np.mean, confidence_level=level, n_resamples=n_resamples,
                            method="BCa", vectorized=True, **seeded)
        out["ci_bca"] = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    return out


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), same order as given.

    With the m finite p-values sorted ascending p_(1) ≤ … ≤ p_(m):
    p̃_(i) = min(1, max_{j ≤ i} (m - j + 1) · p_(j)). NaN entries (untestable comparisons)
    stay NaN and do not count in m. Reject H_(i) at level α when p̃_(i) < α.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if not m:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def pvalue_matrix(per_method: Mapping[str, Mapping[str, float]]) -> tuple[list[str], np.ndarray]:
    """(method names, (k, k) matrix) of two-sided paired t-test p-values between every pair
    of methods on their shared finite volumes (:func:`paired_test`); symmetric, NaN on the
    diagonal and where a pair is untestable. Not corrected for multiplicity."""
    names = list(per_method)
    k = len(names)
    mat = np.full((k, k), math.nan)
    for i in range(k):
        for j in range(i + 1, k):
            mat[i, j] = mat[j, i] = paired_test(per_method[names[i]], per_method[names[j]])["p_ttest"]
    return names, mat
