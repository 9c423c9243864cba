"""I/O faults stay per subject (issue #18 item 4): a file this user may not read, a directory
where a file belongs and an I/O error while reading each skip that one subject with a reason
naming the file, and `prepare` / `run` complete with the others.

Permission denied is done for real: the tests run as root here, and root reads a chmod-000
file, so the reading runs in a subprocess that drops to the unprivileged user ``nobody``
after a warm-up run as root (the interpreter lives under /root, which nobody may not enter:
everything it needs is imported first).
"""
from __future__ import annotations

import errno
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
import minitrees as mt  # noqa: E402

from adbench.cli import main  # noqa: E402

TRAIN = "MICCAI_BraTS2020_TrainingData"
# every subject (the smoke preset keeps 2), and no figures or maps: not what is tested here
FAST = ["--set", "dataset.max_subjects=null", "--set", "runner.figures=false",
        "--set", "runner.write_maps=false"]


def _sid(i: int) -> str:
    return f"BraTS20_Training_{i:03d}"


def _rows(out: str) -> dict[str, tuple[str, str]]:
    """subject → (status, reason) from `adbench prepare`'s report table."""
    rows, last = {}, None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] in ("ok", "skipped"):
            last = parts[0]
            rows[last] = (parts[2], "")
        elif line.strip().startswith("reason:") and last is not None:
            rows[last] = (rows[last][0], line.split("reason:", 1)[1].strip())
    return rows


def _folder_tree(root: Path, n_train: int = 2, n_test: int = 3) -> Path:
    """``train/hcNN.nii.gz``, ``test/ptNN.nii.gz`` and ``test_masks/ptNN.nii.gz`` (4 mm MNI)."""
    shape, aff = mt.atlas_grid(4.0)
    anat = mt.sample_mni(shape, aff, centre_world=mt.MNI_CENTRE) * 500
    for i in range(n_train):
        mt.write_nifti(root / "train" / f"hc{i:02d}.nii.gz", anat * (1 + 0.02 * i), aff, np.float32)
    for i in range(n_test):
        les = np.zeros(shape, np.uint8)
        les[18 + i:23 + i, 30:35, 25:29] = 1
        img = np.where(les > 0, anat * 1.8, anat)
        mt.write_nifti(root / "test" / f"pt{i:02d}.nii.gz", img, aff, np.float32)
        mt.write_nifti(root / "test_masks" / f"pt{i:02d}.nii.gz", les, aff, np.uint8)
    return root


# -- permission denied, for real -------------------------------------------------------------
_AS_NOBODY = r'''
import contextlib, io, json, os, sys
warm_argvs, argvs, cache = json.loads(sys.argv[1])
from adbench.cli import main
for argv in warm_argvs:           # as root: imports everything the real runs need
    os.environ["ADBENCH_CACHE"] = cache + "/warm"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0, argv
os.environ["ADBENCH_CACHE"] = cache + "/real"
os.setgroups([]); os.setgid(65534); os.setuid(65534)
results = []
for argv in argvs:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    results.append({"rc": rc, "out": out.getvalue(), "err": err.getvalue()})
print("RESULTS " + json.dumps(results))
'''


def _nobody_available() -> bool:
    try:
        return os.geteuid() == 0 and pwd.getpwuid(65534).pw_name == "nobody"
    except KeyError:
        return False


