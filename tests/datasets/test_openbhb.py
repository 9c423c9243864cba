"""OpenBHB reader on miniature copies of the quasi-raw release (both download layouts, the
BIDS NIfTI form), the subject draw and broken arrays."""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minitrees as mt  # noqa: E402

from adbench import DataError  # noqa: E402
from adbench.datasets.openbhb.reader import FSL_MNI152_1MM_AFFINE, OpenBHB  # noqa: E402
from adbench.plugins import get_registry  # noqa: E402

IDS = mt.OPENBHB_IDS


def _npy(root: Path, pid: int) -> Path:
    return root / "train" / "derivatives" / f"sub-{pid}" / "ses-1" / f"sub-{pid}_preproc-quasiraw_T1w.npy"


def test_quasiraw_arrays_with_metadata_and_template_affine(tmp_path):
    root = mt.openbhb_tree(tmp_path, IDS[:4])
    ds = get_registry().dataset("openbhb").factory(data_root=str(root))
    assert ds.subjects("train") == [f"sub-{p}" for p in sorted(IDS[:4])]
    assert ds.problems("train") == []
    vol = ds.load(f"sub-{IDS[1]}")
    raw = np.load(_npy(root, IDS[1]))
    assert raw.shape == (1, 1, *mt.OPENBHB_SHAPE) and raw.dtype == np.float32
    np.testing.assert_array_equal(vol.image, raw[0, 0])
    np.testing.assert_array_equal(vol.brain_mask, raw[0, 0] > 0)
    assert vol.lesion_mask is None and vol.healthy
    tpl = root / "resource" / "quasiraw_space-MNI152_desc-brain_T1w.nii.gz"
    np.testing.assert_array_equal(vol.affine, nib.load(str(tpl)).affine)
    assert nib.aff2axcodes(vol.affine) == ("L", "A", "S")
    assert vol.meta["affine_source"] == str(tpl)
    assert (vol.meta["site"], vol.meta["age"], vol.meta["sex"], vol.meta["study"]) == (1, 23.5, "female", "ABIDE1")
    assert tpl in ds.source_files(f"sub-{IDS[1]}")


def test_dataport_layout_gets_the_fsl_mni_affine_without_template(tmp_path):
    root = mt.openbhb_tree(tmp_path, IDS[:2], layout="dataport", template=False)
    ds = OpenBHB(data_root=str(root))
    vol = ds.load(f"sub-{IDS[0]}")
    np.testing.assert_array_equal(vol.affine, FSL_MNI152_1MM_AFFINE)
    assert FSL_MNI152_1MM_AFFINE[0, 0] == -1 and tuple(FSL_MNI152_1MM_AFFINE[:3, 3]) == (90, -126, -72)
    assert vol.meta["age"] == 20.5                                    # from train.tsv
    custom = np.diag([2.0, 2.0, 2.0, 1.0]).tolist()
    assert np.array_equal(OpenBHB(data_root=str(root), npy_affine=custom).load(f"sub-{IDS[0]}").affine,
                          np.asarray(custom))


def test_subject_draw_is_seeded_sorted_and_a_subset(tmp_path):
    root = mt.openbhb_tree(tmp_path, IDS, template=False)
    everyone = [f"sub-{p}" for p in sorted(IDS)]
    assert OpenBHB(data_root=str(root), n_subjects=None).subjects("train") == everyone
    assert OpenBHB(data_root=str(root), n_subjects=640).subjects("train") == everyone
    draws = {s: OpenBHB(data_root=str(root), n_subjects=3, seed=s).subjects("train") for s in range(6)}
    for ids in draws.values():
        assert len(ids) == 3 and ids == sorted(ids) and set(ids) <= set(everyone)
    assert OpenBHB(data_root=str(root), n_subjects=3, seed=2).subjects("train") == draws[2]
    assert len({tuple(v) for v in draws.values()}) > 1               # the seed matters
    split = OpenBHB(data_root=str(root), n_subjects=None, source_split="external_test")
    assert split.subjects("train") == []


def test_bids_nifti_form_and_auto_preference(tmp_path):
    root = mt.openbhb_tree(tmp_path, IDS[:3], form="both")
    nii = OpenBHB(data_root=str(root), form="nifti")
    auto = OpenBHB(data_root=str(root))
    assert nii.subjects("train") == auto.subjects("train")
    a, b = nii.load(f"sub-{IDS[2]}"), auto.load(f"sub-{IDS[2]}")
    assert a.meta["form"] == "nifti" and b.meta["form"] == "npy"
    assert a.meta["image_path"].endswith("_ses-1_T1w.nii.gz")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.affine, b.affine)
    with pytest.raises(DataError, match="no sub-"):
        OpenBHB(data_root=str(tmp_path / "train"), form="nifti").subjects("train")


def test_duplicate_ids_are_reported(tmp_path):
    root = mt.openbhb_tree(tmp_path, IDS[:2], template=False)
    copy = root / "val_quasiraw" / f"sub-{IDS[0]}_preproc-quasiraw_T1w.npy"
    copy.parent.mkdir()
    copy.write_bytes(_npy(root, IDS[0]).read_bytes())
    ds = OpenBHB(data_root=str(root))
    assert ds.subjects("train") == [f"sub-{p}" for p in sorted(IDS[:2])]
    [p] = ds.problems("train")
    assert p["subject"] == f"sub-{IDS[0]}" and "duplicate subject id" in p["reason"]
    assert {p["path"], p["reason"].split("also found at ")[1].split(";")[0]} == {str(copy), str(_npy(root, IDS[0]))}


@pytest.mark.parametrize("kind, message", [
    ("truncated", "cannot read the array"),
    ("nan", "non-finite"),
    ("shape", r"expected a \(1, 1, X, Y, Z\)"),
    ("pickle", "cannot read the array"),
    ("blank", "brain .* is empty"),
])
def test_broken_arrays_raise_naming_the_file(tmp_path, kind, message):
    root = mt.openbhb_tree(tmp_path, IDS[:2], template=False)
    bad = _npy(root, IDS[1])
    arr = np.load(bad)
    if kind == "truncated":
        mt.truncate(bad)
    elif kind == "nan":
        arr[0, 0, 5, 5, 5] = np.nan
        np.save(bad, arr)
    elif kind == "shape":
        np.save(bad, np.stack([arr[0, 0], arr[0, 0]]))
    elif kind == "pickle":      # an object array must never be unpickled
        np.save(bad, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    elif kind == "blank":
        np.save(bad, np.zeros_like(arr))
    ds = OpenBHB(data_root=str(root))
    ds.load(f"sub-{IDS[0]}")
    with pytest.raises(DataError, match=message) as exc:
        ds.load(f"sub-{IDS[1]}")
    assert str(bad) in str(exc.value)


def test_template_of_another_grid_is_refused(tmp_path):
    root = mt.openbhb_tree(tmp_path, IDS[:1])
    tpl = root / "resource" / "quasiraw_space-MNI152_desc-brain_T1w.nii.gz"
    mt.write_nifti(tpl, np.zeros((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(DataError, match="template grid"):
        OpenBHB(data_root=str(root)).load(f"sub-{IDS[0]}")
