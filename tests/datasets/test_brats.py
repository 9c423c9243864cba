"""BraTS2020 reader on miniature copies of the release (real names, LPS headers, dtypes,
the subject-355 segmentation-name quirk, .nii copies) and on broken files."""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minitrees as mt  # noqa: E402

from adbench import DataError  # noqa: E402
from adbench.datasets.brats.reader import KNOWN_SEG_NAMES, BraTS2020  # noqa: E402
from adbench.plugins import get_registry  # noqa: E402

TRAIN = "MICCAI_BraTS2020_TrainingData"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return mt.brats_tree(tmp_path_factory.mktemp("brats"), ids=(1, 2, 3), quirk_355=True)


def _sid(i):
    return f"BraTS20_Training_{i:03d}"


def test_lists_and_loads_like_the_files(tree):
    ds = get_registry().dataset("brats").factory(data_root=str(tree))
    assert ds.subjects("test") == [_sid(1), _sid(2), _sid(3), _sid(355)]
    vol = ds.load(_sid(2))
    t1 = nib.load(str(tree / TRAIN / _sid(2) / f"{_sid(2)}_t1.nii.gz"))
    seg = np.asarray(nib.load(str(tree / TRAIN / _sid(2) / f"{_sid(2)}_seg.nii.gz")).dataobj)
    assert t1.get_data_dtype() == np.int16 and seg.dtype == np.uint8
    assert vol.image.shape == mt.BRATS_SHAPE
    np.testing.assert_array_equal(vol.image, np.asarray(t1.dataobj, dtype=np.float32))
    np.testing.assert_array_equal(vol.affine, t1.affine)
    assert nib.aff2axcodes(vol.affine) == ("L", "P", "S")           # native grid, not reoriented
    np.testing.assert_array_equal(vol.lesion_mask, seg > 0)
    assert set(np.unique(seg)) == {0, 1, 2, 4}
    np.testing.assert_array_equal(vol.brain_mask, np.asarray(t1.dataobj) > 0)
    assert vol.meta["grade"] == "LGG" and vol.meta["tcga_tcia_id"] == "TCGA-02-0002"
    assert vol.meta["lesion_rule"] == "label > 0"
    assert [str(p) for p in ds.source_files(_sid(2))] == [vol.meta["image_path"], vol.meta["lesion_path"]]


def test_data_root_may_be_the_training_folder_itself(tree):
    a = BraTS2020(data_root=str(tree)).subjects("test")
    b = BraTS2020(data_root=str(tree / TRAIN)).subjects("test")
    assert a == b == [_sid(1), _sid(2), _sid(3), _sid(355)]


def test_nii_copy_loads_like_the_gz_copy(tree, tmp_path):
    nii = mt.brats_tree(tmp_path, ids=(2,), ext=".nii", name_mapping=False)
    assert (nii / TRAIN / _sid(2) / f"{_sid(2)}_t1.nii").is_file()
    a = BraTS2020(data_root=str(nii)).load(_sid(2))
    b = BraTS2020(data_root=str(tree)).load(_sid(2))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.lesion_mask, b.lesion_mask)
    assert a.meta["image_path"].endswith("_t1.nii") and "grade" not in a.meta


def test_subject_355_is_read_under_its_released_name_and_recorded(tree):
    ds = BraTS2020(data_root=str(tree))
    assert ds.problems("test") == []
    assert ds.subjects("test") == [_sid(1), _sid(2), _sid(3), _sid(355)]
    vol = ds.load(_sid(355))
    seg_file = tree / TRAIN / _sid(355) / KNOWN_SEG_NAMES[_sid(355)]
    assert seg_file.name == "W39_1998.09.19_Segm.nii"
    seg = np.asarray(nib.load(str(seg_file)).dataobj)
    np.testing.assert_array_equal(vol.lesion_mask, seg > 0)
    assert vol.meta["lesion_path"] == str(seg_file)
    assert vol.meta["seg_source"] == (f"{_sid(355)}: W39_1998.09.19_Segm.nii "
                                      f"(known BraTS2020 release quirk)")
    assert [str(p) for p in ds.source_files(_sid(355))][1] == str(seg_file)
    assert "seg_source" not in ds.load(_sid(1)).meta          # the usual name: nothing to record


