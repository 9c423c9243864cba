"""Leaderboard renderers: Markdown, LaTeX (booktabs) and long-format CSV.

A printed cell is ``mean ± std`` in percent (``*`` star, bold best, ``†`` NaN volumes left
out); under each method's line a second line (``↳ Δ to best``) gives, per cell, the paired
difference to the column's best method with its 95% t-interval, the BCa bootstrap interval
(from n ≥ 10), the Holm-adjusted p and Cohen's d_z (:func:`adbench.report.differences.
diff_text`), so the intervals are in print, not only in the HTML tooltips. The CSV holds the
same numbers as fractions in columns of their own.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re

from adbench.report.differences import DIFF_NOTE, diff_text
from adbench.report.identity import UNSET, format_item, key_name
from adbench.report.tables import (_LATEX_METRIC, METRIC_LABELS, Cell, Leaderboard, Table,
                                   _describe_weights)

__all__ = ["fmt_cell", "render_markdown", "render_latex", "render_csv", "DIFF_LABEL"]

DIFF_LABEL = "↳ Δ to best"


def _has_diffs(t: Table) -> bool:
    return any(c.diff is not None for c in t.cells.values())


def _diff_line(t: Table, row: str) -> list[str]:
    return [diff_text(t.cells.get((row, d, m))) for d in t.datasets for m in t.metrics]


def fmt_cell(c: Cell | None) -> str:
    """"89.43 ± 7.03" in percent (no markup), "89.43 ± 7.03 (3 seeds, ±0.40)" for a row of
    several seeds; "–" when absent, "n/a" when all NaN."""
    if c is None:
        return "–"
    if not math.isfinite(c.mean):
        return "n/a"
    s = f"{100 * c.mean:.2f}"
    if math.isfinite(c.std):
        s += f" ± {100 * c.std:.2f}"
    return s + _seeds_note(c)


def _seeds_note(c: Cell) -> str:
    if c.n_seeds < 2:
        return ""
    spread = f", ±{100 * c.seed_std:.2f}" if math.isfinite(c.seed_std) else ""
    return f" ({c.n_seeds} seeds{spread})"


def _nan_note(c: Cell | None) -> str:
    return "†" if c is not None and c.n_nan else ""


def _footnotes(lb: Leaderboard, t: Table) -> list[str]:
    notes = ["mean ± std (ddof=1) over test volumes, in percent; * = better than the best other "
             "method with paired t-test p < 0.05; bold = best mean."]
    if any(c.n_seeds > 1 for c in t.cells.values()):
        notes.append("(k seeds, ±s): the row's k runs differ only in seed; each volume's value is "
                     "its mean over the seeds, mean ± std are over those volumes (the stars test "
                     "them), and ±s is the std (ddof=1) over seeds of each seed's mean over the "
                     "same volumes.")
    full = [f"{row}: " + ", ".join(format_item(k, v) for k, v in t.differs[row])
            for row in t.rows if t.shortened.get(row)]
    if full:
        notes.append("rows whose label is shortened differ in: " + "; ".join(full))
    nan = [(r, d, m, c.n_nan) for (r, d, m), c in t.cells.items() if c.n_nan]
    if nan:
        notes.append("† volumes without both classes in the region (NaN) excluded from that mean: "
                     + ", ".join(f"{r}/{d}/{m}: {k}" for r, d, m, k in nan))
    if t.definitions:
        d = t.definitions
        notes.append(f"region: {d.get('region_rule')}; slices: {d.get('slice_rule')}; "
                     f"⌈Dice⌉: {d.get('dice_variant')}")
    if _has_diffs(t):
        notes.append(DIFF_NOTE)
    notes.append(f"weights: {_describe_weights(t.weights)}")
    return notes


def render_markdown(lb: Leaderboard) -> str:
    out = [f"> **{w}**\n" for w in lb.warnings]
    for t in lb.tables:
        out.append(f"### {t.title}\n")
        head = ["Method"] + [f"{d} {METRIC_LABELS.get(m, m)}" for d in t.datasets for m in t.metrics]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        for row in t.rows:
            cells = []
            for d in t.datasets:
                for m in t.metrics:
                    c = t.cells.get((row, d, m))
                    s = fmt_cell(c) + ("\\*" if c and c.star else "") + _nan_note(c)
                    cells.append(f"**{s}**" if c and c.best else s)
            out.append("| " + " | ".join([row.replace("|", "\\|")] + cells) + " |")
            if _has_diffs(t):
                out.append("| " + " | ".join([DIFF_LABEL] + _diff_line(t, row)) + " |")
        out.append("")
        out.extend(f"- {n}" for n in _footnotes(lb, t))
        out.append("")
    return "\n".join(out)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "†": r"$^\dagger$", "⌈": r"$\lceil$", "⌉": r"$\rceil$", "±": r"$\pm$", "–": "--",
        "—": "---", "…": r"\dots{}", "Δ": r"$\Delta$", "<": r"$<$", ">": r"$>$", "≥": r"$\geq$"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def _tex_signed(s: str) -> str:
    """:func:`_tex`, with the sign of a number as a math minus or plus (not a hyphen)."""
    return re.sub(r"([+-])(?=\d)", r"$\1$", _tex(s))


def _latex_cell(c: Cell | None) -> str:
    if c is None or not math.isfinite(c.mean):
        return _tex(fmt_cell(c))
    body = f"{100 * c.mean:.2f}" + (f" \\pm {100 * c.std:.2f}" if math.isfinite(c.std) else "")
    if c.best:
        body = rf"\mathbf{{{body}}}"
    sup = ("*" if c.star else "") + (r"\dagger" if c.n_nan else "")
    seeds = _seeds_note(c)
    return (f"${body}" + (f"^{{{sup}}}" if sup else "") + "$"
            + (rf"\,{{\scriptsize{_tex(seeds)}}}" if seeds else ""))


def render_latex(lb: Leaderboard) -> str:
    """booktabs tables; needs \\usepackage{booktabs} (and amsmath for \\lceil)."""
    out = [f"% {w}" for w in lb.warnings]
    for t in lb.tables:
        k = len(t.metrics)
        out.append(r"\begin{table}[t]\centering")
        out.append(r"\caption{" + _tex(t.title) + "}")
        out.append(r"\begin{tabular}{l" + "c" * (k * len(t.datasets)) + "}")
        out.append(r"\toprule")
        out.append("Method & " + " & ".join(rf"\multicolumn{{{k}}}{{c}}{{{_tex(d)}}}"
                                             for d in t.datasets) + r" \\")
        spans = [f"\\cmidrule(lr){{{2 + i * k}-{1 + (i + 1) * k}}}" for i in range(len(t.datasets))]
        out.append(" ".join(spans))
        out.append(" & " + " & ".join(_LATEX_METRIC.get(m, _tex(m)) for _ in t.datasets
                                     for m in t.metrics) + r" \\")
        out.append(r"\midrule")
        for row in t.rows:
            cells = []
            for d in t.datasets:
                for m in t.metrics:
                    c = t.cells.get((row, d, m))
                    cells.append(_latex_cell(c))
            out.append(_tex(row) + " & " + " & ".join(cells) + r" \\")
            if _has_diffs(t):
                out.append(r"\quad{\scriptsize " + _tex(DIFF_LABEL[2:]) + "} & " + " & ".join(
                    (r"{\scriptsize " + _tex_signed(x) + "}") if x else ""
                    for x in _diff_line(t, row))
                    + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        out.extend("% " + n for n in _footnotes(lb, t))
        out.append(r"\end{table}")
        out.append("")
    return "\n".join(out)


def render_csv(lb: Leaderboard) -> str:
    """Long format, one line per (table, row, dataset, metric); values as fractions.

    ``differs``: JSON of the config keys whose values differ among the method's rows (``--set``
    names; a key the run lacks is left out). ``seeds``, ``runs``: JSON lists of the seeds and
    run folders the row aggregates; ``seed_std``: std over seeds of the per-seed means.
    ``ref_best`` .. ``cohen_dz_vs_best``: the paired difference to the column's best row
    (:class:`adbench.report.differences.Difference`; empty for the best row itself)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "method", "dataset", "metric", "mean", "std", "ci95_low", "ci95_high",
                "ci95_kind", "n",
                "n_nan", "star", "best", "best_other", "p_ttest_vs_best_other",
                "p_wilcoxon_vs_best_other", "weights", "slice_rule", "n_seeds", "seed_std",
                "seeds", "differs", "runs", "ref_best", "diff_vs_best", "diff_ci95_t_low",
                "diff_ci95_t_high", "diff_ci95_bca_low", "diff_ci95_bca_high", "diff_bca_note",
                "n_paired", "p_ttest_vs_best", "p_holm_vs_best", "cohen_dz_vs_best"])
    for t in lb.tables:
        for row in t.rows:
            differs = json.dumps({key_name(k): v for k, v in t.differs.get(row, [])
                                  if v is not UNSET}, default=str)
            for d in t.datasets:
                for m in t.metrics:
                    c = t.cells.get((row, d, m))
                    if c is None:
                        continue
                    members = t.members[(row, d)]
                    w.writerow([t.title, row, d, m, repr(c.mean), repr(c.std), repr(c.ci[0]),
                                repr(c.ci[1]), c.ci_kind, c.n, c.n_nan, int(c.star), int(c.best),
                                c.best_other or "", repr(c.p), repr(c.p_wilcoxon),
                                _describe_weights(t.weights),
                                (t.definitions or {}).get("slice_rule", ""), c.n_seeds,
                                repr(c.seed_std),
                                json.dumps([r.seed for r in members], default=str), differs,
                                json.dumps([str(r.path) for r in members]), *_diff_csv(c)])
    return buf.getvalue()


def _diff_csv(c: Cell) -> list:
    d = c.diff
    if d is None:
        return [""] * 11
    return [d.ref, repr(d.mean), repr(d.ci_t[0]), repr(d.ci_t[1]), repr(d.ci_bca[0]),
            repr(d.ci_bca[1]), d.bca_note, d.n, repr(d.p), repr(d.p_holm), repr(d.d_z)]
