"""Leaderboards in the shape of the paper's Table 1: methods as rows, datasets x metrics as
columns, mean ± std in percent, a star for a significant win (paired t-test, p < 0.05, against
the best other method), the best mean in bold.

Runs are never mixed silently:

* runs that used different weights for one backbone (sha256, or source when no hash is
  known) go to separate tables, and the leaderboard carries a visible warning; different
  backbones (VGG16 for one method, CLIP for another) share a table, and runs without
  pretrained weights (e.g. ``zscore``) appear in every table, since no weights can disagree
  with theirs;
* runs evaluated under different metric definitions (region rule, slice rule, Dice variant)
  go to separate tables, with a warning;
* runs of one method whose resolved configs differ (:mod:`adbench.report.identity`: the
  whole config.yaml, ``--set`` overrides included, less what does not change numbers) are
  separate rows, labelled by what differs: ``scrps (l2=6)``, ``scrps (l2=9)``.

Runs of one identity with different seeds are one row: each test volume's value is its mean
over the seeds, the cell is mean ± std over those volumes (the stars test them), and the cell
also shows the spread over seeds. Two runs that agree on identity and seed (re-runs) keep the
newest, and a warning says which was left out.

Every table is built from the tidy per-volume frame of :func:`adbench.report.collect.collect`
(a list of :class:`~adbench.rundir.RunRecord` is turned into one first), so a frame filtered
by the user gives the table of what is left. Each cell also carries its paired difference to
the column's best row, with intervals, an effect size and Holm-adjusted p
(:mod:`adbench.report.differences`). The renderers are in :mod:`adbench.report.render`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from adbench.evaluation.stats import mean_ci, star_rule
from adbench.report.differences import add_differences
from adbench.report.identity import (SMOKE, SMOKE_LABEL, UNSET, identity, identity_key,
                                     key_name, natural_key, row_keys, row_labels)
from adbench.rundir import RunRecord, definitions_key, weights_key

__all__ = ["Cell", "Table", "Leaderboard", "build_leaderboard", "render_markdown",
           "render_latex", "render_csv", "fmt_cell", "METRIC_LABELS", "DEFAULT_METRICS", "SMOKE",
           "THRESHOLD_METRICS",
           "SMOKE_LABEL"]

DEFAULT_METRICS = ("auroc", "dice_max")
#: Dice at the thresholds set on healthy validation data (1 % and 5 % false-positive rate)
THRESHOLD_METRICS = ("dice_fpr1", "dice_fpr5")
METRIC_LABELS = {"auroc": "AUROC", "dice_max": "⌈Dice⌉", "auprc": "AUPRC",
                 "dice_fpr1": "Dice@FPR1%", "dice_fpr5": "Dice@FPR5%"}
_LATEX_METRIC = {"auroc": "AUROC", "dice_max": r"$\lceil$Dice$\rceil$", "auprc": "AUPRC",
                 "dice_fpr1": r"Dice@FPR1\%", "dice_fpr5": r"Dice@FPR5\%"}


@dataclass
class Cell:
    """One (row, dataset, metric) entry; values are fractions (the renderers show percent).

    With several seeds, ``mean`` and ``std`` are over the volumes' means over seeds, and
    ``seed_std`` is the std (ddof=1) over seeds of each seed's mean over the same volumes."""

    mean: float
    std: float
    n: int
    n_nan: int
    star: bool = False
    best: bool = False
    p: float = math.nan           # paired t-test vs best_other (drives the star)
    best_other: str | None = None
    p_wilcoxon: float = math.nan  # Wilcoxon signed-rank vs best_other (reported only)
    ci: tuple[float, float] = (math.nan, math.nan)  # 95% CI of the mean (stats.mean_ci)
    ci_kind: str = "none"         # "bootstrap" (n >= 10, seed 0), "t" (n < 10) or "none"
    n_seeds: int = 1
    seed_std: float = math.nan    # std over seeds of the per-seed means (NaN: one seed)
    # paired difference to the column's best row (differences.Difference); None for the best
    # row itself and for a column of one row
    diff: object = None


@dataclass
class Table:
    title: str
    weights: tuple
    definitions: dict | None
    datasets: list[str]
    metrics: list[str]
    rows: list[str]
    cells: dict[tuple[str, str, str], Cell]
    # (row, dataset) → the run its cells come from; for several seeds a RunRecord of the
    # lowest seed's folder (its maps/) whose per_volume holds the per-volume means over seeds
    runs: dict[tuple[str, str], RunRecord] = field(default_factory=dict)
    members: dict[tuple[str, str], list[RunRecord]] = field(default_factory=dict)  # the seeds' runs
    differs: dict[str, list[tuple]] = field(default_factory=dict)  # row → [((section, key), v)]
    shortened: dict[str, bool] = field(default_factory=dict)  # row → its label omits a difference


