"""`adbench prepare` and an end-to-end `adbench run` on miniature BraTS2020 / OpenBHB / ATLAS
trees, called through the CLI's ``main(argv)`` as a user would."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
import minitrees as mt  # noqa: E402

from adbench.cli import main  # noqa: E402

TRAIN = "MICCAI_BraTS2020_TrainingData"
FIX_004 = "dataset.seg_overrides={BraTS20_Training_004: seg_final.nii.gz}"


def _cache() -> Path:
    return Path(os.environ["ADBENCH_CACHE"]) / "slices"


def _rows(out: str) -> dict[str, str]:
    """subject → status from the report table."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] in ("ok", "skipped"):
            rows[parts[0]] = parts[2]
    return rows


@pytest.fixture()
def brats(tmp_path):
    # 003: unreadable image; 004: a misnamed segmentation adbench does not know; 355: the
    # release's own misnamed segmentation, which adbench knows
    root = mt.brats_tree(tmp_path / "brats", ids=(1, 2, 3, 4), quirk_355=True,
                         misnamed={4: "seg_final.nii.gz"})
    mt.truncate(root / TRAIN / "BraTS20_Training_003" / "BraTS20_Training_003_t1.nii.gz")
    return root


def test_prepare_reports_skips_and_caches(brats, capsys):
    assert main(["prepare", "--dataset", "brats", "--data-root", str(brats)]) == 0
    out = capsys.readouterr().out
    assert _rows(out) == {"BraTS20_Training_001": "ok", "BraTS20_Training_002": "ok",
                          "BraTS20_Training_003": "skipped", "BraTS20_Training_004": "skipped",
                          "BraTS20_Training_355": "ok"}
    assert "seg_final.nii.gz" in out and "cannot read the image" in out
    assert str(brats / TRAIN / "BraTS20_Training_003" / "BraTS20_Training_003_t1.nii.gz") in out
    assert "brats: 3 ok, 2 skipped" in out
    manifest = json.loads((_cache() / "brats" / "manifest.json").read_text())
    assert sorted(manifest) == ["BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_355"]
    assert {Path(p).name for p in manifest["BraTS20_Training_355"]["sources"]} == {
        "BraTS20_Training_355_t1.nii", "W39_1998.09.19_Segm.nii"}
    src = manifest["BraTS20_Training_001"]["sources"]
    assert {Path(p).name for p in src} == {"BraTS20_Training_001_t1.nii.gz", "BraTS20_Training_001_seg.nii.gz"}
    # with the mapping the message suggests, subject 004 is prepared too
    assert main(["prepare", "-d", "brats", "--data-root", str(brats), "--set", FIX_004]) == 0
    assert _rows(capsys.readouterr().out)["BraTS20_Training_004"] == "ok"


def test_strict_stops_at_the_first_bad_subject(brats, capsys):
    assert main(["prepare", "--dataset", "brats", "--data-root", str(brats), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "--strict: stopped at the first bad subject" in out and "BraTS20_Training_004" in out


def test_wrong_folder_and_unknown_key_are_usage_errors(tmp_path, capsys):
    assert main(["prepare", "--dataset", "brats", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"no BraTS20_Training_*/ folders under {tmp_path}" in err
    assert "MICCAI_BraTS2020_TrainingData" in err
    assert main(["prepare", "--dataset", "brats", "--data-root", str(tmp_path), "--strict"]) == 2
    assert "no BraTS20_Training_*/ folders" in capsys.readouterr().err
    assert main(["prepare", "--dataset", "brats", "--data-root", str(tmp_path), "--set", "modalty=t1"]) == 2
    assert "Did you mean 'modality'" in capsys.readouterr().err
    assert main(["prepare", "--dataset", "brats", "--data-root", str(tmp_path), "--split", "train"]) == 2
    assert "no 'train' split" in capsys.readouterr().err


def test_changed_or_added_file_invalidates_only_its_entry(tmp_path, capsys):
    root = mt.brats_tree(tmp_path / "b", ids=(1, 2), name_mapping=False)
    assert main(["prepare", "-d", "brats", "--data-root", str(root)]) == 0
    before = json.loads((_cache() / "brats" / "manifest.json").read_text())
    entry1 = _cache() / "brats" / before["BraTS20_Training_001"]["file"]
    mtime1 = entry1.stat().st_mtime_ns
    t1 = root / TRAIN / "BraTS20_Training_002" / "BraTS20_Training_002_t1.nii.gz"
    img = nib.load(str(t1))
    data = np.asarray(img.dataobj).copy()
    data[data > 0] += 7
    mt.write_nifti(t1, data, img.affine, np.int16)
    mt.brats_tree(tmp_path / "b", ids=(4,), name_mapping=False)            # an added subject
    assert main(["prepare", "-d", "brats", "--data-root", str(root)]) == 0
    capsys.readouterr()
    after = json.loads((_cache() / "brats" / "manifest.json").read_text())
    assert after["BraTS20_Training_001"]["key"] == before["BraTS20_Training_001"]["key"]
    assert entry1.stat().st_mtime_ns == mtime1                              # not rebuilt
    assert after["BraTS20_Training_002"]["key"] != before["BraTS20_Training_002"]["key"]
    assert "BraTS20_Training_004" in after


def test_prepare_train_split_of_openbhb_and_atlas(tmp_path, capsys):
    ob = mt.openbhb_tree(tmp_path / "ob", mt.OPENBHB_IDS[:3])
    assert main(["prepare", "-d", "openbhb", "--data-root", str(ob), "--preset", "smoke"]) == 0
    out = capsys.readouterr().out
    assert list(_rows(out).values()) == ["ok"] * 3
    at = mt.atlas_tree(tmp_path / "at", testing=False)
    assert main(["prepare", "-d", "atlas", "--data-root", str(at), "--split", "test"]) == 0
    assert list(_rows(capsys.readouterr().out).values()) == ["ok"] * 3


@pytest.mark.slow
def test_run_brats_trained_on_openbhb_uses_the_prepared_cache(brats, tmp_path, capsys):
    ob = mt.openbhb_tree(tmp_path / "ob", mt.OPENBHB_IDS[:4])
    assert main(["prepare", "-d", "brats", "--data-root", str(brats)]) == 0
    entries = {p: p.stat().st_mtime_ns for p in (_cache() / "brats").glob("*.npz")}
    assert len(entries) == 3                         # 001, 002, 355
    capsys.readouterr()
    rc = main(["run", "--preset", "smoke", "--method", "zscore", "--dataset", "brats",
               "--data-root", str(brats), "--train-on", "openbhb", "--train-root", str(ob),
               "--set", "dataset.max_subjects=null",     # the smoke preset's 2 lack 355
               "--output", str(tmp_path / "runs"), "--quiet"])
    assert rc == 0
    [run_dir] = list((tmp_path / "runs" / "brats" / "zscore").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_volumes"] == 3                 # 001, 002 and 355
    skipped = {s["subject"]: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == {"BraTS20_Training_003", "BraTS20_Training_004"}
    assert "seg_overrides" in skipped["BraTS20_Training_004"]
    # the release's misnamed segmentation was read, and the summary says so
    assert summary["data_sources"]["seg_source"] == [
        "BraTS20_Training_355: W39_1998.09.19_Segm.nii (known BraTS2020 release quirk)"]
    assert 0.5 < summary["auroc_mean"] <= 1.0        # tumours differ from healthy anatomy
    # the test volumes came from the prepare cache: no entry was rewritten
    assert {p: p.stat().st_mtime_ns for p in (_cache() / "brats").glob("*.npz")} == entries
