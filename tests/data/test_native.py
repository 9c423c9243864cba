"""Maps on the preprocessed grid put back onto the source grid (adbench.data.native).

Truths used: (1) at scale 1 the preprocessing is a pure crop + reorientation, so the round
trip must give the voxels back exactly, at the voxel the affines say; (2) bilinear
interpolation reproduces a linear function exactly, so a map that is a linear function of
world coordinates on the grid must be the same function of world coordinates on the source
grid, whatever the orientation and scale; (3) a preprocessed lesion mask written to native
space overlaps the dataset's own segmentation at full size: Dice 0.993 on a BraTS-layout
volume (LPS, 240 x 240 x 155) and 0.989 on an OpenBHB-layout one (FSL MNI152 1 mm grid,
182 x 218 x 182, x right→left), both read by the real dataset readers.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
import minitrees as mt  # noqa: E402

from adbench.data.native import (NativeGrid, background_value, native_grid_of, to_native,  # noqa: E402
                                 write_native_map)
from adbench.data.preprocess import NATIVE_GRID_KEY, PreprocessConfig, preprocess_volume  # noqa: E402
from adbench.data.volume import DataError, Volume  # noqa: E402

ORNT = nib.orientations
CODES = [("R", "A", "S"), ("L", "P", "S"), ("P", "I", "L"), ("S", "R", "P")]


def _from_ras(arr, ras_affine, codes):
    """(array, affine) of a RAS array stored with axis codes ``codes`` (same world points)."""
    tf = ORNT.ornt_transform(ORNT.axcodes2ornt(("R", "A", "S")), ORNT.axcodes2ornt(codes))
    return (np.ascontiguousarray(ORNT.apply_orientation(arr, tf)),
            ras_affine @ ORNT.inv_ornt_aff(tf, arr.shape))


def _ellipsoid(shape, centre, radii):
    axes = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((a - c) / r) ** 2 for a, c, r in zip(axes, centre, radii)) <= 1.0


def _world(affine, shape):
    """(3, *shape) world coordinates of every voxel."""
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:]).reshape(3, *shape)


def _dice(a, b):
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def _ras_affine():
    # anisotropic voxels and an offset: any geometry error shows up in world coordinates
    return np.array([[1.2, 0, 0, -30.0], [0, 0.9, 0, -40.0], [0, 0, 2.0, -15.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("codes", CODES)
def test_scale_one_round_trip_is_exact_and_lands_where_the_affines_say(codes):
    # brain x-extent 12, y-extent 20, margin 2: the box is exactly 16 x 24 = W x H, so
    # steps 2-3 are a pure crop (scale 1, no antialiasing) and the inverse must be exact
    size, margin = (24, 16), 2
    ras_brain = np.zeros((26, 30, 16), bool)
    ras_brain[5:17, 4:24, 3:13] = True
    rng = np.random.default_rng(0)
    ras_lesion = ras_brain & (rng.random(ras_brain.shape) < 0.3)
    ras_image = np.where(ras_brain, 1.0 + rng.random(ras_brain.shape), 0.0).astype(np.float32)
    arrays = [_from_ras(a, _ras_affine(), codes) for a in (ras_image, ras_brain, ras_lesion)]
    (image, affine), (brain, _), (lesion, _) = arrays
    vol = Volume(image=image, brain_mask=brain, lesion_mask=lesion, affine=affine, subject_id="s")
    pre = preprocess_volume(vol, PreprocessConfig(size=size, margin=margin))
    grid = native_grid_of(pre)
    assert grid.shape == image.shape and np.array_equal(grid.affine, affine)
    np.testing.assert_allclose(grid.grid_affine, pre.affine, atol=1e-12)
    assert pre.image.shape == (*size, 10) and pre.lesion.sum() == ras_lesion.sum()

    back = to_native(pre.lesion.astype(np.float32), grid)
    assert back.shape == image.shape
    np.testing.assert_array_equal(back, lesion.astype(np.float32))   # every voxel, exactly

    # a random map: each native voxel inside the box holds the grid value at the grid voxel
    # inv(grid affine) @ source affine maps it to (the affines compose to a pure index map)
    amap = rng.standard_normal(pre.image.shape).astype(np.float32)
    nat = to_native(amap, grid)
    idx = np.indices(image.shape).reshape(3, -1)
    g = np.linalg.inv(pre.affine) @ affine @ np.vstack([idx, np.ones(idx.shape[1])])
    gi = np.rint(g[:3]).astype(int)
    np.testing.assert_allclose(g[:3], gi, atol=1e-9)                  # integer: scale 1
    inside = np.all((gi >= 0) & (gi < np.array(amap.shape)[:, None]), axis=0)
    assert inside.sum() == amap.size                                   # every grid voxel used once
    flat = nat.reshape(-1)
    np.testing.assert_array_equal(flat[inside], amap[gi[0, inside], gi[1, inside], gi[2, inside]])
    np.testing.assert_array_equal(flat[~inside], np.full((~inside).sum(), amap.min()))


@pytest.mark.parametrize("codes", CODES)
def test_a_linear_world_function_comes_back_exactly_at_any_scale(codes):
    shape_ras = (50, 60, 22)
    brain = _ellipsoid(shape_ras, (24, 31, 11), (17, 23, 8))
    image, affine = _from_ras(np.where(brain, 1.0, 0.0).astype(np.float32), _ras_affine(), codes)
    brain_n, _ = _from_ras(brain, _ras_affine(), codes)
    vol = Volume(image=image, brain_mask=brain_n, lesion_mask=None, affine=affine, subject_id="s")
    pre = preprocess_volume(vol, PreprocessConfig(size=(40, 32), margin=3))  # scale ~0.8
    grid = native_grid_of(pre)
    coef = np.array([0.7, -1.3, 0.4])

    def f(world):  # a linear function of world mm
        return np.tensordot(coef, world, axes=1) + 5.0

    amap = f(_world(pre.affine, pre.image.shape)).astype(np.float32)
    nat = to_native(amap, grid)
    assert nat.shape == image.shape
    # grid position of every native voxel, from the affines alone
    idx = np.indices(image.shape).reshape(3, -1)
    g = (np.linalg.inv(pre.affine) @ affine @ np.vstack([idx, np.ones(idx.shape[1])]))[:3]
    h, w = pre.image.shape[:2]
    interior = ((g[0] >= 0) & (g[0] <= h - 1) & (g[1] >= 0) & (g[1] <= w - 1)
                & (np.rint(g[2]) >= 0) & (np.rint(g[2]) < pre.image.shape[2]))
    outside = ((g[0] < -0.5 - 1e-6) | (g[0] > h - 0.5 + 1e-6) | (g[1] < -0.5 - 1e-6)
               | (g[1] > w - 0.5 + 1e-6) | (np.rint(g[2]) < 0) | (np.rint(g[2]) >= pre.image.shape[2]))
    assert interior.sum() > 0.3 * nat.size and outside.sum() > 0
    truth = f(_world(affine, image.shape)).reshape(-1)
    np.testing.assert_allclose(nat.reshape(-1)[interior], truth[interior], atol=2e-4)
    np.testing.assert_array_equal(nat.reshape(-1)[outside], np.float32(amap.min()))


def test_unpredicted_slices_get_the_minimum_and_the_file_carries_the_source_affine(tmp_path):
    shape = (30, 34, 20)
    brain = _ellipsoid(shape, (15, 17, 10), (10, 12, 7))
    image, affine = _from_ras(brain.astype(np.float32), _ras_affine(), ("L", "P", "S"))
    brain_n, _ = _from_ras(brain, _ras_affine(), ("L", "P", "S"))
    vol = Volume(image=image, brain_mask=brain_n, lesion_mask=None, affine=affine, subject_id="s")
    pre = preprocess_volume(vol, PreprocessConfig(size=(24, 16)))
    grid = native_grid_of(pre)
    amap = np.full(pre.image.shape, 100.0, np.float32)   # unpredicted slices hold 100 ...
    predicted = [3, 4, 9]
    amap[:, :, predicted] = np.linspace(2.0, 3.0, 24 * 16 * 3).reshape(24, 16, 3)
    assert background_value(amap, predicted) == 2.0      # ... and must not leak: min of predicted
    out = tmp_path / "maps_native" / "s.nii.gz"
    assert write_native_map(out, amap, grid, slices=predicted) == 2.0
    img = nib.load(str(out))
    data = np.asanyarray(img.dataobj)
    assert data.shape == image.shape and data.dtype == np.float32
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert b"background=2" in img.header["descrip"].tobytes()
    assert data.max() <= 3.0 + 1e-6 and data.min() == 2.0
    # the predicted slices are RAS slices z0 + 3, 4, 9 = native axis 2 (LPS keeps S last)
    z0 = grid.z_range[0]
    held = np.flatnonzero((data > 2.0).any(axis=(0, 1)))
    assert set(held) <= {z0 + k for k in predicted} and len(held) == 3
    with pytest.raises(ValueError, match="preprocessed grid"):
        to_native(amap[:, :, :-1], grid)


def test_a_stale_cache_entry_gets_its_geometry_recomputed():
    shape = (30, 34, 20)
    brain = _ellipsoid(shape, (15, 17, 10), (10, 12, 7))
    image, affine = _from_ras(brain.astype(np.float32), _ras_affine(), ("P", "I", "L"))
    brain_n, _ = _from_ras(brain, _ras_affine(), ("P", "I", "L"))
    vol = Volume(image=image, brain_mask=brain_n, lesion_mask=None, affine=affine, subject_id="s")
    cfg = PreprocessConfig(size=(24, 16))
    pre = preprocess_volume(vol, cfg)
    recorded = native_grid_of(pre)
    del pre.meta[NATIVE_GRID_KEY]                 # an entry written before the record existed
    with pytest.raises(DataError, match="native_grid"):
        native_grid_of(pre)

    class OneVolume:
        def load(self, subject):
            assert subject == "s"
            return vol

    again = native_grid_of(pre, dataset=OneVolume(), cfg=cfg)
    assert again.shape == recorded.shape and again.box == recorded.box
    assert again.z_range == recorded.z_range and np.array_equal(again.to_ras, recorded.to_ras)
    np.testing.assert_array_equal(again.affine, recorded.affine)
    with pytest.raises(DataError, match="malformed"):
        NativeGrid.from_dict({"shape": [1, 2, 3]})


# -- full-size layouts, read by the real readers ----------------------------------------------
BRATS_FULL = (240, 240, 155)


def _lesion_round_trip_dice(vol: Volume, tmp_path: Path, source_affine: np.ndarray) -> float:
    pre = preprocess_volume(vol, PreprocessConfig())
    assert pre.lesion.any()
    out = tmp_path / "maps_native" / f"{vol.subject_id}.nii.gz"
    write_native_map(out, pre.lesion.astype(np.float32), native_grid_of(pre))
    img = nib.load(str(out))
    assert img.shape == vol.image.shape
    np.testing.assert_allclose(img.affine, source_affine, atol=1e-6)
    return _dice(np.asanyarray(img.dataobj) >= 0.5, vol.lesion_mask)


def test_brats_layout_lesion_round_trip_overlaps_the_segmentation(tmp_path):
    from adbench.datasets.brats.reader import BraTS2020

    affine = mt.brats_affine(BRATS_FULL, step=1.0)        # LPS, diag(-1, -1, 1), 1 mm
    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    brain = _ellipsoid(BRATS_FULL, (120, 125, 72), (68, 86, 60))
    seg = np.zeros(BRATS_FULL, np.uint8)                  # oedema 2 ⊃ enhancing 4 ⊃ core 1
    for label, r in ((2, 17.0), (4, 10.0), (1, 6.0)):
        seg[_ellipsoid(BRATS_FULL, (95, 150, 80), (r, 1.2 * r, 0.9 * r))] = label
    t1 = np.where(brain, np.where(seg > 0, 500, 900), 0).astype(np.int16)
    sdir = tmp_path / "MICCAI_BraTS2020_TrainingData" / "BraTS20_Training_001"
    mt.write_nifti(sdir / "BraTS20_Training_001_t1.nii", t1, affine)
    seg_path = mt.write_nifti(sdir / "BraTS20_Training_001_seg.nii", seg, affine)
    vol = BraTS2020(data_root=str(tmp_path)).load("BraTS20_Training_001")
    assert vol.image.shape == BRATS_FULL
    assert np.array_equal(vol.lesion_mask, np.asanyarray(nib.load(seg_path).dataobj) > 0)
    dice = _lesion_round_trip_dice(vol, tmp_path, nib.load(seg_path).affine)
    assert dice > 0.98, dice                              # measured: 0.993


def test_openbhb_layout_lesion_round_trip_overlaps_the_mask(tmp_path):
    from adbench.datasets.openbhb.reader import FSL_MNI152_1MM_AFFINE, OpenBHB

    shape = (182, 218, 182)                               # quasi-raw array, FSL MNI152 1 mm
    brain = _ellipsoid(shape, (90, 112, 80), (68, 86, 62))
    pid = mt.OPENBHB_IDS[0]
    npy = tmp_path / "train" / "derivatives" / f"sub-{pid}" / "ses-1" / f"sub-{pid}_preproc-quasiraw_T1w.npy"
    npy.parent.mkdir(parents=True)
    np.save(npy, np.where(brain, 1.0, 0.0).astype(np.float32)[None, None])
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tstudy\tsex\tage\tsite\tdiagnosis\tsplit\n"
        f"{pid}\tIXI\tmale\t30\t0\tcontrol\ttrain\n")
    ds = OpenBHB(data_root=str(tmp_path), n_subjects=1, n_val=0)
    (subject,) = ds.subjects("train")
    healthy = ds.load(subject)
    assert healthy.image.shape == shape and nib.aff2axcodes(healthy.affine) == ("L", "A", "S")
    np.testing.assert_array_equal(healthy.affine, FSL_MNI152_1MM_AFFINE)
    lesion = _ellipsoid(shape, (60, 130, 95), (12, 15, 10)) & healthy.brain_mask  # known lesion
    vol = Volume(image=healthy.image, brain_mask=healthy.brain_mask, lesion_mask=lesion,
                 affine=healthy.affine, subject_id=subject, meta=healthy.meta)
    dice = _lesion_round_trip_dice(vol, tmp_path, FSL_MNI152_1MM_AFFINE)
    assert dice > 0.98, dice                              # measured: 0.989
