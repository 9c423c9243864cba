"""A grid's folder: ``grid.json`` (each cell's state) and ``report.md`` (the same, for people).

``<output>/<grid-name>/``::

    grid.json        the grid file, and per cell: status (pending, running or submitted to
                     Ray, done, failed), when it started,
                     run folder, attempts, seconds, worker, and for a failure the error and
                     its traceback; updated under a lock, written atomically after every cell
    report.md        rendered from grid.json after every cell
    runs/            the run folders (``runs/<dataset>/<method>/<run-id>/``, as ``adbench run``)
    leaderboard.*    md, tex, csv, html (``adbench leaderboard`` over the grid's run folders)
    plots/           sweep grids: metric against the swept value (``sweep.csv`` + PNGs)

grid.json is a record, not the truth: a cell is done when its complete run folder exists
(:mod:`adbench.benchmark.plan`), so a process killed between writing ``summary.json`` and
updating grid.json loses nothing, and the next run records the cell as done.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from adbench.io import atomic_write, file_sha256
from adbench.locking import read_json, update_json

__all__ = ["GRID_JSON", "REPORT", "read_state", "record_plan", "record_start", "record_result",
           "render_report"]

GRID_JSON, REPORT = "grid.json", "report.md"


def read_state(grid_dir: Path) -> dict[str, Any]:
    """grid.json's ``cells`` ({} when there is none yet)."""
    return dict(read_json(grid_dir / GRID_JSON).get("cells") or {})


def record_plan(grid_dir: Path, grid, planned) -> None:
    """Write every planned cell (done ones with their run folder) before any runs."""
    def change(cur: dict) -> dict:
        cells = dict(cur.get("cells") or {})
        for pc in planned:
            old = cells.get(pc.id, {})
            c = pc.cell
            cells[pc.id] = {**old, "index": c.index, "label": c.label(), "method": c.method,
                            "dataset": c.dataset, "train_on": pc.spec.train_on, "seed": c.seed,
                            "varied": dict(c.varied), "plan": pc.status,
                            "status": "done" if pc.run_dir else
                            ("failed" if old.get("status") == "failed" else "pending"),
                            "run_dir": str(pc.run_dir) if pc.run_dir else old.get("run_dir"),
                            "attempts": old.get("attempts", 0)}
        return {"grid": grid.name, "file": str(grid.path.resolve()),
                "file_sha256": file_sha256(grid.path), "cells": cells,
                "order": [pc.id for pc in planned], "updated": _now()}
    update_json(grid_dir / GRID_JSON, change)
    render_report(grid_dir)


def record_start(grid_dir: Path, cell_id: str, status: str = "running") -> None:
    """Mark a cell as started (``running``) or handed to Ray (``submitted``)."""
    def change(cur: dict) -> None:
        c = cur.setdefault("cells", {}).setdefault(cell_id, {})
        c.update(status=status, started=_now())
        cur["updated"] = _now()
    update_json(grid_dir / GRID_JSON, change)
    render_report(grid_dir)


def record_result(grid_dir: Path, result: dict) -> None:
    """Merge one cell's result (from :func:`adbench.benchmark.execute.run_cell`)."""
    def change(cur: dict) -> None:
        c = cur.setdefault("cells", {}).setdefault(result["id"], {})
        c.update({k: result.get(k) for k in ("status", "run_dir", "seconds", "error",
                                             "traceback")})
        c["attempts"] = int(c.get("attempts", 0)) + 1
        c["worker"] = {k: result.get(k) for k in ("host", "pid", "cuda_visible_devices")}
        c["finished"] = _now()
        cur["updated"] = _now()
    update_json(grid_dir / GRID_JSON, change)
    render_report(grid_dir)


def render_report(grid_dir: Path) -> str:
    """report.md from grid.json: a table of cells, then each failure's traceback."""
    state = read_json(grid_dir / GRID_JSON)
    cells = state.get("cells") or {}
    order = [i for i in state.get("order") or [] if i in cells]
    order += [i for i in cells if i not in order]
    counts: dict[str, int] = {}
    for i in order:
        counts[cells[i].get("status", "?")] = counts.get(cells[i].get("status", "?"), 0) + 1
    lines = [f"# grid {state.get('grid', '?')}", "",
             (f"file: `{state.get('file', '?')}` (sha256 {str(state.get('file_sha256'))[:12]}), "
              f"updated {state.get('updated', '?')}"), "",
             "cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), "",
             "| # | cell | dataset | seed | status | started | attempts | seconds | run folder |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i in order:
        c = cells[i]
        sec = c.get("seconds")
        lines.append(f"| {c.get('index', '')} | {c.get('label', '')} | {c.get('dataset', '')} | "
                     f"{c.get('seed', '')} | {c.get('status', '')} | {c.get('started', '')} | "
                     f"{c.get('attempts', 0)} | "
                     f"{'' if sec is None else f'{sec:.1f}'} | {c.get('run_dir') or ''} |")
    failed = [i for i in order if cells[i].get("status") == "failed"]
    if failed:
        lines += ["", "## failures"]
        for i in failed:
            c = cells[i]
            lines += ["", (f"### #{c.get('index')} {c.get('label')} on {c.get('dataset')}, "
                           f"seed {c.get('seed')}"), "", f"error: {c.get('error')}", "",
                      f"run folder: {c.get('run_dir') or '(none: failed before it was created)'}",
                      "", "```", (c.get("traceback") or "").rstrip(), "```"]
    text = "\n".join(lines) + "\n"
    atomic_write(grid_dir / REPORT, text)
    return text


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
