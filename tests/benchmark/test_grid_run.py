"""A 2x2 smoke grid (zscore, eps x seed) end to end: local, dry-run of what is done and
cached, leaderboard and sweep plot, and the Ray executor giving the same per-volume numbers."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from adbench.benchmark.run import run_grid
from adbench.cli import main
from adbench.rundir import load_run
from tests.benchmark.conftest import ZSCORE_2X2, write_grid


def _cells(grid_dir):
    state = json.loads((grid_dir / "grid.json").read_text())
    return state["cells"]


def _by_cell(grid_dir):
    """(eps, seed) -> run folder of each done cell."""
    return {(c["varied"]["eps"], c["seed"]): c["run_dir"] for c in _cells(grid_dir).values()
            if c["status"] == "done"}


@pytest.mark.slow
def test_local_then_ray_same_numbers(tmp_path, shared_cache, capsys):
    grid = write_grid(tmp_path, ZSCORE_2X2.format(name="z2x2"))
    out = tmp_path / "out"
    assert run_grid(grid, output=out, formats=("md", "csv")) == 0
    printed = capsys.readouterr().out
    # eps is a predict key of zscore: one fit per seed, the other eps reuses it
    assert "4 cells: 0 done, 2 train a model, 2 reuse a model trained in this grid" in printed
    gdir = out / "z2x2"
    local = _by_cell(gdir)
    assert set(local) == {(0.05, 0), (0.05, 1), (5.0, 0), (5.0, 1)}
    models = {}
    for (eps, seed), d in local.items():
        s = json.loads((Path(d) / "summary.json").read_text())
        models.setdefault(seed, set()).add(s["model"]["key"])
        assert s["model"]["status"] == ("fitted" if eps == 0.05 else "cached")
    assert all(len(keys) == 1 for keys in models.values()) and len(models) == 2

    # the leaderboard: one row per eps (seeds aggregated), Markdown printed and written
    md = (gdir / "leaderboard.md").read_text()
    assert md in printed and (gdir / "leaderboard.csv").is_file()
    assert not (gdir / "leaderboard.html").exists()   # only the formats asked for
    rows = [ln for ln in md.splitlines() if ln.startswith("| zscore")]
    assert len(rows) == 2 and all("2 seeds" in r for r in rows)
    assert any("eps=0.05" in r for r in rows) and any("eps=5" in r for r in rows)

    # the sweep plot's points: per-volume mean over seeds, then mean and std over volumes
    pts = list(csv.DictReader(io.StringIO((gdir / "plots" / "sweep.csv").read_text())))
    assert (gdir / "plots" / "zscore-synth-auroc.png").stat().st_size > 1000
    for p in (p for p in pts if p["metric"] == "auroc"):
        eps = float(p["x"])
        per = [load_run(local[(eps, s)]).values("auroc") for s in (0, 1)]
        v = np.array([(per[0][k] + per[1][k]) / 2 for k in per[0]])
        assert p["x_key"] == "eps" and int(p["n"]) == len(v) == 3 and int(p["n_seeds"]) == 2
        assert float(p["mean"]) == pytest.approx(v.mean(), abs=1e-12)
        assert float(p["std"]) == pytest.approx(v.std(ddof=1), abs=1e-12)

    # dry-run: all four done; a new eps value reuses the cached models (no refit)
    assert main(["benchmark", str(grid), "-o", str(out), "--dry-run"]) == 0
    assert "4 cells: 4 done, 0 train" in capsys.readouterr().out
    grid3 = write_grid(tmp_path, ZSCORE_2X2.format(name="z2x2").replace("[0.05, 5.0]",
                                                                       "[0.05, 5.0, 1.0]"), "g3.yaml")
    assert main(["benchmark", str(grid3), "-o", str(out), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "6 cells: 4 done, 0 train a model, 0 reuse a model trained in this grid, 2 reuse a " \
           "cached model" in plan
    assert sum("cached model" in ln and "eps=1.0" in ln for ln in plan.splitlines()) == 2

    # Ray: a local instance with 2 CPUs, each cell a task; same folders layout, same numbers
    ray = pytest.importorskip("ray")
    out_ray = tmp_path / "out_ray"
    assert run_grid(grid, output=out_ray, executor="ray", formats=(),
                    ray_init={"num_cpus": 2}) == 0
    assert not ray.is_initialized()   # the instance it started is shut down
    remote = _by_cell(out_ray / "z2x2")
    assert set(remote) == set(local)
    for cell, d in remote.items():
        assert d.startswith(str((out_ray / "z2x2" / "runs" / "synth" / "zscore").resolve()))
        a = (Path(local[cell]) / "per_volume.csv").read_text()
        b = (Path(d) / "per_volume.csv").read_text()
        assert a == b, cell
    workers = {c["worker"]["pid"] for c in _cells(out_ray / "z2x2").values()}
    assert os.getpid() not in workers   # ran in Ray worker processes
