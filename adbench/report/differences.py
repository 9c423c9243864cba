"""Paired differences to the best method, for every cell of a leaderboard table.

In each column (dataset × metric) of a table the *reference* is the row with the best mean
(bold; the first in row order on a tie). Every other row r is compared with it on their shared
finite volumes (:func:`adbench.evaluation.stats.paired_difference`): the mean paired
difference Δ = mean_i(r_i − best_i) with its 95% Student-t interval, a BCa bootstrap interval
when n ≥ :data:`~adbench.evaluation.stats.MIN_BOOTSTRAP_N` (none below), Cohen's d_z and the
paired t-test p. The *family* for Holm's correction is every such comparison in the table (all
its datasets and metrics); :attr:`Difference.p_holm` is the adjusted p.

Also here: the pairwise p-value matrices of a leaderboard as CSV files (:func:`pvalue_csvs`).
Values are fractions; the printed text (:func:`diff_text`) is in percentage points.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

from adbench.evaluation.stats import MIN_BOOTSTRAP_N, holm, paired_difference, pvalue_matrix

__all__ = ["Difference", "add_differences", "diff_text", "pvalue_csvs", "pvalue_matrices", "slug",
           "DIFF_NOTE", "BEST_TEXT"]

BEST_TEXT = "best (reference)"
DIFF_NOTE = ("second line (Δ): the mean paired difference to the column's best method over the "
             "volumes both have, in percentage points, with its 95% t-interval [low, high]; "
             f"BCa: the 95% BCa bootstrap interval of that mean (scipy.stats.bootstrap, 9999 "
             f"resamples, seed 0), given only from n = {MIN_BOOTSTRAP_N} paired volumes on; "
             "p_Holm: paired t-test p, Holm-corrected over every comparison in this table; d_z: "
             "Cohen's d_z = mean / std (ddof=1) of the paired differences.")


@dataclass
class Difference:
    """One comparison: a row against its column's best row ``ref`` (values are fractions)."""

    ref: str
    n: int
    mean: float                    # mean paired difference (row − ref)
    ci_t: tuple[float, float]      # 95% Student-t interval of ``mean``
    ci_bca: tuple[float, float]    # 95% BCa bootstrap interval; NaN when n < MIN_BOOTSTRAP_N
    bca_note: str                  # why there is no BCa interval ("" when there is one)
    d_z: float                     # Cohen's d_z, paired
    p: float                       # two-sided paired t-test
    p_holm: float = math.nan       # ``p`` Holm-adjusted over the table's comparisons


def add_differences(t, *, seed: int = 0) -> None:
    """Set ``cell.diff`` on every non-best cell of table ``t`` (a :class:`~adbench.report.
    tables.Table` whose cells, bold and ``runs`` are filled in), then Holm-adjust its p's."""
    found: list[Difference] = []
    for ds in t.datasets:
        for m in t.metrics:
            rows = [r for r in t.rows if (r, ds, m) in t.cells]
            best = next((r for r in rows if t.cells[(r, ds, m)].best), None)
            if best is None:
                continue
            ref = t.runs[(best, ds)].values(m)
            for r in rows:
                if r == best:
                    continue
                res = paired_difference(t.runs[(r, ds)].values(m), ref, seed=seed)
                d = Difference(ref=best, n=res["n"], mean=res["mean_diff"], ci_t=res["ci_t"],
                               ci_bca=res["ci_bca"], bca_note=res["bca_note"], d_z=res["d_z"],
                               p=res["p_ttest"])
                t.cells[(r, ds, m)].diff = d
                found.append(d)
    for d, p in zip(found, holm([d.p for d in found])):
        d.p_holm = float(p)


def _pp(x: float) -> str:
    return f"{100 * x:+.2f}" if math.isfinite(x) else "n/a"


def diff_text(c) -> str:
    """The second line of a printed cell: ``Δ -1.20 [-2.31, -0.09]; BCa [-2.25, -0.12];
    p_Holm 0.031; d_z -0.80`` (percentage points), :data:`BEST_TEXT` for the best cell, ""
    where there is nothing to compare."""
    if c is None:
        return ""
    d = c.diff
    if d is None:
        return BEST_TEXT if c.best and math.isfinite(c.mean) else ""
    if d.n < 2:
        return f"Δ {_pp(d.mean)} (n = {d.n}: no CI)"
    s = f"Δ {_pp(d.mean)} [{_pp(d.ci_t[0])}, {_pp(d.ci_t[1])}]"
    if math.isfinite(d.ci_bca[0]):
        s += f"; BCa [{_pp(d.ci_bca[0])}, {_pp(d.ci_bca[1])}]"
    else:
        s += f"; n < {MIN_BOOTSTRAP_N}: no BCa" if d.n < MIN_BOOTSTRAP_N else f"; {d.bca_note}"
    p = f"{d.p_holm:.2g}" if math.isfinite(d.p_holm) else "n/a"
    dz = f"{d.d_z:+.2f}" if not math.isnan(d.d_z) else "n/a"
    return s + f"; p_Holm {p}; d_z {dz}"


def pvalue_matrices(lb):
    """Yield (table index from 1, table, dataset, metric, row names, (k, k) p matrix) of the
    paired t-test between every two rows of each column (uncorrected)."""
    for ti, t in enumerate(lb.tables, start=1):
        for ds in t.datasets:
            for m in t.metrics:
                per = {r: t.runs[(r, ds)].values(m) for r in t.rows if (r, ds) in t.runs}
                if len(per) < 2:
                    continue
                names, mat = pvalue_matrix(per)
                yield ti, t, ds, m, names, mat


def pvalue_csvs(lb) -> list[tuple[str, str]]:
    """(file name, CSV text) of each pairwise p-value matrix of a leaderboard:
    ``pvalues_t<i>_<dataset>_<metric>.csv``, a header ``method,<row 1>,<row 2>,...`` then one
    line per row; two-sided paired t-test on the shared finite volumes, uncorrected; ``nan``
    on the diagonal and for pairs that cannot be tested."""
    out = []
    for ti, _, ds, m, names, mat in pvalue_matrices(lb):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", *names])
        for i, name in enumerate(names):
            w.writerow([name, *(repr(float(x)) for x in mat[i])])
        out.append((f"pvalues_t{ti}_{slug(ds)}_{slug(m)}.csv", buf.getvalue()))
    return out


def slug(s: str) -> str:
    """``s`` with every character but letters, digits, - and _ replaced by _ (file names)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(s))
