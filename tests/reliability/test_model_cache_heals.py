"""The model cache heals itself and never lies about provenance (issue #18 items 1, 2, 8).

Each fault is done for real on the files a smoke run left in the cache, and the rerun is
checked against the undisturbed run's per_volume.csv (the independent truth):

* a truncated ``state.pt``, StyleGAN2 checkpoint, repository chunk or ``selection.json``:
  the rerun warns naming the file, moves it aside, rebuilds it and reproduces the metrics;
* a training volume that was unreadable, then restored, then changed: each run refits (never
  "cached" with the model of other training data) and its summary says why;
* files are created with the process umask (0644 / 0664), not mkstemp's 0600.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import toydata

from adbench.cli import main
from adbench.io import save_nifti

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--set", "runner.figures=false", "--set", "runner.write_maps=false"]


def _tree(root: Path, n_train: int = 3, n_test: int = 2) -> Path:
    """The toy volumes as a `folder` dataset: train/, test/ and test_masks/ NIfTI files."""
    for i in range(n_train):
        v = toydata.toy_volume(i, False)
        save_nifti(root / "train" / f"{v.subject_id}.nii.gz", v.image, v.affine)
    for i in range(n_test):
        v = toydata.toy_volume(i, True)
        save_nifti(root / "test" / f"{v.subject_id}.nii.gz", v.image, v.affine)
        save_nifti(root / "test_masks" / f"{v.subject_id}.nii.gz", v.lesion_mask.astype(np.uint8), v.affine)
    return root


def _run(method: str, tree: Path, out: Path, *extra: str) -> Path:
    before = set(out.glob(f"folder/{method}/*"))
    assert main(["run", "-m", method, "-d", "folder", "--data-root", str(tree), "--preset", "smoke",
                 "--set", "dataset.max_subjects=3", *extra, "-o", str(out), "-q"]) == 0
    (new,) = set(out.glob(f"folder/{method}/*")) - before
    return new


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def scrps_baseline(tmp_path_factory, one_thread):
    """One SCRPS smoke run (StyleGAN2 checkpoint, repository chunk and selection.json, state.pt)
    on a tiny folder dataset: (data tree, its cache, its run folder)."""
    base = tmp_path_factory.mktemp("scrps_baseline")
    saved = {k: os.environ.get(k) for k in ("ADBENCH_CACHE", "ADBENCH_OFFLINE", "TORCH_HOME")}
    os.environ.update(ADBENCH_CACHE=str(base / "cache"), ADBENCH_OFFLINE="1",
                      TORCH_HOME=str(base / "torch"))
    try:
        tree = _tree(base / "data")
        run_dir = _run("scrps", tree, base / "runs", *FAST)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert _summary(run_dir)["model"]["status"] == "fitted"
    return tree, base / "cache", run_dir


def _warm_copy(baseline, tmp_path, monkeypatch) -> tuple[Path, Path]:
    tree, cache, _ = baseline
    shutil.copytree(cache, tmp_path / "cache")
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    (mdir,) = (tmp_path / "cache" / "models" / "scrps").iterdir()
    return tree, mdir


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _warnings(caplog) -> list[str]:
    """The cache's warnings (SCRPS also warns that its smoke repository is small)."""
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "moved aside" in r.getMessage()]


@pytest.mark.slow
def test_a_truncated_model_state_is_refitted_from_the_intact_work_files(scrps_baseline, tmp_path,
                                                                        monkeypatch, caplog):
    tree, mdir = _warm_copy(scrps_baseline, tmp_path, monkeypatch)
    _truncate(mdir / "state.pt")
    with caplog.at_level(logging.WARNING, logger="adbench"):
        run_dir = _run("scrps", tree, tmp_path / "runs", *FAST)
    s = _summary(run_dir)
    assert s["model"]["status"] == "fitted" and "state.pt was unusable" in s["model"]["reason"]
    (w,) = _warnings(caplog)
    assert w.startswith(f"{mdir / 'state.pt'}: ") and "fitting scrps again" in w
    assert (run_dir / "per_volume.csv").read_bytes() == \
        (scrps_baseline[2] / "per_volume.csv").read_bytes()
    assert len(list(mdir.glob("state.pt.corrupt-*"))) == 1 and (mdir / "state.pt.sha256").is_file()
    again = _run("scrps", tree, tmp_path / "runs", *FAST)       # healed: cached from now on
    assert _summary(again)["model"]["status"] == "cached"