def test_known_name_in_a_gzipped_copy_and_a_renamed_file_comes_first(tmp_path):
    root = mt.brats_tree(tmp_path, ids=(), quirk_355=True, name_mapping=False)
    d = root / TRAIN / _sid(355)
    released = d / "W39_1998.09.19_Segm.nii"
    img = nib.load(str(released))
    mt.write_nifti(d / "W39_1998.09.19_Segm.nii.gz", np.asarray(img.dataobj), img.affine, np.uint8)
    released.unlink()
    vol = BraTS2020(data_root=str(root)).load(_sid(355))
    assert vol.meta["lesion_path"] == str(d / "W39_1998.09.19_Segm.nii.gz")
    (d / "W39_1998.09.19_Segm.nii.gz").rename(d / f"{_sid(355)}_seg.nii.gz")
    vol = BraTS2020(data_root=str(root)).load(_sid(355))
    assert vol.meta["lesion_path"] == str(d / f"{_sid(355)}_seg.nii.gz")
    assert "seg_source" not in vol.meta


def test_an_explicit_mapping_wins_over_the_known_name(tree, tmp_path):
    other = tmp_path / "my_seg.nii.gz"
    w39 = tree / TRAIN / _sid(355) / "W39_1998.09.19_Segm.nii"
    seg = np.asarray(nib.load(str(w39)).dataobj).copy()
    seg[seg == 2] = 0                                        # distinguishable from the W39 file
    mt.write_nifti(other, seg, mt.brats_affine(), np.uint8)
    ds = BraTS2020(data_root=str(tree), seg_overrides={_sid(355): str(other)})
    vol = ds.load(_sid(355))
    assert vol.meta["lesion_path"] == str(other)
    np.testing.assert_array_equal(vol.lesion_mask, seg > 0)
    assert vol.meta["seg_source"] == f"{_sid(355)}: my_seg.nii.gz (seg_overrides)"


def test_an_unknown_misnamed_segmentation_is_reported_with_the_fix(tmp_path):
    root = mt.brats_tree(tmp_path, ids=(1, 4), misnamed={4: "seg_final.nii.gz"},
                         name_mapping=False)
    ds = BraTS2020(data_root=str(root))
    assert ds.subjects("test") == [_sid(1)]
    [p] = ds.problems("test")
    assert p["subject"] == _sid(4)
    assert "seg_final.nii.gz" in p["reason"] and "seg_overrides" in p["reason"]
    assert f"--set 'dataset.seg_overrides={{{_sid(4)}: seg_final.nii.gz}}'" in p["reason"]
    with pytest.raises(DataError, match="seg_final.nii.gz"):
        ds.load(_sid(4))
    fixed = BraTS2020(data_root=str(root), seg_overrides={_sid(4): "seg_final.nii.gz"})
    assert fixed.problems("test") == [] and fixed.subjects("test") == [_sid(1), _sid(4)]
    vol = fixed.load(_sid(4))
    seg = np.asarray(nib.load(str(root / TRAIN / _sid(4) / "seg_final.nii.gz")).dataobj)
    np.testing.assert_array_equal(vol.lesion_mask, seg > 0)
    assert vol.meta["seg_override"] == "seg_final.nii.gz"
    assert vol.meta["seg_source"] == f"{_sid(4)}: seg_final.nii.gz (seg_overrides)"


def test_mapping_to_a_missing_file_is_a_problem(tree):
    ds = BraTS2020(data_root=str(tree), seg_overrides={_sid(355): "nope.nii",
                                                        "BraTS20_Training_999": "x.nii"})
    reasons = {p["subject"]: p["reason"] for p in ds.problems("test")}
    assert "nope.nii" in reasons[_sid(355)] and "does not exist" in reasons[_sid(355)]
    assert "has no folder" in reasons["BraTS20_Training_999"]


def test_label_rule_and_modality_are_configurable(tree):
    vol = BraTS2020(data_root=str(tree), modality="flair", lesion_labels=[1, 4]).load(_sid(1))
    d = tree / TRAIN / _sid(1)
    seg = np.asarray(nib.load(str(d / f"{_sid(1)}_seg.nii.gz")).dataobj)
    flair = np.asarray(nib.load(str(d / f"{_sid(1)}_flair.nii.gz")).dataobj, dtype=np.float32)
    np.testing.assert_array_equal(vol.lesion_mask, np.isin(seg, [1, 4]))
    np.testing.assert_array_equal(vol.image, flair)
    with pytest.raises(DataError, match="modality 't2w'"):
        BraTS2020(data_root=str(tree), modality="t2w").subjects("test")


