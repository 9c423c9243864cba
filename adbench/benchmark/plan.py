"""Plan a grid: which cells are done, which train a model, which reuse one, in what order.

A cell is *done* when a complete run folder under the grid's run root has the same identity
(:func:`adbench.report.identity.identity_key`: the whole resolved config, overrides
included, location keys and presentation keys left out) and the same seed. That is the
leaderboard's own notion of "one cell", so the grid and the leaderboard never disagree
about which runs are the same.

Models are shared through the runner's model cache (:mod:`adbench.model_cache`), keyed by
training-set content + fit config (the config minus the method's ``predict_keys``) + seed.
The plan groups cells by that fit config (``model_keys(spec, ...)[1]``) and the training
dataset, so one cell of each group trains and the others load its model; a group whose
model is already in the cache trains nothing. The runner checks the training data's content
when it loads a model, so "cached" in a plan is the cache's word for these settings, and a
changed training set is still refitted.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adbench.benchmark.grid import Cell, Grid
from adbench.io import CorruptCacheError, _jsonable, cache_dir, read_json_verified
from adbench.model_cache import STATE, TRAINING, model_keys
from adbench.report.identity import identity_key
from adbench.rundir import RunRecord, scan_runs

__all__ = ["PlannedCell", "cell_id", "config_identity", "format_plan", "plan"]

#: plan statuses
DONE, TRAIN, CACHED, SHARED = "done", "train", "cached model", "reuses model"


@dataclass
class PlannedCell:
    """One cell in the plan.

    status   ``done`` (``run_dir`` holds its complete run), ``train`` (fits the model of its
             group), ``cached model`` (the model cache holds a model with these settings),
             ``reuses model`` (loads the model that cell ``trainer`` fits earlier in the plan)
    group    the fit group: cells with one group share one fitted model
    retry    the grid's record says an earlier attempt failed (it runs again)
    """

    cell: Cell
    spec: Any
    id: str
    group: str
    status: str
    run_dir: Path | None = None
    trainer: int | None = None
    retry: bool = False


def config_identity(config: dict, method: str, dataset: str) -> str:
    """A digest of a run's identity (its config.yaml mapping) and seed."""
    rec = RunRecord(path=Path("."), summary={}, config=config, per_volume=[])
    key = identity_key(rec)
    payload = [method, dataset, key[2], json.dumps(config.get("seed"))]
    return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()[:16]


def cell_id(spec) -> str:
    """The identity digest of a resolved cell, as its config.yaml will read back."""
    config = json.loads(json.dumps(spec.to_dict(), default=_jsonable))
    return config_identity(config, spec.method, spec.dataset)


def _fit_group(spec) -> str:
    fit_key = model_keys(spec, "")[1]   # method, fit config, preprocessing, seed
    train = {"train_on": spec.train_on, "config": spec.train_config}
    return fit_key + "-" + hashlib.sha256(
        json.dumps(train, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _cached(spec) -> bool:
    """Whether the model cache holds a fitted model of ``spec``'s fit config and training
    dataset (its content is checked by the runner when the model is loaded)."""
    config_key = model_keys(spec, "")[1]
    for rec_path in cache_dir("models", spec.method).glob(f"*/{TRAINING}"):
        if not (rec_path.parent / STATE).is_file():
            continue
        try:
            rec = read_json_verified(rec_path)
        except (CorruptCacheError, OSError, ValueError):
            continue
        if (isinstance(rec, dict) and rec.get("config_key") == config_key
                and rec.get("train_on") == spec.train_on):
            return True
    return False


def complete_runs(runs_root: Path) -> dict[str, Path]:
    """identity digest -> the newest complete run folder with it, under ``runs_root``."""
    if not runs_root.is_dir():
        return {}
    runs, _ = scan_runs([runs_root])
    out: dict[str, Path] = {}
    for r in runs:   # sorted by path: timestamped names, so the newest wins
        out[config_identity(r.config, r.method, r.dataset)] = r.path
    return out


def plan(grid: Grid, specs: list, runs_root: Path, previous: dict | None = None
         ) -> tuple[list[PlannedCell], list[str]]:
    """The cells in run order, and notes (duplicate cells dropped).

    Order: fit groups in file order of their first cell; in a group, its cells in file order,
    so the cell that trains comes before the cells that reuse its model. ``previous``: the
    grid's recorded cell states (grid.json ``cells``), to mark retries.
    """
    done = complete_runs(runs_root)
    previous = previous or {}
    notes: list[str] = []
    seen: dict[str, int] = {}
    groups: dict[str, list[PlannedCell]] = {}
    for cell, spec in zip(grid.cells, specs):
        cid = cell_id(spec)
        if cid in seen:
            notes.append(f"cell {cell.label()} on {cell.dataset} seed {cell.seed} is the same run "
                         f"as cell #{seen[cid]} (same resolved config); listed once")
            continue
        seen[cid] = cell.index
        group = _fit_group(spec)
        pc = PlannedCell(cell=cell, spec=spec, id=cid, group=group, status=DONE,
                         run_dir=done.get(cid),
                         retry=previous.get(cid, {}).get("status") == "failed")
        groups.setdefault(group, []).append(pc)
    ordered: list[PlannedCell] = []
    for members in groups.values():
        todo = [pc for pc in members if pc.run_dir is None]
        if todo:
            cached = _cached(todo[0].spec)
            trainer = todo[0].cell.index
            for pc in todo:
                if cached:
                    pc.status = CACHED
                elif pc.cell.index == trainer:
                    pc.status = TRAIN
                else:
                    pc.status, pc.trainer = SHARED, trainer
        ordered += [pc for pc in members if pc.run_dir is not None] + todo
    return ordered, notes


def format_plan(planned: list[PlannedCell], notes: list[str]) -> str:
    """The plan as a text table (``adbench benchmark --dry-run``)."""
    rows = [("#", "status", "cell", "dataset", "seed", "run folder / model")]
    for pc in planned:
        c = pc.cell
        where = (str(pc.run_dir) if pc.run_dir else
                 f"model of cell #{pc.trainer}" if pc.trainer is not None else
                 "model cache" if pc.status == CACHED else "fits the model")
        status = pc.status + (" (retry)" if pc.retry else "")
        train = f" <- {pc.spec.train_on}" if pc.spec.train_on != c.dataset else ""
        rows.append((str(c.index), status, c.label(), c.dataset + train, str(c.seed), where))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    counts = {s: sum(pc.status == s for pc in planned) for s in (DONE, TRAIN, CACHED, SHARED)}
    n_groups = len({pc.group for pc in planned})
    lines.append(f"{len(planned)} cells: {counts[DONE]} done, {counts[TRAIN]} train a model, "
                 f"{counts[SHARED]} reuse a model trained in this grid, {counts[CACHED]} reuse a "
                 f"cached model ({n_groups} distinct fitted models)")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines) + "\n"
