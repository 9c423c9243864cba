"""End to end: a smoke run writes maps_native/ on each source scan's grid, and
`adbench evaluate --native RUN` scores them against the dataset's own files.

The data is a `folder` dataset of small NIfTI scans stored P-I-L (no axis where RAS has it,
the superior axis second), so the run must undo a real reorientation and the evaluation must
find the axial axis from the affine."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
import minitrees as mt  # noqa: E402

from adbench.cli import main  # noqa: E402
from adbench.rundir import read_per_volume  # noqa: E402

CODES = ("P", "I", "L")
STEP = 5.0


def _scan(i: int, lesion: bool):
    shape, aff = mt.atlas_grid(STEP)
    img = mt.sample_mni(shape, aff, centre_world=mt.MNI_CENTRE) * 500
    les = np.zeros(shape, np.uint8)
    if lesion:
        les[14 + i:20 + i, 22:28, 18:23] = 1
        img[les > 0] *= 2.0
    o = nib.orientations
    tf = o.ornt_transform(o.axcodes2ornt(("R", "A", "S")), o.axcodes2ornt(CODES))
    aff2 = aff @ o.inv_ornt_aff(tf, shape)
    return (o.apply_orientation(img, tf).astype(np.float32), o.apply_orientation(les, tf), aff2)


@pytest.fixture(scope="module")
def native_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder_data")
    for i in range(3):
        img, _, aff = _scan(i, False)
        mt.write_nifti(root / "train" / f"hc{i}.nii.gz", img, aff)
    for i in range(2):
        img, les, aff = _scan(i, True)
        mt.write_nifti(root / "test" / f"pt{i}.nii.gz", img, aff)
        mt.write_nifti(root / "test_masks" / f"pt{i}.nii.gz", les, aff, np.uint8)
    out = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("ADBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        assert main(["run", "--method", "zscore", "--dataset", "folder", "--data-root", str(root),
                     "--preset", "smoke", "-o", str(out), "-q", "--set", "runner.figures=false"]) == 0
    finally:
        mp.undo()
    (run,) = out.glob("folder/zscore/*")
    return run, root


def test_smoke_run_writes_native_maps_on_the_source_grid(native_run):
    run, root = native_run
    files = sorted((run / "maps_native").glob("*.nii.gz"))
    assert [f.name for f in files] == ["pt0.nii.gz", "pt1.nii.gz"]
    for f in files:
        src = nib.load(str(root / "test" / f.name))
        img = nib.load(str(f))
        assert nib.aff2axcodes(img.affine) == CODES
        assert img.shape == src.shape != nib.load(str(run / "maps" / f.name)).shape
        np.testing.assert_allclose(img.affine, src.affine, atol=1e-6)
        assert np.isfinite(np.asanyarray(img.dataobj)).all()


def test_evaluate_native_scores_against_the_datasets_own_files(native_run, tmp_path, capsys):
    run, root = native_run
    out = tmp_path / "native.csv"
    assert main(["evaluate", "--native", str(run), "--out", str(out),
                 "--run-dir", str(tmp_path / "native_run")]) == 0
    rows = {r["subject"]: r for r in read_per_volume(out)}
    grid = {r["subject"]: r for r in read_per_volume(run / "per_volume.csv")}
    assert sorted(rows) == ["pt0", "pt1"]
    for s, r in rows.items():
        # independent oracle: the files themselves, the region by hand, sklearn's AUROC
        amap = np.asanyarray(nib.load(str(run / "maps_native" / f"{s}.nii.gz")).dataobj)
        les = np.asanyarray(nib.load(str(root / "test_masks" / f"{s}.nii.gz")).dataobj) > 0
        brain = np.asanyarray(nib.load(str(root / "test" / f"{s}.nii.gz")).dataobj) > 0
        axial = CODES.index("I")                           # the superior-inferior voxel axis
        other = tuple(a for a in range(3) if a != axial)
        slices = les.any(axis=other)
        region = brain & np.expand_dims(slices, other)
        assert r["n_voxels"] == region.sum() and r["n_lesion_voxels"] == (les & region).sum()
        assert r["n_slices"] == slices.sum()
        assert r["auroc"] == pytest.approx(roc_auc_score(les[region], amap[region]), abs=1e-12)
        # the same map on the source grid ranks voxels as on the preprocessed grid
        assert abs(r["auroc"] - grid[s]["auroc"]) < 0.05, (r["auroc"], grid[s]["auroc"])  # 0.842 vs 0.851
    s = json.loads((tmp_path / "native_run" / "summary.json").read_text())
    assert s["definitions"]["region_rule"].startswith("native") and s["method"] == "zscore"


def test_evaluate_native_errors_name_the_file_and_the_fix(native_run, tmp_path, capsys):
    run, _ = native_run
    bad = tmp_path / "bad"
    (bad / "maps_native").mkdir(parents=True)
    (bad / "config.yaml").write_text((run / "config.yaml").read_text())
    img = nib.load(str(run / "maps_native" / "pt0.nii.gz"))
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), np.diag([2.0, 2, 2, 1])),
             str(bad / "maps_native" / "pt0.nii.gz"))
    assert main(["evaluate", "--native", str(bad), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "affine mismatch" in err and "pt0.nii.gz" in err
    assert main(["evaluate", "--native", str(tmp_path), "--out", str(tmp_path / "x.csv")]) == 2
    assert "maps_native" in capsys.readouterr().err
    assert main(["evaluate", "--native", str(run), "--maps", "x", "--out", str(tmp_path / "x.csv")]) == 2
    assert "drop --maps" in capsys.readouterr().err
    assert main(["evaluate", "--maps", "x", "--out", str(tmp_path / "x.csv")]) == 2
    assert "--labels GLOB are required" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
