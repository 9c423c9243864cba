"""Shared preprocessing (architecture §4, paper §3.1).

Every dataset goes through the same steps, in this order:

1. **Canonical orientation** — voxel axes reordered/flipped to RAS (+x right, +y anterior,
   +z superior), the affine updated so world coordinates are unchanged.
2. **Crop to the brain** — the in-plane bounding box of the brain mask over all axial
   slices, plus a margin, widened to the output aspect ratio H:W (so anatomy is not
   stretched); axial range = slices that contain brain.
3. **Resize** each axial slice to H x W (default 160 x 128) with H = anterior→posterior rows
   and W = left→right columns (column 0 is the subject's left: neurological convention).
   Images use antialiased bilinear resampling; masks are resampled as fractions and
   thresholded at 0.5.
4. **Histogram equalisation inside the brain** — brain intensities are mapped through their
   own cumulative histogram (``nbins`` bins after a robust 0.5–99.5 percentile rescale) to
   [0, 1]. Background is 0.
5. **Histogram matching** to a reference built from the training volumes — the reference is
   the mean quantile function of the equalised training brains; each volume's brain
   quantiles are mapped onto it (piecewise linear).
6. **Normalisation** to [-1, 1]: brain values v ∈ [0, 1] become 2v − 1, background −1.

Steps 1–4 depend on one volume only and are cached per subject; 5–6 need the reference
and are cheap, so they run at load time.

The geometry of steps 1–3 (source shape and affine, the RAS reorientation, the crop box and
the slice size) is recorded in ``Preprocessed.meta["native_grid"]`` (:func:`native_grid`), so
that :mod:`adbench.data.native` can put a map made on the preprocessed grid back onto the
source scan's own grid.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Literal, Sequence

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from adbench.data.selection import MIN_BRAIN_FRACTION, SLICE_RULES
from adbench.data.volume import DataError, Volume
from adbench.errors import ConfigError
from adbench.params import Fraction, NonNegativeInt, Range, check_config

#: Smallest slice side the config accepts: a floor against 0 or negative sizes (a division
#: by zero deep in the crop), not a model requirement; a method that needs more (VGG16's
#: five poolings) checks its own minimum.
MIN_SLICE_SIDE = 8
SliceSide = Annotated[int, Range(MIN_SLICE_SIDE)]
SliceRule = Literal[SLICE_RULES]
AtLeastTwo = Annotated[int, Range(2)]

__all__ = ["PreprocessConfig", "Preprocessed", "to_ras", "brain_box", "resample_axial",
           "equalize", "HistogramReference", "normalize",
           "preprocess_volume", "grid_affine", "ras_transform", "native_grid", "NATIVE_GRID_KEY"]

#: the ``Preprocessed.meta`` key of the steps 1–3 geometry (:func:`native_grid`)
NATIVE_GRID_KEY = "native_grid"


@dataclass(frozen=True)
class PreprocessConfig:
    """The shared preprocessing (section ``preprocess``; steps as in the module docstring).

    size                 (H, W) of every slice (paper: 160 x 128).
    margin               voxels added around the brain's bounding box before resizing.
    equalize             histogram equalisation inside the brain (step 4).
    nbins                histogram bins of the equalisation.
    match                histogram matching to the training set's reference (step 5).
    n_quantiles          resolution of the matching reference.
    min_brain_fraction   the "brain" slice rule: brain pixels / slice pixels at least this.
    slices_train         slice rule of training volumes: "brain", "all" or "lesion".
    slices_test          slice rule of test volumes ("lesion": the paper's protocol).
    """

    size: tuple[SliceSide, SliceSide] = (160, 128)  # (H, W) of every slice, each >= 8
    margin: NonNegativeInt = 2             # voxels added around the brain's bounding box
    equalize: bool = True                  # step 4
    nbins: AtLeastTwo = 256                # histogram bins for equalisation
    match: bool = True                     # step 5
    n_quantiles: AtLeastTwo = 256          # resolution of the matching reference
    min_brain_fraction: Fraction = MIN_BRAIN_FRACTION  # "brain" rule: brain / slice pixels
    slices_train: SliceRule = "brain"      # slice rule for training volumes
    slices_test: SliceRule = "lesion"      # slice rule for test volumes (paper protocol)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        """The config from a mapping, every value checked against the field's type and range
        (a ConfigError naming the key, the value and what is expected)."""
        d = dict(d)
        valid = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - valid
        if unknown:
            raise KeyError(f"unknown preprocessing key(s) {sorted(unknown)}; valid: {sorted(valid)}")
        key, size = "size", d.get("size")
        if key in d and (not isinstance(size, (list, tuple)) or len(size) != 2):  # hints: no length
            raise ConfigError(f"preprocess config key {key!r}: got {size!r}, expected [H, W]: "
                              f"two ints >= {MIN_SLICE_SIDE} (the paper: --set "
                              f"preprocess.size=[160,128])")
        check_config(cls, d, "preprocess")
        if "size" in d:
            d["size"] = tuple(int(v) for v in d["size"])
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        return d



@dataclass
class Preprocessed:
    """One volume after steps 1–4, on the preprocessed grid (H, W, Z).

    image   float32 in [0, 1] (equalised; 0 outside the brain)
    brain   bool
    lesion  bool or None
    affine  (4, 4) maps (h, w, z) indices to world mm
    """

    image: np.ndarray
    brain: np.ndarray
    lesion: np.ndarray | None
    affine: np.ndarray
    subject_id: str
    meta: dict = field(default_factory=dict)


# -- step 1 -------------------------------------------------------------------------------
def ras_transform(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform (3, 2) from the voxel axes of ``affine`` to RAS:
    row i = (RAS axis that voxel axis i becomes, +1 kept / −1 flipped)."""
    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt(("R", "A", "S")))


