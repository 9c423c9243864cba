"""Generic NIfTI-folder reader: patterns, manifest, problems, and orientation invariance of
the shared preprocessing (a non-RAS file gives the slices of its RAS version)."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minitrees as mt  # noqa: E402

from adbench import DataError  # noqa: E402
from adbench.data.preprocess import PreprocessConfig, preprocess_volume  # noqa: E402
from adbench.datasets.folder.reader import NiftiFolder  # noqa: E402
from adbench.plugins import get_registry  # noqa: E402

STEP = 4.0


def _volume(i: int, lesion: bool):
    shape, aff = mt.atlas_grid(STEP)
    img = mt.sample_mni(shape, aff, centre_world=mt.MNI_CENTRE) * 500
    les = np.zeros(shape, np.uint8)
    if lesion:
        les[18 + i:23 + i, 30:35, 25:29] = 1
        img[les > 0] *= 1.8
    return img.astype(np.float32), les, aff


def _tree(root: Path, n_train=2, n_test=2) -> Path:
    for i in range(n_train):
        img, _, aff = _volume(i, False)
        mt.write_nifti(root / "train" / f"hc{i:02d}.nii.gz", img, aff)
    for i in range(n_test):
        img, les, aff = _volume(i, True)
        mt.write_nifti(root / "test" / f"pt{i:02d}.nii.gz", img, aff)
        mt.write_nifti(root / "test_masks" / f"pt{i:02d}.nii.gz", les, aff, np.uint8)
    return root


def test_default_patterns_split_healthy_and_lesioned(tmp_path):
    root = _tree(tmp_path)
    ds = get_registry().dataset("folder").factory(data_root=str(root))
    assert ds.subjects("train") == ["hc00", "hc01"] and ds.subjects("test") == ["pt00", "pt01"]
    assert ds.problems("train") == ds.problems("test") == []
    hc, pt = ds.load("hc01"), ds.load("pt01")
    assert hc.lesion_mask is None
    les = np.asarray(nib.load(str(root / "test_masks" / "pt01.nii.gz")).dataobj)
    np.testing.assert_array_equal(pt.lesion_mask, les > 0)
    np.testing.assert_array_equal(pt.brain_mask, pt.image > 0)
    assert [p.name for p in ds.source_files("pt01")] == ["pt01.nii.gz", "pt01.nii.gz"]


def test_regex_ids_brain_pattern_and_missing_mask(tmp_path):
    img, les, aff = _volume(0, True)
    brain = (img > 0).astype(np.uint8)
    brain[:, :, :5] = 0
    for s in ("A", "B"):
        mt.write_nifti(tmp_path / "pat" / f"case{s}_t1.nii.gz", img, aff)
        mt.write_nifti(tmp_path / "pat" / f"case{s}_brain.nii", brain, aff, np.uint8)
    mt.write_nifti(tmp_path / "pat" / "caseA_seg.nii.gz", les, aff, np.uint8)
    ds = NiftiFolder(data_root=str(tmp_path), train_pattern=None, test_pattern="pat/*_t1.nii.gz",
                     mask_pattern="{dir}/{subject}_seg.nii*", brain_pattern="pat/{subject}_brain.nii*",
                     subject_regex=r"(?P<subject>case\w)_t1")
    assert ds.subjects("test") == ["caseA"]
    [p] = ds.problems("test")
    assert p["subject"] == "caseB" and "no lesion mask matches 'pat/caseB_seg.nii*'" in p["reason"]
    vol = ds.load("caseA")
    np.testing.assert_array_equal(vol.brain_mask, brain > 0)
    assert vol.meta["brain_mask_source"] == "file"


def test_manifest(tmp_path):
    root = _tree(tmp_path, 1, 1)
    with open(root / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "image", "mask", "split"])
        w.writerow(["h", "train/hc00.nii.gz", "", ""])
        w.writerow(["p", "test/pt00.nii.gz", "test_masks/pt00.nii.gz", ""])
        w.writerow(["q", "test/missing.nii.gz", "test_masks/pt00.nii.gz", "test"])
        w.writerow(["r", "train/hc00.nii.gz", "", "validation"])
    ds = NiftiFolder(data_root=str(root), manifest="list.csv")
    assert ds.subjects("train") == ["h"] and ds.subjects("test") == ["p"]
    reasons = {p["subject"]: p["reason"] for p in ds.problems("test")}
    assert "missing.nii.gz does not exist" in reasons["q"] and "split in" in reasons["r"]
    np.testing.assert_array_equal(ds.load("p").lesion_mask,
                                  np.asarray(nib.load(str(root / "test_masks/pt00.nii.gz")).dataobj) > 0)


def test_duplicate_ids_and_empty_test_mask(tmp_path):
    root = _tree(tmp_path, 1, 2)
    img, _, aff = _volume(0, False)
    mt.write_nifti(root / "train" / "hc00.nii", img, aff)               # same id, other copy
    mt.write_nifti(root / "test_masks" / "pt01.nii.gz", np.zeros(img.shape, np.uint8), aff, np.uint8)
    ds = NiftiFolder(data_root=str(root))
    [p] = ds.problems("train")
    assert p["subject"] == "hc00" and "duplicate subject id 'hc00'" in p["reason"]
    assert p["path"].endswith("hc00.nii.gz") and "hc00.nii;" in p["reason"]
    assert ds.problems("test") == []
    with pytest.raises(DataError, match="lesion mask is empty") as exc:
        ds.load("pt01")
    assert str(root / "test_masks" / "pt01.nii.gz") in str(exc.value)


def test_no_images_or_bad_root(tmp_path):
    with pytest.raises(DataError, match="match train_pattern='train/\\*.nii\\*'"):
        NiftiFolder(data_root=str(tmp_path)).subjects("train")
    with pytest.raises(DataError, match="not an existing folder"):
        NiftiFolder(data_root=str(tmp_path / "x")).subjects("test")


@pytest.mark.parametrize("codes", [("L", "P", "S"), ("P", "I", "L"), ("S", "R", "P")])
def test_non_ras_file_gives_the_same_preprocessed_slices(tmp_path, codes):
    img, les, aff = _volume(1, True)
    assert nib.aff2axcodes(aff) == ("R", "A", "S")
    ornt = nib.orientations
    tf = ornt.ornt_transform(ornt.axcodes2ornt(("R", "A", "S")), ornt.axcodes2ornt(codes))
    aff2 = aff @ ornt.inv_ornt_aff(tf, img.shape)
    img2, les2 = ornt.apply_orientation(img, tf), ornt.apply_orientation(les, tf)
    assert nib.aff2axcodes(aff2) == codes
    mt.write_nifti(tmp_path / "test" / "ras.nii.gz", img, aff)
    mt.write_nifti(tmp_path / "test_masks" / "ras.nii.gz", les, aff, np.uint8)
    mt.write_nifti(tmp_path / "test" / "other.nii.gz", img2, aff2)
    mt.write_nifti(tmp_path / "test_masks" / "other.nii.gz", les2, aff2, np.uint8)
    ds = NiftiFolder(data_root=str(tmp_path))
    a, b = ds.load("ras"), ds.load("other")
    assert a.image.shape != b.image.shape or not np.array_equal(a.image, b.image)
    cfg = PreprocessConfig()
    pa, pb = preprocess_volume(a, cfg), preprocess_volume(b, cfg)
    assert pa.image.shape[:2] == (160, 128)
    np.testing.assert_array_equal(pa.image, pb.image)
    np.testing.assert_array_equal(pa.brain, pb.brain)
    np.testing.assert_array_equal(pa.lesion, pb.lesion)
    np.testing.assert_allclose(pa.affine, pb.affine, atol=1e-9)
    assert pa.lesion.any()


def test_mask_resampled_with_linear_interpolation_is_refused(tmp_path):
    root = _tree(tmp_path, 0, 1)
    img, les, aff = _volume(0, True)
    blurred = les.astype(np.float32)
    blurred[les > 0] = 0.5                                   # what trilinear resampling leaves
    mt.write_nifti(root / "test_masks" / "pt00.nii.gz", blurred, aff, np.float32)
    with pytest.raises(DataError, match="non-integer values .*nearest-neighbour") as exc:
        NiftiFolder(data_root=str(root)).load("pt00")
    assert "pt00.nii.gz" in str(exc.value)


def test_validate_volume_catches_what_a_third_party_reader_lets_through():
    from adbench import Volume
    from adbench.data.validate import validate_volume
    img = np.ones((4, 4, 4), np.float32)
    ok = Volume(img, img > 0, img > 0, np.eye(4), "s", {"image_path": "/x/s.nii"})
    validate_volume(ok, require_lesion=True)
    with pytest.raises(DataError, match="brain mask is empty"):
        validate_volume(Volume(img, img < 0, None, np.eye(4), "s"))
    with pytest.raises(DataError, match="/x/s.nii: test subject 's' has no lesion mask"):
        validate_volume(Volume(img, img > 0, None, np.eye(4), "s", {"image_path": "/x/s.nii"}),
                        require_lesion=True)
    with pytest.raises(DataError, match="lesion mask is empty"):
        validate_volume(Volume(img, img > 0, img < 0, np.eye(4), "s"), require_lesion=True)
    bad = img.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(DataError, match="non-finite"):
        validate_volume(Volume(bad, img > 0, None, np.eye(4), "s"))
