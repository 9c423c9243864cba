"""Interrupted and concurrent use of the caches, done for real (issue #18, items 3 and 5).

- A synth generation whose parent is killed (SIGKILL, SIGTERM) mid-way leaves no worker
  alive, and the manifest lists exactly the volume files on disk once the cache is opened.
- Ctrl-C (SIGINT to the whole process group) ends the parent and its pool.
- Two smoke runs started together on one cache both succeed and every manifest lists every
  subject.
Worker processes are found through /proc (Linux); a killed process counts as gone once it is
a zombie (a container's init may never reap it).
"""
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

from adbench.datasets.synth.dataset import SynthDataset
from adbench.datasets.synth.generate import ensure_volumes, read_volume

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")]

SYNTH = dict(n_train=4, n_test=2, spacing=2, seed=0)      # 6 volumes: several seconds each

_GENERATE = """
import sys
from adbench.datasets.synth.generate import SynthParams, cache_root, ensure_volumes
if __name__ == "__main__":
    p = SynthParams(**{SYNTH!r})
    ensure_volumes(p, cache_root(p, sys.argv[1]), p.subjects("train") + p.subjects("test"),
                   workers=2)
"""

_SLEEPERS = """
import os, signal, sys, time
from adbench.datasets.synth.workers import worker_pool
def task(folder):
    open(os.path.join(folder, str(os.getpid())), "w").close()
    time.sleep(300)
if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    with worker_pool(2) as pool:
        for f in [pool.submit(task, sys.argv[1]) for _ in range(4)]:
            f.result()
"""


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for f in Path(f"/proc/{pid}/task").glob("*/children"):
        out |= {int(c) for c in f.read_text().split()}
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_until(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def _gone_within(pids: set[int], seconds: float) -> set[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return {p for p in pids if _alive(p)}


def _kill_leftovers(pids: set[int]) -> None:
    for p in pids:  # only processes this test started (its parent's children)
        if _alive(p):
            os.kill(p, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_generation_leaves_no_worker_and_the_manifest_matches_the_disk(tmp_path, sig):
    script = tmp_path / "generate.py"
    script.write_text(_GENERATE.replace("{SYNTH!r}", repr(SYNTH)))
    cache = tmp_path / "cache"
    parent = subprocess.Popen([sys.executable, str(script), str(cache)], env=_env())
    volumes = lambda: sorted(cache.glob("*/synth-*.npz"))
    kids: set[int] = set()
    try:
        _wait_until(lambda: volumes() or parent.poll() is not None, 300, "a first volume file")
        assert parent.poll() is None, "generation ended before it could be interrupted"
        kids = _children(parent.pid)
        at_kill = len(volumes())
        parent.send_signal(sig)
        assert parent.wait(10) == -sig
        alive = _gone_within(kids, 5.0)
        assert not alive, f"{len(alive)} worker(s) of the {sig.name}ed parent still alive: {alive}"
    finally:
        _kill_leftovers(kids | {parent.pid})
    assert len(kids) >= 2, f"expected 2 workers (and a resource tracker), found {kids}"
    files = volumes()
    assert at_kill <= len(files) < 6, "the kill came too late to interrupt the generation"
    time.sleep(1.0)
    assert volumes() == files, "files appeared after the parent died: a worker kept working"

    ds = SynthDataset(**SYNTH, cache_dir=str(cache), progress=False)
    manifest = json.loads((ds.root / "manifest.json").read_text())   # opening reconciles it
    on_disk = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert {k: v["sha256"] for k, v in manifest["volumes"].items()} == on_disk
    for p in files:   # each file is whole (written atomically), whenever the kill came
        assert read_volume(p)["image"].shape == (99, 117, 95), p

    # the next generation (in this process: one volume) keeps the manifest complete
    missing = sorted(set(ds.subjects("train") + ds.subjects("test")) - set(on_disk))
    assert ensure_volumes(ds._params, ds.root, missing[:1], workers=1) == missing[:1]
    manifest = json.loads((ds.root / "manifest.json").read_text())
    assert sorted(manifest["volumes"]) == sorted(p.stem for p in volumes()) == sorted(
        [*on_disk, missing[0]])


def test_ctrl_c_ends_the_parent_and_its_workers(tmp_path):
    script = tmp_path / "sleepers.py"
    script.write_text(_SLEEPERS)
    marks = tmp_path / "pids"
    marks.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(marks)], env=_env(),
                              start_new_session=True, stderr=subprocess.PIPE, text=True)
    workers: set[int] = set()
    try:
        _wait_until(lambda: len(list(marks.iterdir())) >= 2 or parent.poll() is not None, 300,
                    "both workers to start a task")
        workers = {int(p.name) for p in marks.iterdir()}
        os.killpg(parent.pid, signal.SIGINT)   # what Ctrl-C in a terminal does
        rc = parent.wait(15)
        assert "KeyboardInterrupt" in parent.stderr.read() and rc != 0
        alive = _gone_within(workers, 5.0)
        assert not alive, f"workers still alive after Ctrl-C: {alive}"
    finally:
        _kill_leftovers(workers | {parent.pid})


def test_a_worker_whose_parent_already_died_exits_at_once():
    """The race PR_SET_PDEATHSIG leaves open: the parent dies before the worker arms it."""
    code = ("from adbench.datasets.synth.workers import _worker_init\n"
            "_worker_init(2 ** 22 + 7)\nprint('still running')")   # not our parent's pid
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 1 and "still running" not in done.stdout


def test_two_concurrent_smoke_runs_on_one_cache_both_finish_and_list_every_subject(tmp_path):
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "adbench.cli", "run", "--method", "zscore", "--dataset", "synth",
           "--preset", "smoke", "--weights", "random", "-q"]
    env = _env(ADBENCH_CACHE=str(cache))
    runs = [subprocess.Popen(cmd + ["-o", str(tmp_path / f"out{i}")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(2)]
    outs = [r.communicate(timeout=600)[0] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    subjects = [f"synth-{split}-{i:04d}" for split, n in (("train", 4), ("test", 3), ("val", 2))
                for i in range(n)]   # val: the healthy volumes of the label-free thresholds
    slices = json.loads((cache / "slices" / "synth" / "manifest.json").read_text())
    assert sorted(slices) == sorted(subjects), "the slice-cache manifest lost entries"
    for entry in slices.values():
        assert (cache / "slices" / "synth" / entry["file"]).exists()
    (synth,) = (cache / "synth").glob("*/manifest.json")
    assert sorted(json.loads(synth.read_text())["volumes"]) == sorted(subjects)
    csvs = [next((tmp_path / f"out{i}").rglob("per_volume.csv")).read_text() for i in range(2)]
    assert csvs[0] == csvs[1]
