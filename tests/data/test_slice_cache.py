"""The slice cache: keyed by content (not paths), merged on write, pruned by last use.

Tiny NIfTI folders (toy ellipsoids, 40x48x12 at 4 mm) read through the ``folder`` dataset;
ADBENCH_CACHE is a fresh folder per test (tests/conftest.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from toydata import toy_volume

from adbench.commands import cache as cache_cmd
from adbench.config import ConfigError, preprocess_config
from adbench.data.cache import SliceCache, iter_preprocessed, prune_cache
from adbench.data.preprocess import preprocess_volume
from adbench.datasets.folder.reader import NiftiFolder
from adbench.io import cache_dir, save_nifti
from adbench.locking import update_json

CFG = preprocess_config("smoke", {})
DAY = 86400.0


def _folder(root: Path, n: int = 2) -> Path:
    for i in range(n):
        v = toy_volume(i, False, seed=3)
        save_nifti(root / "train" / f"s{i}.nii.gz", v.image, v.affine)
    return root


def _read(root: Path) -> dict:
    ds = NiftiFolder(data_root=str(root), test_pattern=None)
    return {pre.subject_id: pre for pre in iter_preprocessed(ds, "folder", "train", CFG)}


def _entries() -> list[str]:
    return sorted(p.name for p in cache_dir("slices", "folder").glob("*.npz"))


def _manifest() -> dict:
    return json.loads((cache_dir("slices", "folder") / "manifest.json").read_text())


def test_same_files_in_two_folders_share_one_entry(tmp_path):
    a = _folder(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    from_a = _read(a)
    assert len(_entries()) == 2
    from_b = _read(b)
    assert len(_entries()) == 2, f"copies of the same files made new entries: {_entries()}"
    ds_b = NiftiFolder(data_root=str(b), test_pattern=None)
    for sid, pre in from_b.items():
        # the entry made from a/ serves b/, with b/'s paths: provenance follows the files read
        assert pre.meta["image_path"] == str(b / "train" / f"{sid}.nii.gz")
        assert from_a[sid].meta["image_path"] == str(a / "train" / f"{sid}.nii.gz")
        fresh = preprocess_volume(ds_b.load(sid), CFG)
        assert np.array_equal(pre.image, fresh.image.astype(np.float16).astype(np.float32))
        assert np.array_equal(pre.brain, fresh.brain) and np.array_equal(pre.affine, fresh.affine)
    assert _manifest()["s0"]["sources"] == {str(b / "train" / "s0.nii.gz"): next(
        iter(_manifest()["s0"]["sources"].values()))}


def test_changed_file_or_content_param_makes_a_new_entry(tmp_path):
    a = _folder(tmp_path / "a")
    _read(a)
    before = _entries()
    v = toy_volume(7, False, seed=3)                     # other content, same name
    save_nifti(a / "train" / "s1.nii.gz", v.image, v.affine)
    _read(a)
    after = _entries()
    assert [e for e in after if e.startswith("s0-")] == [e for e in before if e.startswith("s0-")]
    assert len([e for e in after if e.startswith("s1-")]) == 2
    # a parameter that changes the volumes still enters the key; one that only places them not
    ds = NiftiFolder(data_root=str(a), test_pattern=None)
    other = NiftiFolder(data_root=str(a), test_pattern=None, brain_threshold=5.0)
    moved = NiftiFolder(data_root=str(tmp_path / "a" / "." / "train" / ".."), test_pattern=None)
    k = SliceCache(ds, "folder", CFG).key("s0")[0]
    assert SliceCache(other, "folder", CFG).key("s0")[0] != k
    assert SliceCache(moved, "folder", CFG).key("s0")[0] == k


def test_a_run_that_read_the_manifest_earlier_keeps_the_other_runs_entries(tmp_path):
    """The lost update of two runs: A reads the manifest, B writes its entries, A writes."""
    root = _folder(tmp_path / "a", n=3)
    ds = NiftiFolder(data_root=str(root), test_pattern=None)
    first = SliceCache(ds, "folder", CFG)       # reads the (empty) manifest now
    second = SliceCache(ds, "folder", CFG)
    second.get("s1")
    second.get("s2")
    second.flush()
    first.get("s0")
    first.flush()
    assert sorted(_manifest()) == ["s0", "s1", "s2"]
    # a run whose entries all exist already still lists its subjects (a lost listing heals)
    (cache_dir("slices", "folder") / "manifest.json").write_text("{}")
    list(iter_preprocessed(ds, "folder", "train", CFG))
    assert sorted(_manifest()) == ["s0", "s1", "s2"]


_WRITER = """
import sys
from adbench.locking import update_json
path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    update_json(path, lambda cur: cur.update({f"{tag}-{i}": i}))
"""


def test_two_processes_merging_into_one_manifest_lose_nothing(tmp_path):
    path = tmp_path / "manifest.json"
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag, str(n)])
             for tag in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    got = json.loads(path.read_text())
    assert sorted(got) == sorted(f"{t}-{i}" for t in "ab" for i in range(n))
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_update_json_rebuilds_from_an_unreadable_file(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"trunc')
    assert update_json(path, lambda cur: cur.update(x=1)) == {"x": 1}
    assert json.loads(path.read_text()) == {"x": 1}


def _prune_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="adbench")
    cache_cmd.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["cache", "prune", *argv])


def test_prune_removes_old_unused_entries_and_keeps_fresh_ones(tmp_path, capsys):
    root = _folder(tmp_path / "a")
    _read(root)
    folder = cache_dir("slices", "folder")
    old, fresh = (folder / e for e in _entries())
    long_ago = time.time() - 40 * DAY
    os.utime(old, (long_ago, long_ago))
    corrupt = folder / "s9-0123.npz.corrupt-20200101-000000"
    corrupt.write_bytes(b"x" * 1000)
    orphan, live = folder / ".s9-0123.npz.abc123.tmp", folder / ".s9-4567.npz.def456.tmp"
    orphan.write_bytes(b"y" * 500)
    live.write_bytes(b"z")
    os.utime(orphan, (long_ago, long_ago))
    sizes = {p: p.stat().st_size for p in (old, corrupt, orphan)}

    assert cache_cmd.main(_prune_args("--dry-run")) == 0
    out = capsys.readouterr().out
    assert out.count("would remove ") == 4 and all(p.exists() for p in sizes)

    assert cache_cmd.main(_prune_args("--older-than", "30")) == 0
    out = capsys.readouterr().out
    assert not any(p.exists() for p in sizes), out
    assert fresh.exists() and live.exists()
    for p in sizes:
        assert str(p) in out
    assert f"removed 3 files, freed {cache_cmd._size(sum(sizes.values()))}" in out
    assert sorted(_manifest()) == [fresh.name.split("-")[0]]
    # the pruned subject is simply preprocessed again; a read marks an entry as used
    os.utime(fresh, (long_ago, long_ago))
    _read(root)
    assert len(_entries()) == 2 and time.time() - fresh.stat().st_atime < DAY
    assert abs(fresh.stat().st_mtime - long_ago) < 1, "a read must not look like a rebuild"
    assert prune_cache(older_than_days=30) == []


def test_prune_rejects_a_negative_age():
    with pytest.raises(ConfigError, match="--older-than -1.0: expected a number of days >= 0"):
        cache_cmd.main(_prune_args("--older-than", "-1"))
