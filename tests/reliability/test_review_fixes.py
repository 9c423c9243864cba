"""Faults found in review of the reliability work, each done for real:

* a data folder copied elsewhere (new paths, new mtimes) keeps its cached model;
* a same-size rewrite that kept its mtime (``cp -p`` of another version) is rehashed;
* ``adbench cache prune`` on a folder that is not a cache removes nothing;
* a plugin hook returning a generator that raises disables only that plugin;
* an OS error while reading a cached file is not mistaken for corruption.
"""
from __future__ import annotations

import json
import os
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import toydata

import adbench.plugins as plugins
from adbench import MethodSpec, hookimpl
from adbench.cli import main
from adbench.data.cache import SliceCache
from adbench.data.preprocess import PreprocessConfig
from adbench.io import CorruptCacheError, load_verified, save_tensors
from adbench.io import save_nifti

pytestmark = pytest.mark.usefixtures("one_thread")


def _tree(root: Path) -> Path:
    for i in range(3):
        v = toydata.toy_volume(i, False)
        save_nifti(root / "train" / f"{v.subject_id}.nii.gz", v.image, v.affine)
    for i in range(2):
        v = toydata.toy_volume(i, True)
        save_nifti(root / "test" / f"{v.subject_id}.nii.gz", v.image, v.affine)
        save_nifti(root / "test_masks" / f"{v.subject_id}.nii.gz",
                   v.lesion_mask.astype(np.uint8), v.affine)
    return root


def _status(out: Path, tree: Path) -> dict:
    before = set(out.glob("folder/zscore/*"))
    assert main(["run", "-m", "zscore", "-d", "folder", "--data-root", str(tree), "--preset",
                 "smoke", "--set", "runner.figures=false", "-o", str(out), "-q"]) == 0
    (new,) = set(out.glob("folder/zscore/*")) - before
    return json.loads((new / "summary.json").read_text())["model"]


def test_a_copied_data_folder_keeps_its_model(tmp_path, monkeypatch):
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    a = _tree(tmp_path / "a")
    first = _status(tmp_path / "runs", a)
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b, copy_function=shutil.copy)   # new paths and new mtimes
    second = _status(tmp_path / "runs", b)
    assert first["status"] == "fitted" and second["status"] == "cached"
    assert first["key"] == second["key"]


def test_a_same_size_rewrite_with_the_old_mtime_is_rehashed(tmp_path, monkeypatch):
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "x.bin"
    f.write_bytes(b"a" * 64)
    st = f.stat()
    ds = types.SimpleNamespace(params=lambda: {}, source_files=lambda s: [f])
    cache = SliceCache(ds, "probe", PreprocessConfig(), root=tmp_path / "slices")
    old = cache._file_hash(f)
    f.write_bytes(b"b" * 64)                                   # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))           # same mtime, as cp -p keeps it
    assert cache._file_hash(f) != old


def test_prune_refuses_a_folder_that_is_not_a_cache(tmp_path, capsys):
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    keep = [home / "report.corrupt-draft.txt", home / "notes" / ".x.tmp"]
    for k in keep:
        k.write_text("mine")
        os.utime(k, (1, 1))
    assert main(["cache", "prune", "--cache-dir", str(home), "--older-than", "0"]) == 2
    assert "none of the cache folders" in capsys.readouterr().err
    assert all(k.exists() for k in keep)


class _Raising:
    @hookimpl
    def adbench_methods(self):
        yield from ()
        raise RuntimeError("broken generator")


class _Fine:
    @hookimpl
    def adbench_methods(self):
        from adbench.methods.zscore.detector import ZScore
        return [MethodSpec(name="fine", factory=ZScore, kind="baseline", description="ok")]


def test_a_hook_generator_that_raises_disables_only_its_plugin():
    reg = plugins.build_registry(extra_plugins=[("raising", _Raising(), "bad 1"),
                                                ("fine", _Fine(), "good 1")])
    assert "fine" in reg.methods and "zscore" in reg.methods
    assert "raising" in reg.broken and "broken generator" in reg.broken["raising"]


def test_an_os_error_while_reading_is_not_called_corruption(tmp_path):
    import torch
    path = tmp_path / "state.pt"
    save_tensors(path, {"a": torch.ones(3)})

    def failing(_):
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError) as err:
        load_verified(path, failing)
    assert not isinstance(err.value, CorruptCacheError)
    # a loader error on a file whose checksum verified is not corruption either
    with pytest.raises(RuntimeError):
        load_verified(path, lambda p: (_ for _ in ()).throw(RuntimeError("a bug elsewhere")))
    assert path.exists()