def to_ras(vol: Volume) -> Volume:
    """Reorient voxels to RAS; world coordinates of every voxel are unchanged."""
    tf = ras_transform(vol.affine)
    if np.array_equal(tf, [[0, 1], [1, 1], [2, 1]]):
        return vol

    def apply(a):
        return None if a is None else np.ascontiguousarray(nib.orientations.apply_orientation(a, tf))

    affine = vol.affine @ nib.orientations.inv_ornt_aff(tf, vol.image.shape)
    return Volume(image=apply(vol.image), brain_mask=apply(vol.brain_mask),
                  lesion_mask=apply(vol.lesion_mask), affine=affine,
                  subject_id=vol.subject_id, meta=vol.meta)


# -- steps 2, 3 ---------------------------------------------------------------------------
def brain_box(brain: np.ndarray, size: tuple[int, int], margin: int) -> tuple[float, float, float, float, int, int]:
    """In-plane crop box (x0, y0, cx, cy) in RAS voxel units and the axial range [z0, z1).

    The box covers the brain in every axial slice plus ``margin`` voxels and is widened
    symmetrically so that cy / cx = H / W (y is the anterior-posterior axis → rows).
    """
    if not brain.any():
        raise DataError("brain mask is empty")
    xs = np.flatnonzero(brain.any(axis=(1, 2)))
    ys = np.flatnonzero(brain.any(axis=(0, 2)))
    zs = np.flatnonzero(brain.any(axis=(0, 1)))
    x0, x1 = xs[0] - margin, xs[-1] + 1 + margin
    y0, y1 = ys[0] - margin, ys[-1] + 1 + margin
    cx, cy = float(x1 - x0), float(y1 - y0)
    h, w = size
    if cy / cx < h / w:          # too wide: grow y
        new = cx * h / w
        y0 -= (new - cy) / 2
        cy = new
    else:                        # too tall: grow x
        new = cy * w / h
        x0 -= (new - cx) / 2
        cx = new
    return float(x0), float(y0), cx, cy, int(zs[0]), int(zs[-1] + 1)