@dataclass
class Leaderboard:
    tables: list[Table]
    warnings: list[str]
    metrics: list[str]


def _describe_weights(key: tuple) -> str:
    if not key:
        return "no pretrained weights"
    return "; ".join(f"{b}: {i[:19]}" + ("…" if len(i) > 19 else "") for b, i in key)


def _weight_groups(runs: list[RunRecord]) -> tuple[list[list[RunRecord]], set[tuple[str, str]]]:
    """Split runs into tables so that no table holds two different weights of one backbone.

    Backbones are compared by name (``vgg16``, ``clip``...): a PatchCore on VGG16 and a
    MediCLIP on CLIP share a table, a VGG16 with ImageNet weights and a VGG16 with random ones
    do not. Only the contested backbones split: a run is placed in every table whose weights
    it agrees with, so runs without pretrained weights (or only with uncontested ones) appear
    in every table; a table whose runs all sit in another table is dropped. Returns the
    groups (input order kept) and the contested (backbone, identity) pairs."""
    def by_backbone(r: RunRecord) -> dict[str, frozenset]:
        out: dict[str, set] = {}
        for backbone, ident in weights_key(r.weights):
            out.setdefault(backbone, set()).add(ident)
        return {b: frozenset(x) for b, x in out.items()}

    keys = {id(r): by_backbone(r) for r in runs}
    seen: dict[str, set[frozenset]] = {}
    for k in keys.values():
        for backbone, idents in k.items():
            seen.setdefault(backbone, set()).add(idents)
    contested = {b for b, v in seen.items() if len(v) > 1}
    if not contested:
        return [runs], set()
    wanted = sorted({tuple(sorted((b, tuple(sorted(x))) for b, x in k.items() if b in contested))
                     for k in keys.values()} - {()})
    groups: list[list[RunRecord]] = []
    members: list[frozenset] = []
    for want in wanted:
        w = {b: frozenset(x) for b, x in want}
        group = [r for r in runs
                 if all(keys[id(r)].get(b, x) == x for b, x in w.items())]
        ids = frozenset(id(r) for r in group)
        if ids not in members:
            groups.append(group)
            members.append(ids)
    keep = [i for i in range(len(groups)) if not any(members[i] < m for m in members)]
    conflicts = {(b, x) for b in contested for idents in seen[b] for x in idents}
    return [groups[i] for i in keep], conflicts


def _seed_order(r: RunRecord) -> tuple:
    s = r.seed
    return (0, s, "") if isinstance(s, int) and not isinstance(s, bool) else (1, 0, str(s))


def _rerun_note(keep: RunRecord, drop: RunRecord) -> str:
    a, b = identity(keep, everything=True), identity(drop, everything=True)
    diff = [key_name(k) for k in {**a, **b}
            if k[0] != "versions" and json.dumps(a.get(k, UNSET), default=str)
            != json.dumps(b.get(k, UNSET), default=str)]
    return (f"{drop.path}: same method, dataset, configuration and seed as {keep.path}"
            + (f" (it differs only in {', '.join(diff)}: keys that do not change results)"
               if diff else "")
            + "; only the newer run is shown")


def build_leaderboard(runs, metrics=DEFAULT_METRICS, *, alpha: float = 0.05) -> Leaderboard:
    """Group runs into comparable tables and compute cells, stars, bold and differences.

    runs: the frame of :func:`adbench.report.collect.collect` (possibly filtered: only its
    rows are used), or a list of :class:`~adbench.rundir.RunRecord` (collected first)."""
    from adbench.report.collect import as_frame, records
    runs = records(as_frame(runs))
    metrics = list(metrics)
    warnings: list[str] = []
    # Deduplicate re-runs: the same identity, seed, weights and definitions keeps the newest.
    newest: dict[tuple, RunRecord] = {}
    for r in runs:
        key = (identity_key(r), str(r.seed), weights_key(r.weights), definitions_key(r.definitions))
        old = newest.get(key)
        if old is not None:
            keep, drop = sorted([old, r], key=lambda x: (x.path.stat().st_mtime, str(x.path)))[::-1]
            warnings.append(_rerun_note(keep, drop))
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
        groups, conflicts = _weight_groups(druns)
        weight_groups_seen.update(conflicts)
        for group in groups:
            wk = tuple(sorted(set().union(*(weights_key(r.weights) for r in group))))
            tables.append(_table(group, metrics, wk, alpha, warnings))
    if weight_groups_seen:
        warnings.append("WARNING: runs used different pretrained weights for one backbone ("
                        + " | ".join(_describe_weights((k,)) for k in sorted(weight_groups_seen))
                        + "); they are shown in separate tables and must not be compared")
    for t in tables:
        if t.definitions is None:
            warnings.append(f"{t.title}: these runs recorded no metric definitions "
                            "(written by an older adbench?); compare with care")
    for i, t in enumerate(tables):
        t.title = f"Table {i + 1}" + (f" — weights: {_describe_weights(t.weights)}"
                                      if len(tables) > 1 else "")
    return Leaderboard(tables=tables, warnings=warnings, metrics=metrics)


