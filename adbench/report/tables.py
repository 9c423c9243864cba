"""Leaderboards in the shape of the paper's Table 1: methods as rows, datasets x metrics as
columns, mean ± std in percent, a star for a significant win (paired t-test, p < 0.05, against
the best other method), the best mean in bold.

Runs are never mixed silently:

* runs whose pretrained weights differ (sha256, or source when no hash is known) go to
  separate tables, and the leaderboard carries a visible warning; runs without pretrained
  weights (e.g. ``zscore``) appear in every table, since no weights can disagree with theirs;
* runs evaluated under different metric definitions (region rule, slice rule, Dice variant)
  go to separate tables, with a warning.

Several runs of one method on one dataset (seeds, presets, training sets) become separate
rows, labelled by what differs. Two runs that agree on all of that (re-runs) keep the newest
and a warning says which was left out.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import numpy as np

from adbench.evaluation.stats import bootstrap_ci, star_rule
from adbench.rundir import RunRecord, definitions_key, weights_key

__all__ = ["Cell", "Table", "Leaderboard", "build_leaderboard", "render_markdown",
           "render_latex", "render_csv", "METRIC_LABELS", "DEFAULT_METRICS"]

DEFAULT_METRICS = ("auroc", "dice_max")
METRIC_LABELS = {"auroc": "AUROC", "dice_max": "⌈Dice⌉", "auprc": "AUPRC"}
_LATEX_METRIC = {"auroc": "AUROC", "dice_max": r"$\lceil$Dice$\rceil$", "auprc": "AUPRC"}


@dataclass
class Cell:
    """One (method, dataset, metric) entry; values are fractions (the renderers show percent)."""

    mean: float
    std: float
    n: int
    n_nan: int
    star: bool = False
    best: bool = False
    p: float = math.nan           # paired t-test vs best_other (drives the star)
    best_other: str | None = None
    p_wilcoxon: float = math.nan  # Wilcoxon signed-rank vs best_other (reported only)
    ci: tuple[float, float] = (math.nan, math.nan)  # bootstrap 95% CI of the mean (seed 0)


@dataclass
class Table:
    title: str
    weights: tuple
    definitions: dict | None
    datasets: list[str]
    metrics: list[str]
    rows: list[str]
    cells: dict[tuple[str, str, str], Cell]
    runs: dict[tuple[str, str], RunRecord] = field(default_factory=dict)  # (row, dataset) → run


@dataclass
class Leaderboard:
    tables: list[Table]
    warnings: list[str]
    metrics: list[str]


def _describe_weights(key: tuple) -> str:
    if not key:
        return "no pretrained weights"
    return "; ".join(f"{b}: {i[:19]}" + ("…" if len(i) > 19 else "") for b, i in key)


def _row_keys(runs: list[RunRecord]) -> dict[int, tuple]:
    # A model trained on the test dataset's own train split lines up across datasets.
    return {id(r): (r.method, "own" if r.train_on == r.dataset else r.train_on, str(r.preset),
                    str(r.seed)) for r in runs}


SMOKE = "smoke"
SMOKE_LABEL = "smoke: pipeline check"


def _labels(keys: list[tuple]) -> dict[tuple, str]:
    """Row label = method name plus only the attributes that differ among its rows."""
    out = {}
    for k in keys:
        same = [o for o in keys if o[0] == k[0]]
        parts = [k[0]]
        for i, name in ((1, "train: "), (2, "preset "), (3, "seed ")):
            if i == 2 and k[i] == SMOKE:
                parts.append(SMOKE_LABEL)   # always shown: smoke numbers are not results
            elif len({o[i] for o in same}) > 1:
                parts.append(f"{name}{k[i]}")
        out[k] = parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")
    return out


def build_leaderboard(runs: list[RunRecord], metrics=DEFAULT_METRICS, *,
                      alpha: float = 0.05) -> Leaderboard:
    """Group runs into comparable tables and compute cells, stars and bold."""
    metrics = list(metrics)
    warnings: list[str] = []
    # Deduplicate re-runs: the same (dataset, method, train_on, preset, seed) keeps the newest.
    newest: dict[tuple, RunRecord] = {}
    for r in runs:
        key = (r.dataset, *_row_keys([r])[id(r)])
        old = newest.get(key)
        if old is not None:
            keep, drop = sorted([old, r], key=lambda x: (x.path.stat().st_mtime, str(x.path)))[::-1]
            warnings.append(f"{drop.path}: same method, dataset, training set, preset and seed as "
                            f"{keep.path}; only the newer run is shown")
            newest[key] = keep
        else:
            newest[key] = r
    runs = list(newest.values())
    n_smoke = sum(r.preset == SMOKE for r in runs)
    if n_smoke:
        warnings.append(f"{n_smoke} run(s) at preset 'smoke' are pipeline checks (tiny data, few "
                        "steps, random weights): their numbers are not results")

    by_defs: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_defs.setdefault(definitions_key(r.definitions), []).append(r)
    if len(by_defs) > 1:
        warnings.append(f"runs use {len(by_defs)} different metric definitions (region/slice rule, "
                        "Dice variant); they are shown in separate tables and must not be compared")
    tables: list[Table] = []
    weight_groups_seen = set()
    for dkey, druns in by_defs.items():
        wkeys = sorted({weights_key(r.weights) for r in druns} - {()})
        groups = [[r for r in druns if weights_key(r.weights) in (wk, ())] for wk in wkeys] or [druns]
        weight_groups_seen.update(wkeys)
        for wk, group in zip(wkeys or [()], groups):
            tables.append(_table(group, metrics, wk, alpha))
    if len(weight_groups_seen) > 1:
        warnings.append("WARNING: runs used different pretrained weights ("
                        + " | ".join(_describe_weights(k) for k in sorted(weight_groups_seen))
                        + "); they are shown in separate tables and must not be compared")
    for t in tables:
        if t.definitions is None:
            warnings.append(f"{t.title}: these runs recorded no metric definitions "
                            "(written by an older adbench?); compare with care")
    for i, t in enumerate(tables):
        t.title = f"Table {i + 1}" + (f" — weights: {_describe_weights(t.weights)}"
                                      if len(tables) > 1 else "")
    return Leaderboard(tables=tables, warnings=warnings, metrics=metrics)


def _table(runs: list[RunRecord], metrics: list[str], wkey: tuple, alpha: float) -> Table:
    keys = _row_keys(runs)
    labels = _labels(sorted(set(keys.values())))
    rows = sorted(set(labels.values()), key=str.lower)
    datasets = sorted({r.dataset for r in runs}, key=str.lower)
    placed = {(labels[keys[id(r)]], r.dataset): r for r in runs}
    cells: dict[tuple[str, str, str], Cell] = {}
    for ds in datasets:
        for m in metrics:
            col = {row: placed[(row, ds)].values(m) for row in rows if (row, ds) in placed}
            stars = star_rule(col, alpha=alpha)
            for row, vals in col.items():
                v = np.array(list(vals.values()), dtype=np.float64)
                f = v[np.isfinite(v)]
                cells[(row, ds, m)] = Cell(
                    mean=float(f.mean()) if f.size else math.nan,
                    std=float(f.std(ddof=1)) if f.size > 1 else math.nan,
                    n=int(f.size), n_nan=int(v.size - f.size), star=stars[row]["starred"],
                    p=stars[row]["p"], best_other=stars[row]["best_other"],
                    p_wilcoxon=stars[row]["p_wilcoxon"], ci=bootstrap_ci(f, seed=0))
            means = {row: cells[(row, ds, m)].mean for row in col}
            finite = [x for x in means.values() if math.isfinite(x)]
            if finite:
                top = max(finite)
                for row, x in means.items():
                    cells[(row, ds, m)].best = x == top
    defs = runs[0].definitions if runs else None
    return Table(title="", weights=wkey, definitions=defs, datasets=datasets, metrics=metrics,
                 rows=rows, cells=cells, runs=placed)


def fmt_cell(c: Cell | None) -> str:
    """"89.43 ± 7.03" in percent (no markup); "–" when absent, "n/a" when all NaN."""
    if c is None:
        return "–"
    if not math.isfinite(c.mean):
        return "n/a"
    s = f"{100 * c.mean:.2f}"
    if math.isfinite(c.std):
        s += f" ± {100 * c.std:.2f}"
    return s


def _nan_note(c: Cell | None) -> str:
    return "†" if c is not None and c.n_nan else ""


def _footnotes(lb: Leaderboard, t: Table) -> list[str]:
    notes = ["mean ± std (ddof=1) over test volumes, in percent; * = better than the best other "
             "method with paired t-test p < 0.05; bold = best mean."]
    nan = [(r, d, m, c.n_nan) for (r, d, m), c in t.cells.items() if c.n_nan]
    if nan:
        notes.append("† volumes without both classes in the region (NaN) excluded from that mean: "
                     + ", ".join(f"{r}/{d}/{m}: {k}" for r, d, m, k in nan))
    if t.definitions:
        d = t.definitions
        notes.append(f"region: {d.get('region_rule')}; slices: {d.get('slice_rule')}; "
                     f"⌈Dice⌉: {d.get('dice_variant')}")
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
        out.append("")
        out.extend(f"- {n}" for n in _footnotes(lb, t))
        out.append("")
    return "\n".join(out)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "†": r"$^\dagger$", "⌈": r"$\lceil$", "⌉": r"$\rceil$", "±": r"$\pm$", "–": "--",
        "—": "---", "…": r"\dots{}"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def _latex_cell(c: Cell | None) -> str:
    if c is None or not math.isfinite(c.mean):
        return _tex(fmt_cell(c))
    body = f"{100 * c.mean:.2f}" + (f" \\pm {100 * c.std:.2f}" if math.isfinite(c.std) else "")
    if c.best:
        body = rf"\mathbf{{{body}}}"
    sup = ("*" if c.star else "") + (r"\dagger" if c.n_nan else "")
    return f"${body}" + (f"^{{{sup}}}" if sup else "") + "$"


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
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        out.extend("% " + n for n in _footnotes(lb, t))
        out.append(r"\end{table}")
        out.append("")
    return "\n".join(out)


def render_csv(lb: Leaderboard) -> str:
    """Long format, one line per (table, method, dataset, metric); values as fractions."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "method", "dataset", "metric", "mean", "std", "ci95_low", "ci95_high", "n",
                "n_nan", "star", "best", "best_other", "p_ttest_vs_best_other",
                "p_wilcoxon_vs_best_other", "weights", "slice_rule", "run"])
    for t in lb.tables:
        for row in t.rows:
            for d in t.datasets:
                for m in t.metrics:
                    c = t.cells.get((row, d, m))
                    if c is None:
                        continue
                    run = t.runs[(row, d)]
                    w.writerow([t.title, row, d, m, repr(c.mean), repr(c.std), repr(c.ci[0]),
                                repr(c.ci[1]), c.n, c.n_nan, int(c.star), int(c.best),
                                c.best_other or "", repr(c.p), repr(c.p_wilcoxon),
                                _describe_weights(t.weights),
                                (t.definitions or {}).get("slice_rule", ""), str(run.path)])
    return buf.getvalue()