def resample_axial(arr: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int],
                   *, is_mask: bool) -> np.ndarray:
    """Resample RAS array (X, Y, Z) inside ``box`` to (H, W, Z): rows anterior→posterior.

    Pixel centres: output column w samples x = x0 + (w + 0.5) cx / W − 0.5 and output row h
    samples y = y0 + cy − (h + 0.5) cy / H − 0.5 (matching :func:`grid_affine`). Outside the
    volume the value is 0. Masks are resampled as fractions and thresholded at 0.5.
    """
    x0, y0, cx, cy = box
    h, w = size
    X, Y, Z = arr.shape
    # target sample positions in voxel index space
    xs = x0 + (np.arange(w) + 0.5) * cx / w - 0.5
    ys = y0 + cy - (np.arange(h) + 0.5) * cy / h - 0.5
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 1, 0)[:, None]  # (Z,1,Y,X)
    scale_x, scale_y = cx / w, cy / h
    # Antialias: when shrinking, blur with a box of the scale first (separable average),
    # then sample bilinearly — equivalent to area-weighted resampling for integer factors.
    kx, ky = max(1, int(round(scale_x))), max(1, int(round(scale_y)))
    if kx > 1 or ky > 1:
        t = F.avg_pool2d(F.pad(t, ((kx - 1) // 2, kx // 2, (ky - 1) // 2, ky // 2), mode="replicate"),
                         (ky, kx), stride=1)
    gx = torch.from_numpy((2 * xs + 1) / X - 1).float()
    gy = torch.from_numpy((2 * ys + 1) / Y - 1).float()
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)  # (H, W, 2) as (x, y)
    out = F.grid_sample(t, grid.expand(Z, h, w, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=False)[:, 0]  # (Z, H, W)
    out = out.permute(1, 2, 0).numpy()
    if is_mask:
        return out >= 0.5
    return out.astype(np.float32)


def grid_affine(ras_affine: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int],
                z0: int) -> np.ndarray:
    """Affine of the preprocessed (H, W, Z) grid, consistent with :func:`resample_axial`."""
    x0, y0, cx, cy = box
    h, w = size
    m = np.array([
        [0.0, cx / w, 0.0, x0 + 0.5 * cx / w - 0.5],
        [-cy / h, 0.0, 0.0, y0 + cy - 0.5 * cy / h - 0.5],
        [0.0, 0.0, 1.0, float(z0)],
        [0.0, 0.0, 0.0, 1.0],
    ])
    return ras_affine @ m


# -- step 4 -------------------------------------------------------------------------------
def equalize(image: np.ndarray, brain: np.ndarray, nbins: int = 256) -> np.ndarray:
    """Histogram equalisation inside ``brain``: v ↦ CDF(v) over ``nbins`` bins, in [0, 1].

    Intensities are first clipped to the brain's 0.5–99.5 percentiles. Each bin maps to the
    fraction of brain voxels at or below it (the bin's CDF), so the output of a continuous
    input is approximately uniform on [0, 1]. Background is 0.
    """
    out = np.zeros(image.shape, np.float32)
    vals = image[brain].astype(np.float64)
    if vals.size == 0:
        return out
    lo, hi = np.percentile(vals, [0.5, 99.5])
    if hi <= lo:
        out[brain] = 1.0
        return out
    scaled = np.clip((vals - lo) / (hi - lo), 0.0, 1.0)
    bins = np.minimum((scaled * nbins).astype(np.int64), nbins - 1)
    cdf = np.cumsum(np.bincount(bins, minlength=nbins)) / vals.size
    out[brain] = cdf[bins].astype(np.float32)
    return out


def rescale(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Robust [0, 1] rescale by the brain's 0.5–99.5 percentiles (used when equalize=False)."""
    out = np.zeros(image.shape, np.float32)
    vals = image[brain]
    if vals.size == 0:
        return out
    lo, hi = np.percentile(vals, [0.5, 99.5])
    out[brain] = np.clip((vals - lo) / max(hi - lo, 1e-12), 0, 1)
    return out


# -- step 5 -------------------------------------------------------------------------------
class HistogramReference:
    """Reference quantile function for histogram matching (step 5).

    ``levels`` are probabilities 0..1; ``quantiles`` the mean over training volumes of each
    volume's brain-intensity quantile at those levels.
    """

    def __init__(self, quantiles: np.ndarray):
        self.quantiles = np.asarray(quantiles, dtype=np.float64)
        self.levels = np.linspace(0.0, 1.0, len(self.quantiles))

    @classmethod
    def fit(cls, volumes: Sequence[tuple[np.ndarray, np.ndarray]], n_quantiles: int = 256) -> "HistogramReference":
        levels = np.linspace(0.0, 1.0, n_quantiles)
        qs = [np.quantile(img[brain], levels) for img, brain in volumes if brain.any()]
        if not qs:
            raise DataError("cannot build the histogram-matching reference: no training brain voxels")
        return cls(np.maximum.accumulate(np.mean(qs, axis=0)))

    def match(self, image: np.ndarray, brain: np.ndarray) -> np.ndarray:
        """Map brain intensities so their quantile function equals the reference's."""
        out = np.zeros(image.shape, np.float32)
        vals = image[brain].astype(np.float64)
        if vals.size == 0:
            return out
        src_q = np.quantile(vals, self.levels)
        # Ties in the source quantiles (flat stretches) would make interp ill-defined:
        # keep the first level of each run of equal source quantiles.
        keep = np.concatenate([[True], np.diff(src_q) > 0])
        out[brain] = np.interp(vals, src_q[keep], self.quantiles[keep]).astype(np.float32)
        return out

    def to_list(self) -> list[float]:
        return [float(q) for q in self.quantiles]


# -- step 6 -------------------------------------------------------------------------------
def normalize(image01: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """[0, 1] brain intensities → [-1, 1]; background −1."""
    out = np.full(image01.shape, -1.0, np.float32)
    out[brain] = np.clip(image01[brain], 0.0, 1.0) * 2.0 - 1.0
    return out


# -- steps 1–4 together -------------------------------------------------------------------
def preprocess_volume(vol: Volume, cfg: PreprocessConfig) -> Preprocessed:
    """Steps 1–4 for one volume (deterministic; cached per subject by the runner)."""
    try:
        ras = to_ras(vol)
        x0, y0, cx, cy, z0, z1 = brain_box(ras.brain_mask, cfg.size, cfg.margin)
    except DataError as exc:
        src = vol.meta.get("image_path", "")
        raise DataError(f"subject {vol.subject_id!r}{f' ({src})' if src else ''}: {exc}") from None
    box = (x0, y0, cx, cy)
    sl = (slice(None), slice(None), slice(z0, z1))
    image = resample_axial(ras.image[sl], box, cfg.size, is_mask=False)
    brain = resample_axial(ras.brain_mask[sl], box, cfg.size, is_mask=True)
    lesion = None
    if ras.lesion_mask is not None:
        lesion = resample_axial(ras.lesion_mask[sl], box, cfg.size, is_mask=True) & brain
    image01 = equalize(image, brain, cfg.nbins) if cfg.equalize else rescale(image, brain)
    meta = {**vol.meta, NATIVE_GRID_KEY: native_grid(vol, box, (z0, z1), cfg.size)}
    return Preprocessed(image=image01, brain=brain, lesion=lesion,
                        affine=grid_affine(ras.affine, box, cfg.size, z0),
                        subject_id=vol.subject_id, meta=meta)


def native_grid(vol: Volume, box: tuple[float, float, float, float], z_range: tuple[int, int],
                size: tuple[int, int]) -> dict:
    """The geometry of steps 1–3 as JSON-able values (what :mod:`adbench.data.native` inverts).

    shape    source voxel grid (X, Y, Z) as the dataset read it
    affine   source voxel → world (mm), 4 x 4
    to_ras   :func:`ras_transform` of ``affine`` (3 x 2)
    box      (x0, y0, cx, cy) of :func:`brain_box`, RAS voxel units
    z_range  [z0, z1): the RAS axial slices kept
    size     (H, W) of the preprocessed slices
    """
    return {"shape": [int(n) for n in vol.image.shape],
            "affine": np.asarray(vol.affine, dtype=np.float64).tolist(),
            "to_ras": ras_transform(vol.affine).astype(int).tolist(),
            "box": [float(v) for v in box], "z_range": [int(z) for z in z_range],
            "size": [int(n) for n in size]}