def _seed_mean(members: list[RunRecord], where: str, warnings: list[str]) -> RunRecord:
    """One RunRecord standing for the seeds' runs: the first one's folder, and per volume the
    mean over seeds of every metric (NaN when a seed's value is NaN); counts (``n_*``) and
    text are the first run's. Volumes not in every seed's per_volume.csv are left out."""
    first = members[0]
    if len(members) == 1:
        return first
    by_subject = [{row["subject"]: row for row in r.per_volume} for r in members]
    common = [s for s in by_subject[0] if all(s in b for b in by_subject[1:])]
    n_all = len(set().union(*by_subject))
    if len(common) < n_all:
        warnings.append(f"{where}: its {len(members)} seeds' runs hold different test volumes; "
                        f"only the {len(common)} of {n_all} that every seed has are used")
    rows = []
    for s in common:
        row = dict(by_subject[0][s])
        for key in row:
            vals = [b[s].get(key) for b in by_subject]
            if (key != "subject" and not key.startswith("n_")
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals)):
                row[key] = float(np.mean(vals))
        rows.append(row)
    meta = {"seeds": [r.seed for r in members], "runs": [str(r.path) for r in members]}
    return RunRecord(path=first.path, summary=first.summary, config=first.config, per_volume=rows,
                     meta=meta)


def _seed_std(members: list[RunRecord], agg: dict[str, float], metric: str) -> float:
    """Std (ddof=1) over seeds of each seed's mean over the volumes finite in ``agg``."""
    keep = [s for s, v in agg.items() if math.isfinite(v)]
    if len(members) < 2 or not keep:
        return math.nan
    means = [float(np.mean([r.values(metric)[s] for s in keep])) for r in members]
    return float(np.std(means, ddof=1))


def _table(runs: list[RunRecord], metrics: list[str], wkey: tuple, alpha: float,
           warnings: list[str]) -> Table:
    keys = row_keys(runs)
    values: dict[tuple, dict] = {}
    for r in runs:
        ident = identity(r)
        values.setdefault(keys[id(r)], {n: ident.get(n, UNSET) for n, _ in keys[id(r)][1]})
    info = row_labels(sorted(set(keys.values())), values)
    label = {k: v["label"] for k, v in info.items()}
    rows = sorted(set(label.values()), key=lambda s: natural_key(s))
    datasets = sorted({r.dataset for r in runs}, key=str.lower)
    members: dict[tuple[str, str], list[RunRecord]] = {}
    for r in runs:
        members.setdefault((label[keys[id(r)]], r.dataset), []).append(r)
    for runs_ in members.values():
        runs_.sort(key=lambda r: (_seed_order(r), str(r.path)))
    placed = {k: _seed_mean(m, f"{k[0]} on {k[1]}", warnings) for k, m in members.items()}
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
                    p_wilcoxon=stars[row]["p_wilcoxon"], ci=mean_ci(f, seed=0)[:2],
                    ci_kind=mean_ci(f, seed=0)[2],
                    n_seeds=len(members[(row, ds)]),
                    seed_std=_seed_std(members[(row, ds)], vals, m))
            means = {row: cells[(row, ds, m)].mean for row in col}
            finite = [x for x in means.values() if math.isfinite(x)]
            if finite:
                top = max(finite)
                for row, x in means.items():
                    cells[(row, ds, m)].best = x == top
    defs = runs[0].definitions if runs else None
    table = Table(title="", weights=wkey, definitions=defs, datasets=datasets, metrics=metrics,
                 rows=rows, cells=cells, runs=placed, members=members,
                 differs={v["label"]: v["differs"] for v in info.values()},
                 shortened={v["label"]: v["shortened"] for v in info.values()})
    add_differences(table)
    return table


# The renderers live in adbench.report.render; imported here for the names callers know.
from adbench.report.render import fmt_cell, render_csv, render_latex, render_markdown
