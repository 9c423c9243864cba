"""Failure isolation, and resuming a grid after a real SIGKILL of its process group."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adbench.benchmark.run import run_grid
from adbench.methods.zscore.detector import ZScore
from adbench.rundir import run_state, scan_runs
from tests.benchmark.conftest import write_grid


def _snapshot(run_dir: Path) -> dict[str, tuple[str, int]]:
    """relative path -> (sha256, mtime_ns) of every file of a run folder."""
    return {str(p.relative_to(run_dir)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                          p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _cells(grid_dir: Path) -> dict:
    return json.loads((grid_dir / "grid.json").read_text())["cells"]


@pytest.mark.slow
def test_failing_cell_is_isolated_then_retried(tmp_path, shared_cache, monkeypatch, capsys):
    grid = write_grid(tmp_path, """\
        name: fail
        datasets: [synth]
        seeds: [0]
        preset: smoke
        settings: {runner.figures: false, runner.write_maps: false}
        methods: [zscore]
        sweep: {zscore.eps: [5.0, 0.05]}
    """)
    real = ZScore._predict
    out = tmp_path / "out"
    seen = []    # the grid's own record while the cell runs

    def broken(self, x, ctx):   # a plugin exception in one cell only
        if self.eps == 5.0:
            seen.append({c["varied"]["eps"]: c["status"] for c in _cells(out / "fail").values()})
            raise RuntimeError("plugin exploded at eps=5.0")
        return real(self, x, ctx)

    monkeypatch.setattr(ZScore, "_predict", broken)
    assert run_grid(grid, output=out, formats=()) == 1   # non-zero, after the other cell ran
    printed = capsys.readouterr().out
    assert "FAILED: RuntimeError: plugin exploded at eps=5.0" in printed
    assert seen and seen[0] == {5.0: "running", 0.05: "pending"}   # report.md says which runs
    assert "zscore (eps=5.0) on synth seed 0: started" in printed
    cells = {c["varied"]["eps"]: c for c in _cells(out / "fail").values()}
    bad, good = cells[5.0], cells[0.05]
    assert bad["status"] == "failed" and good["status"] == "done"
    assert bad["index"] == 0   # it failed first, and the next cell still ran
    assert "Traceback" in bad["traceback"] and "plugin exploded" in bad["traceback"]
    assert run_state(bad["run_dir"]).state == "failed"   # its run folder says so too
    report = (out / "fail" / "report.md").read_text()
    assert "## failures" in report and "plugin exploded at eps=5.0" in report
    before = _snapshot(Path(good["run_dir"]))

    monkeypatch.setattr(ZScore, "_predict", real)   # fixed: the same command again
    assert run_grid(grid, output=out, formats=()) == 0
    cells = {c["varied"]["eps"]: c for c in _cells(out / "fail").values()}
    assert cells[5.0]["status"] == "done" and cells[5.0]["attempts"] == 2
    assert cells[0.05]["attempts"] == 1 and _snapshot(Path(good["run_dir"])) == before
    assert "## failures" not in (out / "fail" / "report.md").read_text()


@pytest.mark.slow
def test_resume_after_sigkill_of_the_process_group(tmp_path, shared_cache):
    grid = write_grid(tmp_path, """\
        name: kill
        datasets: [synth]
        seeds: [0, 1, 2]
        preset: smoke
        settings: {runner.figures: false, runner.write_maps: false}
        methods: [zscore]
    """)
    out = tmp_path / "out"
    runs = out / "kill" / "runs"
    cmd = [sys.executable, "-m", "adbench.cli", "benchmark", str(grid), "-o", str(out),
           "--formats", "md"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 240
        while not list(runs.glob("synth/zscore/*/summary.json")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no cell finished within 240 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)   # the whole process group, no clean-up
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    finished, _ = scan_runs([runs])
    assert 1 <= len(finished) < 3   # killed mid-grid
    kept = {r.path: _snapshot(r.path) for r in finished}

    # the same command again, now with two worker processes (CPU cells: only the process
    # plumbing of --gpus is exercised here, each worker gets its CUDA_VISIBLE_DEVICES)
    assert run_grid(grid, output=out, formats=(), gpus=["0", "1"]) == 0
    for path, snap in kept.items():   # finished cells untouched: same files, bytes, mtimes
        assert _snapshot(path) == snap
    complete, stale = scan_runs([runs])
    assert sorted(r.seed for r in complete) == [0, 1, 2]   # no duplicate, none missing
    assert all(s.state == "killed" for s in stale)   # a cell cut off mid-run stays visible
    cells = _cells(out / "kill")
    assert all(c["status"] == "done" for c in cells.values())
    reran = [c for c in cells.values() if c["run_dir"] not in {str(p) for p in kept}]
    assert reran and {c["worker"]["cuda_visible_devices"] for c in reran} <= {"0", "1"}
    assert all(c["worker"]["pid"] != os.getpid() for c in reran)