def test_wrong_or_missing_root_names_the_folder_to_pass(tmp_path):
    with pytest.raises(DataError, match="--data-root"):
        BraTS2020().subjects("test")
    with pytest.raises(DataError, match=rf"no BraTS20_Training_\*/ folders under {tmp_path}.*"
                                        rf"MICCAI_BraTS2020_TrainingData"):
        BraTS2020(data_root=str(tmp_path)).subjects("test")
    with pytest.raises(DataError, match="not an existing folder"):
        BraTS2020(data_root=str(tmp_path / "nope")).subjects("test")
    with pytest.raises(DataError, match="only the 'test' split"):
        BraTS2020(data_root=str(tmp_path)).subjects("train")


def _break(kind: str, d: Path, sid: str) -> Path:
    """Damage one file of subject ``sid`` in folder ``d``; return the file to be named."""
    t1, seg = d / f"{sid}_t1.nii.gz", d / f"{sid}_seg.nii.gz"
    aff = mt.brats_affine()
    if kind == "truncated":
        mt.truncate(t1)
        return t1
    if kind == "nan":
        img = np.asarray(nib.load(str(t1)).dataobj, dtype=np.float32)
        img[20, 20, 15] = np.nan
        mt.write_nifti(t1, img, aff, np.float32)
        return t1
    if kind == "4d":
        img = np.asarray(nib.load(str(t1)).dataobj)
        mt.write_nifti(t1, np.stack([img, img], axis=-1), aff)
        return t1
    if kind == "shape":
        s = np.asarray(nib.load(str(seg)).dataobj)
        mt.write_nifti(seg, s[:, :, :-1], aff, np.uint8)
        return seg
    if kind == "affine":
        s = np.asarray(nib.load(str(seg)).dataobj)
        shifted = aff.copy()
        shifted[0, 3] += 5.0
        mt.write_nifti(seg, s, shifted, np.uint8)
        return seg
    if kind == "labels":
        s = np.asarray(nib.load(str(seg)).dataobj).copy()
        s[s == 2] = 3
        mt.write_nifti(seg, s, aff, np.uint8)
        return seg
    if kind == "empty":
        s = np.asarray(nib.load(str(seg)).dataobj)
        mt.write_nifti(seg, np.zeros_like(s), aff, np.uint8)
        return seg
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, message", [
    ("truncated", "cannot read the image"),
    ("nan", "non-finite voxel"),
    ("4d", "must be a 3-D volume"),
    ("shape", "shape"),
    ("affine", "affine differs"),
    ("labels", r"label\(s\) \[3\] outside the expected set \{0, 1, 2, 4\}"),
    ("empty", "tumour mask is empty"),
])
def test_bad_subject_raises_a_data_error_naming_the_file(tmp_path, kind, message):
    root = mt.brats_tree(tmp_path, ids=(1, 2), name_mapping=False)
    d = root / TRAIN / _sid(2)
    bad = _break(kind, d, _sid(2))
    ds = BraTS2020(data_root=str(root))
    assert ds.subjects("test") == [_sid(1), _sid(2)]       # listing does not read voxels
    ds.load(_sid(1))                                       # the good subject still loads
    with pytest.raises(DataError, match=message) as exc:
        ds.load(_sid(2))
    assert str(bad) in str(exc.value)


def test_singleton_fourth_axis_is_squeezed(tmp_path):
    root = mt.brats_tree(tmp_path, ids=(1,), name_mapping=False)
    t1 = root / TRAIN / _sid(1) / f"{_sid(1)}_t1.nii.gz"
    img = np.asarray(nib.load(str(t1)).dataobj)
    ref = BraTS2020(data_root=str(root)).load(_sid(1))
    mt.write_nifti(t1, img[..., None], mt.brats_affine(), np.int16)
    vol = BraTS2020(data_root=str(root)).load(_sid(1))
    np.testing.assert_array_equal(vol.image, ref.image)
