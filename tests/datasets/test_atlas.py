"""ATLAS v2.0 reader on miniature copies of the release (real BIDS names, MNI152NLin2009aSym
grids, unlabelled Testing folder) and the default MNI152 brain mask."""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minitrees as mt  # noqa: E402

from adbench import DataError  # noqa: E402
from adbench.datasets.atlas.reader import ATLAS2, mni152_brain_mask  # noqa: E402
from adbench.plugins import get_registry  # noqa: E402


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return mt.atlas_tree(tmp_path_factory.mktemp("atlas"))


def test_lists_training_subjects_with_masks_only(tree):
    ds = get_registry().dataset("atlas").factory(data_root=str(tree))
    assert ds.subjects("test") == ["sub-r001s001", "sub-r001s002", "sub-r002s001"]
    assert ds.problems("test") == []                      # Testing/ (no masks) is not listed
    for root in (tree / "ATLAS_2", tree / "ATLAS_2" / "Training"):
        assert ATLAS2(data_root=str(root)).subjects("test") == ds.subjects("test")


def test_load_matches_files_and_resampled_mni_mask(tree):
    vol = ATLAS2(data_root=str(tree)).load("sub-r002s001")
    t1, mask = mt.atlas_paths(tree, "R002", "sub-r002s001")
    img = nib.load(str(t1))
    np.testing.assert_array_equal(vol.image, np.asarray(img.dataobj, dtype=np.float32))
    np.testing.assert_array_equal(vol.lesion_mask, np.asarray(nib.load(str(mask)).dataobj) > 0)
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert vol.meta["cohort"] == "R002" and "resampled" in vol.meta["brain_mask_source"]
    # independent oracle: nibabel's own nearest-neighbour resampling of the MNI mask
    from nibabel.processing import resample_from_to
    mni, mni_aff = mni152_brain_mask()
    ref = resample_from_to(nib.Nifti1Image(mni.astype(np.float32), mni_aff),
                           (img.shape, img.affine), order=0)
    agree = np.mean(vol.brain_mask == (np.asarray(ref.dataobj) > 0.5))
    assert agree > 0.999
    assert vol.brain_mask.any() and vol.lesion_mask[vol.brain_mask].any()


@pytest.mark.slow
def test_mni_mask_is_nilearns_and_used_as_is_on_the_release_grid(tmp_path):
    from nilearn.datasets import load_mni152_brain_mask
    ours, aff = mni152_brain_mask()
    theirs = load_mni152_brain_mask(resolution=1)
    assert ours.shape == theirs.shape == (197, 233, 189)
    np.testing.assert_array_equal(ours, np.asarray(theirs.dataobj) > 0)
    np.testing.assert_array_equal(aff, theirs.affine)
    # one subject on the real 197x233x189 grid: the mask is taken without resampling
    shape, grid = mt.atlas_grid(1.0)
    assert shape == (197, 233, 189)
    t1, mask = mt.atlas_paths(tmp_path, "R001", "sub-r001s001")
    les = np.zeros(shape, np.uint8)
    les[90:95, 120:125, 90:95] = 1
    mt.write_nifti(t1, (ours * 500).astype(np.int16), grid)
    mt.write_nifti(mask, les, grid, np.uint8)
    vol = ATLAS2(data_root=str(tmp_path)).load("sub-r001s001")
    np.testing.assert_array_equal(vol.brain_mask, ours)
    assert "resampled" not in vol.meta["brain_mask_source"]


def test_per_subject_brain_mask_pattern(tree):
    t1, _ = mt.atlas_paths(tree, "R001", "sub-r001s002")
    img = nib.load(str(t1))
    brain = np.zeros(img.shape, np.uint8)
    brain[10:40, 10:50, 10:40] = 1
    mt.write_nifti(t1.parent / "sub-r001s002_ses-1_desc-brain_mask.nii.gz", brain, img.affine, np.uint8)
    ds = ATLAS2(data_root=str(tree), brain_mask="{prefix}_desc-brain_mask.nii.gz")
    vol = ds.load("sub-r001s002")
    np.testing.assert_array_equal(vol.brain_mask, brain > 0)
    assert vol.meta["brain_mask_source"] == "file"
    assert Path(vol.meta["brain_mask_path"]) in ds.source_files("sub-r001s002")
    with pytest.raises(DataError, match="brain mask file does not exist"):
        ds.load("sub-r001s001")


def test_missing_mask_and_duplicate_ids_are_problems(tmp_path):
    root = mt.atlas_tree(tmp_path, subjects=(("R001", "sub-r001s001"), ("R001", "sub-r001s002"),
                                             ("R009", "sub-r001s001")), testing=False)
    _, mask = mt.atlas_paths(root, "R001", "sub-r001s002")
    mask.unlink()
    ds = ATLAS2(data_root=str(root))
    assert ds.subjects("test") == ["sub-r001s001"]
    probs = {(p["subject"], Path(p["path"]).parts[-5]) for p in ds.problems("test")}
    assert probs == {("sub-r001s001", "R009"), ("sub-r001s002", "R001")}
    reasons = " ".join(p["reason"] for p in ds.problems("test"))
    assert "duplicate subject id 'sub-r001s001'" in reasons and "R001" in reasons
    assert "lesion mask" in reasons and "not found" in reasons
    with pytest.raises(DataError, match="lesion mask"):
        ds.load("sub-r001s002")


def test_mask_off_the_image_grid_and_non_binary_labels(tmp_path):
    root = mt.atlas_tree(tmp_path, subjects=(("R001", "sub-r001s001"),), testing=False)
    t1, mask = mt.atlas_paths(root, "R001", "sub-r001s001")
    shape, aff = mt.atlas_grid()
    les = np.asarray(nib.load(str(mask)).dataobj)
    mt.write_nifti(mask, les, aff @ np.diag([1.0, 1.0, 1.0, 1.0]) + np.array(
        [[0, 0, 0, 4.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]), np.uint8)
    with pytest.raises(DataError, match="affine differs") as exc:
        ATLAS2(data_root=str(root)).load("sub-r001s001")
    assert str(mask) in str(exc.value)
    mt.write_nifti(mask, les * 255, aff, np.uint8)
    with pytest.raises(DataError, match=r"\[255\] outside the expected set \{0, 1\}"):
        ATLAS2(data_root=str(root)).load("sub-r001s001")
    vol = ATLAS2(data_root=str(root), label_values=[0, 255]).load("sub-r001s001")
    np.testing.assert_array_equal(vol.lesion_mask, les > 0)


def test_wrong_root(tmp_path):
    with pytest.raises(DataError, match=rf"no R\*/sub-\*/ses-\*/anat/.* under {tmp_path}.*ATLAS_2/"):
        ATLAS2(data_root=str(tmp_path)).subjects("test")
