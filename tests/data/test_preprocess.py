"""Each preprocessing step on inputs with known answers."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from adbench.data.preprocess import (HistogramReference, PreprocessConfig, brain_box, equalize,
                                     grid_affine, normalize, preprocess_volume, resample_axial,
                                     to_ras)
from adbench.data.volume import DataError, Volume


def _vol(shape=(30, 36, 10), affine=None, seed=0):
    rng = np.random.default_rng(seed)
    X, Y, Z = shape
    xx, yy, zz = np.meshgrid(np.arange(X), np.arange(Y), np.arange(Z), indexing="ij")
    brain = ((xx - X / 2) / (X * 0.4)) ** 2 + ((yy - Y / 2) / (Y * 0.4)) ** 2 + ((zz - Z / 2) / (Z * 0.45)) ** 2 < 1
    img = np.where(brain, 50 + xx + 2 * yy + rng.normal(0, 1, shape), 0).astype(np.float32)
    les = brain & (np.abs(xx - X / 2) < 3) & (np.abs(yy - Y / 2) < 3) & (np.abs(zz - Z / 2) < 2)
    return Volume(img, brain, les, np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine, "s")


@pytest.mark.parametrize("codes", [("L", "P", "S"), ("R", "S", "A"), ("P", "L", "I")])
def test_to_ras_reorders_voxels_and_keeps_world_coordinates(codes):
    ras = _vol()
    img = nib.Nifti1Image(ras.image, ras.affine)
    tf = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(codes))
    other = img.as_reoriented(tf)
    assert nib.aff2axcodes(other.affine) == codes
    back = to_ras(Volume(np.asarray(other.dataobj), nib.orientations.apply_orientation(ras.brain_mask, tf),
                         None, other.affine, "s"))
    np.testing.assert_array_equal(back.image, ras.image)
    np.testing.assert_allclose(back.affine, ras.affine, atol=1e-9)


def test_non_ras_volume_gives_identical_preprocessed_slices():
    ras = _vol()
    flipped = Volume(ras.image[::-1, :, ::-1].copy(), ras.brain_mask[::-1, :, ::-1].copy(),
                     ras.lesion_mask[::-1, :, ::-1].copy(),
                     ras.affine @ np.array([[-1, 0, 0, 29], [0, 1, 0, 0], [0, 0, -1, 9], [0, 0, 0, 1.0]]), "s")
    cfg = PreprocessConfig()
    a, b = preprocess_volume(ras, cfg), preprocess_volume(flipped, cfg)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.lesion, b.lesion)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-9)


def test_brain_box_has_output_aspect_and_covers_brain():
    brain = np.zeros((50, 40, 5), bool)
    brain[10:30, 5:35, 1:4] = True
    x0, y0, cx, cy, z0, z1 = brain_box(brain, (160, 128), margin=0)
    assert cy / cx == pytest.approx(160 / 128)
    assert x0 <= 10 and x0 + cx >= 30 and y0 <= 5 and y0 + cy >= 35
    assert (z0, z1) == (1, 4)
    with pytest.raises(DataError, match="empty"):
        brain_box(np.zeros((4, 4, 4), bool), (160, 128), 0)


def test_resample_reproduces_a_linear_ramp_and_orientation():
    # value = 3x + 5y: bilinear sampling at any in-volume point is exact for a linear function
    X, Y, Z = 40, 50, 2
    xx, yy = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    arr = np.repeat((3.0 * xx + 5.0 * yy)[:, :, None], Z, axis=2).astype(np.float32)
    box = (10.0, 10.0, 16.0, 20.0)  # no shrinking → no antialias blur
    out = resample_axial(arr, box, (40, 32), is_mask=False)
    aff = grid_affine(np.eye(4), box, (40, 32), 0)
    for h, w in [(0, 0), (39, 31), (17, 5)]:
        x, y, _, _ = aff @ [h, w, 0, 1]
        assert out[h, w, 0] == pytest.approx(3 * x + 5 * y, abs=1e-3)
    # rows run anterior → posterior (y decreasing), columns left → right (x increasing)
    assert (aff @ [0, 0, 0, 1])[1] > (aff @ [39, 0, 0, 1])[1]
    assert (aff @ [0, 31, 0, 1])[0] > (aff @ [0, 0, 0, 1])[0]


def test_equalize_gives_uniform_brain_histogram_and_zero_background():
    rng = np.random.default_rng(0)
    img = rng.exponential(1.0, (64, 64, 8)).astype(np.float32)
    brain = np.zeros(img.shape, bool)
    brain[8:56, 8:56] = True
    out = equalize(img, brain, nbins=256)
    assert (out[~brain] == 0).all()
    vals = out[brain]
    assert vals.max() == pytest.approx(1.0)
    # CDF of equalised values is the identity (within bin resolution)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert np.quantile(vals, q) == pytest.approx(q, abs=0.02)
    # monotone: order of intensities is preserved
    i, j = np.argsort(img[brain])[[10, -10]]
    assert vals[i] <= vals[j]


def test_histogram_matching_maps_quantiles_onto_reference():
    rng = np.random.default_rng(1)
    ref_vals = rng.beta(2, 5, (40, 40, 4)).astype(np.float32)
    brain = np.ones(ref_vals.shape, bool)
    reference = HistogramReference.fit([(ref_vals, brain)], n_quantiles=101)
    np.testing.assert_allclose(reference.quantiles, np.quantile(ref_vals, np.linspace(0, 1, 101)))
    src = 3.0 * ref_vals + 7.0  # a monotone transform of the reference: matching undoes it
    matched = reference.match(src, brain)
    np.testing.assert_allclose(matched, ref_vals, atol=1e-5)


def test_normalize_maps_unit_interval_to_minus_one_one():
    img = np.array([[[0.0], [0.5], [1.0], [0.3]]], np.float32)
    brain = np.array([[[True], [True], [True], [False]]])
    np.testing.assert_allclose(normalize(img, brain)[0, :, 0], [-1.0, 0.0, 1.0, -1.0])


def test_preprocess_volume_output_contract():
    pre = preprocess_volume(_vol(), PreprocessConfig())
    h, w, z = pre.image.shape
    assert (h, w) == (160, 128) and z == 9
    assert pre.image.min() >= 0 and pre.image.max() <= 1
    assert (pre.image[~pre.brain] == 0).all()
    assert pre.lesion.any() and not (pre.lesion & ~pre.brain).any()
    with pytest.raises(KeyError, match="valid"):
        PreprocessConfig.from_dict({"sise": [1, 2]})
