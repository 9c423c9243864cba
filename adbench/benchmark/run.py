"""``run_grid``: validate, plan, run the cells that are not done, then report.

One function, in this order: load and validate the whole grid (nothing runs when any cell
is invalid); take the grid folder's lock (one process per grid folder); plan (done cells
are skipped, failed ones retried); record the plan in grid.json; run the remaining cells
with the chosen executor, recording each result as it arrives; finally the leaderboard
over the grid's done cells (all formats) and, for sweep grids, the Fig. 3(b) plots.
"""
from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import TextIO

from adbench.benchmark import execute, state
from adbench.benchmark.grid import load_grid
from adbench.benchmark.plan import DONE, TRAIN, format_plan, plan
from adbench.benchmark.plots import write_sweep_plots
from adbench.locking import LockTimeout, file_lock

__all__ = ["LEADERBOARD_FORMATS", "run_grid"]

#: leaderboard formats written into the grid folder: ``adbench leaderboard --format`` → file
LEADERBOARD_FORMATS = {"md": "leaderboard.md", "latex": "leaderboard.tex",
                       "csv": "leaderboard.csv", "html": "leaderboard.html"}


def run_grid(path: str | Path, *, output: str | Path = "runs", preset: str | None = None,
             roots: dict[str, str] | None = None, sets: list[str] | None = None,
             device: str | None = None, dry_run: bool = False, executor: str = "local",
             gpus: list[str] | None = None, address: str | None = None,
             ray_init: dict | None = None, metrics: str = "auroc,dice_max",
             formats: tuple[str, ...] = tuple(LEADERBOARD_FORMATS),
             out: TextIO | None = None) -> int:
    """Run (or with ``dry_run`` only plan) the grid file ``path`` into
    ``<output>/<grid-name>/``. Returns the exit status: 0 when every cell is done, 1 when a
    cell failed (after running all the others). Invalid grids raise GridError first.
    ``formats``: the leaderboard files to write (Markdown is printed when among them)."""
    out = out or sys.stdout
    grid, specs = load_grid(path, preset=preset, roots=roots, sets=sets, device=device)
    grid_dir = Path(output) / grid.name
    runs_root = grid_dir / "runs"
    if dry_run:
        planned, notes = plan(grid, specs, runs_root, state.read_state(grid_dir))
        out.write(f"grid {grid.name} ({grid.path}): run folders under {runs_root}\n")
        out.write(format_plan(planned, notes))
        return 0
    grid_dir.mkdir(parents=True, exist_ok=True)
    with _grid_lock(grid_dir):
        planned, notes = plan(grid, specs, runs_root, state.read_state(grid_dir))
        out.write(format_plan(planned, notes))
        out.flush()
        state.record_plan(grid_dir, grid, planned)
        todo = [pc for pc in planned if pc.status != DONE]
        first = {pc.id for pc in todo if pc.status == TRAIN}
        failed: list[str] = []
        by_id = {pc.id: pc for pc in planned}

        def on_result(p: dict, result: dict) -> None:
            pc = by_id[p["id"]]
            state.record_result(grid_dir, result)
            if result["status"] == "done":
                pc.run_dir = Path(result["run_dir"])
                pc.status = DONE
            else:
                failed.append(pc.id)
            note = f"done in {result['seconds']:.1f} s" if result["status"] == "done" else \
                f"FAILED: {result['error']}"
            out.write(f"cell #{pc.cell.index} {pc.cell.label()} on {pc.cell.dataset} seed "
                      f"{pc.cell.seed}: {note}\n")
            out.flush()

        def on_start(p: dict, status: str) -> None:
            pc = by_id[p["id"]]
            state.record_start(grid_dir, pc.id, status)
            if status == "running":
                out.write(f"cell #{pc.cell.index} {pc.cell.label()} on {pc.cell.dataset} seed "
                          f"{pc.cell.seed}: started ({pc.status})\n")
                out.flush()

        items = [execute.payload(pc.cell, pc.id, runs_root) for pc in todo]
        execute.run(items, on_result, first, executor=executor, gpus=gpus, address=address,
                    init_kwargs=ray_init, on_start=on_start)
        done = [pc for pc in planned if pc.status == DONE and pc.run_dir is not None]
        _report(grid_dir, done, metrics, formats, out)
        state.render_report(grid_dir)
        if failed:
            out.write(f"{len(failed)} of {len(planned)} cells failed; tracebacks in "
                      f"{grid_dir / state.REPORT}. Run the same command again to retry them.\n")
            return 1
        out.write(f"grid {grid.name}: all {len(planned)} cells done; report {grid_dir / state.REPORT}\n")
        return 0


@contextlib.contextmanager
def _grid_lock(grid_dir: Path):
    """One ``adbench benchmark`` per grid folder (the kernel frees the lock if it is killed)."""
    lock = file_lock(grid_dir / "run", timeout=0)
    try:
        lock.__enter__()
    except LockTimeout:
        raise LockTimeout(f"{grid_dir}: another `adbench benchmark` is running this grid "
                          f"(it holds {grid_dir / 'run.lock'}); wait for it, or pass another "
                          f"--output") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _report(grid_dir: Path, done: list, metrics: str, formats, out: TextIO) -> None:
    """The leaderboard (``adbench leaderboard`` over the done cells' run folders, every
    format into the grid folder, Markdown printed) and the sweep plots."""
    if not done:
        out.write("no cell is done: no leaderboard\n")
        return
    from adbench.cli import main as cli_main

    dirs = [str(pc.run_dir) for pc in done]
    for fmt in formats:
        name = LEADERBOARD_FORMATS[fmt]
        argv = ["leaderboard", *dirs, "--format", fmt, "--out", str(grid_dir / name),
                "--metrics", metrics]
        with contextlib.redirect_stderr(io.StringIO()) as err:
            rc = cli_main(argv)
        if rc != 0:
            out.write(f"leaderboard ({fmt}) failed (exit {rc}): {err.getvalue().strip()}\n")
    md = grid_dir / LEADERBOARD_FORMATS["md"]
    if "md" in formats and md.is_file():
        out.write("\n" + md.read_text() + "\n")
    cells = [{"method": pc.cell.method, "dataset": pc.cell.dataset, "seed": pc.cell.seed,
              "varied": dict(pc.cell.varied), "run_dir": pc.run_dir} for pc in done]
    plots = write_sweep_plots(cells, grid_dir / "plots", [m.strip() for m in metrics.split(",")
                                                          if m.strip()])
    if plots:
        out.write(f"sweep plots: {', '.join(str(p) for p in plots)}\n")
    if any(pc.spec.preset == "smoke" for pc in done):
        from adbench.cli import SMOKE_NOTE
        out.write(SMOKE_NOTE + "\n")