@pytest.mark.slow
def test_truncated_checkpoint_chunk_and_selection_are_rebuilt(scrps_baseline, tmp_path, monkeypatch,
                                                              caplog):
    # a fit killed after its last checkpoint and chunk (no state.pt), whose files then broke
    tree, mdir = _warm_copy(scrps_baseline, tmp_path, monkeypatch)
    (mdir / "state.pt").unlink()
    (ckpt,) = mdir.glob("work/stylegan-*/stylegan2-checkpoint.pt")
    chunk = mdir / "work" / "repository" / "chunk-00000.safetensors"
    selection = mdir / "work" / "repository" / "selection.json"
    for f in (ckpt, chunk, selection):
        _truncate(f)
    with caplog.at_level(logging.WARNING, logger="adbench"):
        run_dir = _run("scrps", tree, tmp_path / "runs", *FAST)
    warned = _warnings(caplog)
    for f in (ckpt, chunk, selection):
        assert sum(w.startswith(f"{f}: ") for w in warned) == 1, (f, warned)
    assert len(warned) == 3
    assert (run_dir / "per_volume.csv").read_bytes() == \
        (scrps_baseline[2] / "per_volume.csv").read_bytes()


def _damage_in_place(path: Path) -> None:
    """Zero the middle of a file, same size and mtime (as a bad sector or a torn copy does)."""
    st = path.stat()
    raw = bytearray(path.read_bytes())
    a, b = len(raw) // 4, 3 * len(raw) // 4
    raw[a:b] = bytes(b - a)
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_changed_training_set_is_never_served_a_stale_model(tmp_path):
    tree = _tree(tmp_path / "data")
    out = tmp_path / "runs"
    vol = tree / "train" / "toyH01.nii.gz"
    good, st = vol.read_bytes(), vol.stat()

    _damage_in_place(vol)                      # unreadable: the fit skips toyH01
    s1 = _summary(_run("zscore", tree, out, *FAST))
    assert s1["model"]["status"] == "fitted"
    assert s1["training_set"]["skipped"] == ["toyH01"] and s1["training_set"]["n_subjects"] == 2

    vol.write_bytes(good)                      # restored, mtime too (cp -p, rsync -t)
    os.utime(vol, ns=(st.st_atime_ns, st.st_mtime_ns))
    s2 = _summary(_run("zscore", tree, out, *FAST))
    # the dataset's own fingerprint (names, sizes, mtimes) is the same: only the training set
    # actually used tells the two fits apart
    assert s2["training_set"]["dataset_fingerprint"] == s1["training_set"]["dataset_fingerprint"]
    assert s2["model"]["status"] == "fitted" and s2["model"]["key"] != s1["model"]["key"]
    assert s2["training_set"]["subjects"] == ["toyH00", "toyH01", "toyH02"]
    assert s2["training_set"]["skipped"] == [] and s2["n_train_slices"] > s1["n_train_slices"]
    assert s2["model"]["reason"].startswith(f"training data changed since cached model {s1['model']['key']}")
    assert "used now but not then (toyH01)" in s2["model"]["reason"]

    v = toydata.toy_volume(1, False, seed=7)   # other content for the same subject
    save_nifti(vol, v.image, v.affine)
    s3 = _summary(_run("zscore", tree, out, *FAST))
    assert s3["model"]["status"] == "fitted"
    assert "1 subject(s) changed (toyH01)" in s3["model"]["reason"]
    assert s3["training_set"]["fingerprint"] != s2["training_set"]["fingerprint"]

    s4 = _summary(_run("zscore", tree, out, *FAST))   # nothing changed: the model is reused
    assert s4["model"]["status"] == "cached" and s4["model"]["key"] == s3["model"]["key"]
    assert s4["training_set"] == s3["training_set"]


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664)], ids=["umask022", "umask002"])
def test_run_and_cache_files_get_the_mode_of_the_umask(tmp_path, mask, mode):
    tree = _tree(tmp_path / "data", n_train=2, n_test=1)
    old = os.umask(mask)
    try:
        run_dir = _run("zscore", tree, tmp_path / "runs")
    finally:
        os.umask(old)
    cache = Path(os.environ["ADBENCH_CACHE"])
    files = [p for d in (run_dir, cache) for p in d.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    for want in ("summary.json", "per_volume.csv", "config.yaml", "state.pt", "state.pt.sha256",
                 "manifest.json"):
        assert want in names, want
    assert any(p.suffix == ".npz" for p in files) and any(p.name.endswith(".nii.gz") for p in files)
    wrong = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) != mode}
    assert not wrong, wrong