@pytest.fixture
def shared_tmp():
    """A temporary folder the user nobody may enter (pytest's own is root-only, 0700)."""
    d = Path(tempfile.mkdtemp(prefix="adbench-nobody-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _open_to_nobody(root: Path, writable: list[Path]) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    for w in writable:
        w.mkdir(parents=True, exist_ok=True)
        w.chmod(0o777)


def _run_as_nobody(warm: list[list[str]], argvs: list[list[str]], cache: Path) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", _AS_NOBODY, json.dumps([warm, argvs, str(cache)])],
                          check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")), None)
    assert line is not None, f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(line[len("RESULTS "):])


@pytest.mark.slow   # a subprocess with a warm-up run: about 15 s
@pytest.mark.skipif(not _nobody_available(), reason="needs root and the user nobody (uid 65534) "
                    "to make a file unreadable for real")
def test_unreadable_files_skip_their_subject_in_prepare_and_run(shared_tmp):
    warm_b = mt.brats_tree(shared_tmp / "warm_brats", ids=(1,))
    warm_f = _folder_tree(shared_tmp / "warm_folder", n_test=2)
    brats = mt.brats_tree(shared_tmp / "brats", ids=(1, 2, 3))
    folder = _folder_tree(shared_tmp / "folder")
    runs = shared_tmp / "runs"
    _open_to_nobody(shared_tmp, [shared_tmp / "cache", runs])
    bad_t1 = brats / TRAIN / _sid(2) / f"{_sid(2)}_t1.nii.gz"
    bad_mask = folder / "test_masks" / "pt01.nii.gz"
    bad_t1.chmod(0)
    bad_mask.chmod(0)
    run = ["run", "-m", "zscore", "-d", "folder", "--preset", "smoke", "-q", *FAST]
    prepare_b, run_f = _run_as_nobody(
        warm=[["prepare", "-d", "brats", "--data-root", str(warm_b), "-q"],
              run + ["--data-root", str(warm_f), "-o", str(shared_tmp / "warm_runs")]],
        argvs=[["prepare", "-d", "brats", "--data-root", str(brats), "-q"],
               run + ["--data-root", str(folder), "-o", str(runs)]],
        cache=shared_tmp / "cache")

    assert prepare_b["rc"] == 0, prepare_b
    rows = _rows(prepare_b["out"])
    assert rows[_sid(1)][0] == rows[_sid(3)][0] == "ok"
    status, reason = rows[_sid(2)]
    assert status == "skipped" and str(bad_t1) in reason and "Permission denied" in reason

    assert run_f["rc"] == 0, run_f
    summary = json.loads(next(runs.glob("folder/zscore/*/summary.json")).read_text())
    assert summary["n_volumes"] == 2
    [skipped] = summary["skipped"]
    assert skipped["subject"] == "pt01"
    assert str(bad_mask) in skipped["reason"] and "Permission denied" in skipped["reason"]


# -- a directory where a file belongs ----------------------------------------------------------
def _dir_in_place(path: Path) -> Path:
    path.unlink()
    path.mkdir()
    (path / "README").write_text("someone unpacked into a folder named like the file\n")
    return path


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("trees")
    return {"brats": mt.brats_tree(base / "brats", ids=(1, 2, 3)),
            "openbhb": mt.openbhb_tree(base / "openbhb", ids=mt.OPENBHB_IDS[:3]),
            "atlas": mt.atlas_tree(base / "atlas", testing=False),
            "folder": _folder_tree(base / "folder")}


def _atlas(kind: str) -> Path:
    t1, mask = mt.atlas_paths(Path("."), "R001", "sub-r001s002")
    return t1 if kind == "t1" else mask


_OB = mt.OPENBHB_IDS[1]
# (dataset, file made a directory (relative to the tree), skipped subject, extra --set, expected)
DIR_CASES = {
    "brats-image": ("brats", f"{TRAIN}/{_sid(2)}/{_sid(2)}_t1.nii.gz", _sid(2), [], "a NIfTI file"),
    "brats-seg": ("brats", f"{TRAIN}/{_sid(2)}/{_sid(2)}_seg.nii.gz", _sid(2), [], "a NIfTI file"),
    "brats-seg-override": ("brats", f"{TRAIN}/{_sid(2)}/seg_final.nii.gz", _sid(2),
                           [f"seg_overrides={{{_sid(2)}: seg_final.nii.gz}}"], "a NIfTI file"),
    "openbhb-npy": ("openbhb", f"train/derivatives/sub-{_OB}/ses-1/sub-{_OB}_preproc-quasiraw_T1w.npy",
                    f"sub-{_OB}", [], "a .npy array file"),
    "atlas-t1": ("atlas", str(_atlas("t1")), "sub-r001s002", [], "a NIfTI file"),
    "atlas-mask": ("atlas", str(_atlas("mask")), "sub-r001s002", [], "a NIfTI file"),
    "folder-train-image": ("folder", "train/hc01.nii.gz", "hc01", [], "a NIfTI file"),
    "folder-test-image": ("folder", "test/pt01.nii.gz", "pt01", [], "a NIfTI file"),
    "folder-mask": ("folder", "test_masks/pt01.nii.gz", "pt01", [], "a NIfTI file"),
}


@pytest.mark.parametrize("case", list(DIR_CASES))
def test_directory_in_place_of_a_file_is_reported_as_such(case, trees, tmp_path, capsys):
    dataset, rel, subject, sets, expected = DIR_CASES[case]
    root = Path(shutil.copytree(trees[dataset], tmp_path / dataset))
    target = root / rel
    if target.exists():
        _dir_in_place(target)
    else:   # the override names a file that is not there: make it a folder
        target.mkdir()
    argv = ["prepare", "-d", dataset, "--data-root", str(root), "-q"]
    argv += [a for s in sets for a in ("--set", s)]
    if dataset == "openbhb":
        argv += ["--set", "n_subjects=null"]
    assert main(argv) == 0
    rows = _rows(capsys.readouterr().out)
    status, reason = rows[subject]
    assert status == "skipped"
    assert f"{target} is a directory; expected {expected}" in reason
    assert "seg_overrides:" not in reason and "no t1 image" not in reason  # no misleading advice
    assert [s for s, (st, _) in rows.items() if st == "ok"] and all(
        st == "ok" for s, (st, _) in rows.items() if s != subject)


def test_directory_in_place_of_a_mask_leaves_the_run_complete(trees, tmp_path, capsys):
    root = Path(shutil.copytree(trees["folder"], tmp_path / "folder"))
    mask = _dir_in_place(root / "test_masks" / "pt02.nii.gz")
    out = tmp_path / "runs"
    assert main(["run", "-m", "zscore", "-d", "folder", "--data-root", str(root), "--preset", "smoke",
                 "-q", "-o", str(out), *FAST]) == 0
    summary = json.loads(next(out.glob("folder/zscore/*/summary.json")).read_text())
    assert summary["n_volumes"] == 2
    [skipped] = summary["skipped"]
    assert skipped["subject"] == "pt02"
    assert f"{mask} is a directory; expected a NIfTI file" in skipped["reason"]


# -- an I/O error while reading (monkeypatched: a failing disk cannot be made on demand) -------
def test_io_error_while_reading_is_that_subjects_reason(trees, tmp_path, monkeypatch, capsys):
    import nibabel as nib

    root = Path(shutil.copytree(trees["brats"], tmp_path / "brats"))
    flaky = root / TRAIN / _sid(3) / f"{_sid(3)}_seg.nii.gz"
    real_load = nib.load

    def load(path, *args, **kwargs):
        if Path(path) == flaky:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(flaky))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(nib, "load", load)
    assert main(["prepare", "-d", "brats", "--data-root", str(root), "-q"]) == 0
    rows = _rows(capsys.readouterr().out)
    status, reason = rows[_sid(3)]
    assert status == "skipped" and str(flaky) in reason and "errno 5" in reason
    assert "truncated" not in reason       # the disk failed, not the file
    assert rows[_sid(1)][0] == rows[_sid(2)][0] == "ok"
    # --strict makes it a failure naming the file, exit 1
    assert main(["prepare", "-d", "brats", "--data-root", str(root), "-q", "--strict"]) == 1
    assert str(flaky) in capsys.readouterr().out
