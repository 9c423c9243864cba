"""Healthy "val" splits (thresholds without test labels): disjoint from "train", and adding
them changes no train or test volume."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minitrees as mt  # noqa: E402

from adbench import DataError  # noqa: E402
from adbench.datasets.folder.reader import NiftiFolder  # noqa: E402
from adbench.datasets.openbhb.reader import OpenBHB  # noqa: E402
from adbench.datasets.synth.dataset import SynthDataset  # noqa: E402
from adbench.datasets.synth.generate import SynthParams, generate_volume  # noqa: E402

SMALL = dict(n_train=2, n_test=1, spacing=2, seed=0)


def test_synth_val_volumes_are_healthy_new_and_leave_train_and_test_unchanged(tmp_path):
    with_val = SynthDataset(**SMALL, n_val=2, cache_dir=str(tmp_path), generate="each",
                            progress=False)
    without = SynthDataset(**SMALL, cache_dir=str(tmp_path), progress=False)
    assert with_val.subjects("val") == ["synth-val-0000", "synth-val-0001"]
    assert without.subjects("val") == []
    for split in ("train", "test"):   # same subjects, same content key, same model-cache listing
        assert with_val.subjects(split) == without.subjects(split)
        assert with_val.fingerprint(split) == without.fingerprint(split)
    assert with_val.params() == without.params()         # slice-cache keys of train/test equal
    assert with_val.root == without.root
    v = with_val.load("synth-val-0000")
    assert v.lesion_mask is None and v.meta["split"] == "val"
    p0 = SynthParams.from_config(**SMALL)
    train0 = generate_volume(p0, "train", 0)
    assert v.image.shape == train0.image.shape
    assert not np.array_equal(v.image, train0.image)     # its own random stream
    with pytest.raises(Exception, match="n_val"):
        SynthDataset(**SMALL, n_val=-1)


def test_openbhb_val_is_a_further_draw_and_keeps_the_training_draw(tmp_path):
    root = mt.openbhb_tree(tmp_path, mt.OPENBHB_IDS, template=False)
    everyone = {f"sub-{p}" for p in mt.OPENBHB_IDS}
    plain = OpenBHB(data_root=str(root), n_subjects=3, seed=1, n_val=0)
    ds = OpenBHB(data_root=str(root), n_subjects=3, seed=1, n_val=2)
    assert ds.subjects("train") == plain.subjects("train")   # the paper's draw is untouched
    assert plain.subjects("val") == []
    val = ds.subjects("val")
    assert len(val) == 2 and val == sorted(val) and set(val) <= everyone - set(ds.subjects("train"))
    assert ds.load(val[0]).lesion_mask is None
    big = OpenBHB(data_root=str(root), n_subjects=3, seed=1, n_val=50)
    assert set(big.subjects("val")) == everyone - set(ds.subjects("train"))  # capped at the rest
    assert OpenBHB(data_root=str(root), n_subjects=None).subjects("val") == []  # nothing left
    with pytest.raises(DataError, match="'train' and 'val'"):
        ds.subjects("test")


def _folder(root: Path, n: int = 3) -> Path:
    shape, aff = mt.atlas_grid(8.0)
    img = (mt.sample_mni(shape, aff, centre_world=mt.MNI_CENTRE) * 500).astype(np.float32)
    for i in range(n):
        mt.write_nifti(root / "train" / f"hc{i:02d}.nii.gz", img * (1 + 0.01 * i), aff)
    return root


def test_folder_val_subjects_move_from_train_and_bad_ids_are_named(tmp_path):
    root = _folder(tmp_path)
    ds = NiftiFolder(data_root=str(root), test_pattern=None, val_subjects=["hc01"])
    assert ds.subjects("train") == ["hc00", "hc02"] and ds.subjects("val") == ["hc01"]
    assert ds.load("hc01").lesion_mask is None
    assert NiftiFolder(data_root=str(root), test_pattern=None).subjects("val") == []
    with pytest.raises(DataError, match=r"val_subjects \['nope'\]"):
        NiftiFolder(data_root=str(root), test_pattern=None, val_subjects=["nope"]).subjects("train")
    with open(root / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "image", "split"])
        w.writerow(["a", "train/hc00.nii.gz", "train"])
        w.writerow(["b", "train/hc01.nii.gz", "val"])
    ds = NiftiFolder(data_root=str(root), manifest="list.csv")
    assert ds.subjects("train") == ["a"] and ds.subjects("val") == ["b"]
