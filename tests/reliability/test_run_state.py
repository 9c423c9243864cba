"""Run folders say their state (issue #18 items 7 and 10).

* a run stopped by SIGTERM leaves ``error.txt`` saying "interrupted" and no ``running.json``;
* a folder whose ``running.json`` names a process that is gone is "killed", one whose process
  lives is "running", and ``adbench leaderboard`` lists both instead of ignoring them;
* a wrong path flag fails before any run folder exists.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import toydata

from adbench.cli import main
from adbench.io import save_nifti
from adbench.rundir import RUNNING, RunFolder, process_identity, run_state, write_run


def _tree(root: Path) -> Path:
    for i in range(2):
        v = toydata.toy_volume(i, False)
        save_nifti(root / "train" / f"{v.subject_id}.nii.gz", v.image, v.affine)
        v = toydata.toy_volume(i, True)
        save_nifti(root / "test" / f"{v.subject_id}.nii.gz", v.image, v.affine)
        save_nifti(root / "test_masks" / f"{v.subject_id}.nii.gz", v.lesion_mask.astype(np.uint8), v.affine)
    return root


# A real `adbench run` in its own process, whose fit lasts until it is stopped.
SLOW_FIT = """
import sys, time
from pathlib import Path
from adbench.methods.zscore.detector import ZScore
from adbench.cli import main

def fit_until_stopped(self, train, ctx):
    Path(sys.argv[1]).write_text("fitting")
    time.sleep(300)

ZScore._fit = fit_until_stopped
sys.exit(main(sys.argv[2:]))
"""


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before fitting: "
                                 f"{proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"the run did not start fitting within {timeout} s")
        time.sleep(0.1)


@pytest.mark.slow
def test_sigterm_leaves_error_txt_saying_interrupted(tmp_path):
    tree, out, flag = _tree(tmp_path / "data"), tmp_path / "runs", tmp_path / "fitting"
    env = dict(os.environ, ADBENCH_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_FIT, str(flag), "run", "-m", "zscore",
                             "-d", "folder", "--data-root", str(tree), "--preset", "smoke", "-o",
                             str(out), "-q"], env=env, stderr=subprocess.PIPE, text=True)
    _wait_for(flag, proc)
    (run_dir,) = out.glob("folder/zscore/*")
    marker = json.loads((run_dir / RUNNING).read_text())
    assert marker["pid"] == proc.pid and marker["host"] == socket.gethostname()
    st = run_state(run_dir)
    assert st.state == "running" and f"pid {proc.pid}" in st.detail

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err                 # as for Ctrl-C
    assert "interrupted" in err and "Traceback" not in err
    first = (run_dir / "error.txt").read_text().splitlines()[0]
    assert first.startswith("interrupted by SIGTERM") and "Run the same command again" in first
    assert not (run_dir / RUNNING).exists() and not (run_dir / "summary.json").exists()
    assert run_state(run_dir).state == "interrupted"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_marker_of_a_dead_process_is_killed_and_the_leaderboard_says_so(tmp_path, capsys):
    out = tmp_path / "runs"
    done = write_run(out / "synth" / "zscore" / "done", [
        {"subject": f"s{i}", "auroc": 0.5 + 0.1 * i, "dice_max": 0.2, "auprc": 0.1, "n_voxels": 10,
         "n_lesion_voxels": 2, "n_slices": 1} for i in range(3)], method="zscore", dataset="synth")
    killed = RunFolder.create(out, "synth", "padim", 0).path
    marker = json.loads((killed / RUNNING).read_text())
    assert marker == {**process_identity(), "started": marker["started"]}
    (killed / RUNNING).write_text(json.dumps({**marker, "pid": _dead_pid()}))
    running = RunFolder.create(out, "synth", "padim", 1).path           # this process: alive
    elsewhere = RunFolder.create(out, "synth", "padim", 2).path
    (elsewhere / RUNNING).write_text(json.dumps({**marker, "host": "other-host"}))
    reused = RunFolder.create(out, "synth", "padim", 3).path             # pid reused since
    (reused / RUNNING).write_text(json.dumps({**marker, "start_ticks": (marker["start_ticks"] or 0) + 1}))
    failed = RunFolder.create(out, "synth", "padim", 4).path
    RunFolder(failed).write_error(ValueError("bad input"))
    old = out / "synth" / "padim" / "old-run"                            # before markers
    old.mkdir()
    (old / "config.yaml").write_text("method: padim\n")

    states = {p: run_state(p) for p in (killed, running, elsewhere, reused, failed, old, done)}
    assert {p.name: s.state for p, s in states.items()} == {
        killed.name: "killed", running.name: "running", elsewhere.name: "running",
        reused.name: "killed", failed.name: "failed", "old-run": "incomplete", "done": "complete"}
    assert "is gone" in states[killed].detail and "other-host" in states[elsewhere].detail
    assert states[failed].detail == "ValueError: bad input" and not (failed / RUNNING).exists()

    assert main(["leaderboard", str(out)]) == 0
    cap = capsys.readouterr()
    for p, s in states.items():
        if s.state != "complete":
            assert f"{p}: {s.state}" in cap.err and f"{p}: {s.state}" in cap.out
    assert "zscore" in cap.out


def test_keyboard_interrupt_is_written_as_interrupted(tmp_path):
    folder = RunFolder.create(tmp_path, "d", "m", 0)
    folder.write_error(KeyboardInterrupt())
    assert (folder.path / "error.txt").read_text().startswith("interrupted by SIGINT (Ctrl-C) at ")
    assert run_state(folder.path).state == "interrupted"


def test_a_wrong_train_root_fails_before_any_run_folder(tmp_path, capsys):
    tree, out = _tree(tmp_path / "data"), tmp_path / "runs"
    base = ["run", "-m", "zscore", "-d", "folder", "--data-root", str(tree), "-o", str(out), "-q"]
    missing = tmp_path / "no-such-folder"
    a_file = tree / "train" / "toyH00.nii.gz"
    for extra, needles in (
            (["--train-on", "openbhb", "--train-root", str(missing)],
             ["--train-root", str(missing), "does not exist"]),
            (["--train-on", "openbhb", "--train-root", str(a_file)], ["--train-root", "is not a folder"]),
            (["--train-on", "openbhb", "--set", f"train.data_root={missing}"], [str(missing)]),
    ):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert all(n in err for n in needles), (needles, err)
        assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))
    assert main(["run", "-m", "zscore", "-d", "folder", "--data-root", str(missing), "-o", str(out)]) == 2
    assert "--data-root" in capsys.readouterr().err and not out.exists()
