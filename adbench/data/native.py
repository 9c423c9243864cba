"""Maps on the preprocessed grid, put back onto the source scan's own grid.

A run predicts on the preprocessed (H, W, Z) grid of :mod:`adbench.data.preprocess`. This
module undoes its geometric steps, last first, so a map overlays on the original scan in
FSLeyes or ITK-SNAP (``maps_native/<subject>.nii.gz``, written with the source affine):

3. **resize** — RAS voxel (x, y) of a kept slice lies at the grid position

       w = (x + 0.5 − x0) · W / cx − 0.5,      h = (y0 + cy − y − 0.5) · H / cy − 0.5

   (the inverse of :func:`resample_axial`'s sample positions); the
   map is read there bilinearly, separably along w then h (clamped to the edge pixel inside
   the half-pixel border of the crop box).
2. **crop** — RAS voxels outside the box (|w + 0.5 − W/2| > W/2 or the same for h) and RAS
   slices outside [z0, z1) get the background value; z is not resampled (grid slice k is RAS
   slice z0 + k).
1. **orientation** — the RAS array is reoriented back to the source's voxel axes with the
   inverse of the recorded nibabel transform, so its shape and affine are the source's.

Background value (:func:`background_value`): the minimum of the map over the slices that
were predicted. Maps exist only on the slices a run predicted (``preprocess.slices_test``,
by default the slices holding lesion); every other voxel — unpredicted slices, outside the
crop box — gets that minimum: "no method output here" ranks with the least anomalous voxel
the method produced, never above it. With no predicted slice the background is 0. The value
is recorded in the NIfTI ``descrip`` field (``adbench background=<value>``).

The geometry comes from ``Preprocessed.meta["native_grid"]``
(:func:`native_grid`, in :mod:`adbench.data.preprocess`); :meth:`NativeGrid.from_volume` recomputes it
from the source volume for slice-cache entries written before it was recorded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from adbench.data.preprocess import (NATIVE_GRID_KEY, PreprocessConfig, brain_box, grid_affine,
                                     native_grid, to_ras)
from adbench.data.volume import DataError, Volume
from adbench.io import atomic_path

__all__ = ["NativeGrid", "background_value", "to_native", "grid_positions", "write_native_map",
           "native_grid_of", "BACKGROUND_RULE", "MAPS_NATIVE"]

#: the run-folder sub-folder of the native-grid maps
MAPS_NATIVE = "maps_native"
BACKGROUND_RULE = ("the map's minimum over the predicted slices (0 when none) outside the crop "
                   "box and on slices that were not predicted")
_EDGE_EPS = 1e-6   # positions within this of the crop box's border count as inside


@dataclass(frozen=True)
class NativeGrid:
    """The geometry of preprocessing steps 1–3 of one volume (see the module docstring).

    shape    (X, Y, Z) source voxel grid;   affine   (4, 4) source voxel → world mm
    to_ras   (3, 2) nibabel transform, source voxel axes → RAS
    box      (x0, y0, cx, cy) crop box in RAS voxel units;   z_range  [z0, z1) RAS slices
    size     (H, W) of the preprocessed slices
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    to_ras: np.ndarray
    box: tuple[float, float, float, float]
    z_range: tuple[int, int]
    size: tuple[int, int]

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "native_grid") -> "NativeGrid":
        try:
            g = cls(shape=tuple(int(n) for n in d["shape"]),
                    affine=np.asarray(d["affine"], dtype=np.float64),
                    to_ras=np.asarray(d["to_ras"], dtype=np.float64),
                    box=tuple(float(v) for v in d["box"]),
                    z_range=tuple(int(z) for z in d["z_range"]), size=tuple(int(n) for n in d["size"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: malformed native-grid record ({type(exc).__name__}: {exc}); "
                            f"expected the keys shape, affine, to_ras, box, z_range, size of "
                            f"native_grid() in adbench.data.preprocess") from None
        if (len(g.shape) != 3 or g.affine.shape != (4, 4) or g.to_ras.shape != (3, 2)
                or len(g.box) != 4 or len(g.z_range) != 2 or len(g.size) != 2):
            raise DataError(f"{where}: native-grid record has wrong shapes: {d!r}")
        return g

    @classmethod
    def from_volume(cls, vol: Volume, cfg: PreprocessConfig) -> "NativeGrid":
        """The geometry :func:`preprocess_volume` gives ``vol``."""
        x0, y0, cx, cy, z0, z1 = brain_box(to_ras(vol).brain_mask, cfg.size, cfg.margin)
        return cls.from_dict(native_grid(vol, (x0, y0, cx, cy), (z0, z1), cfg.size))

    @property
    def ras_shape(self) -> tuple[int, int, int]:
        """Shape of the source array after reorientation to RAS."""
        out = [0, 0, 0]
        for axis, (ras_axis, _) in enumerate(self.to_ras):
            out[int(ras_axis)] = self.shape[axis]
        return tuple(out)

    @property
    def from_ras(self) -> np.ndarray:
        """The inverse of ``to_ras``: RAS axes → source voxel axes (3, 2)."""
        inv = np.zeros((3, 2))
        for axis, (ras_axis, flip) in enumerate(self.to_ras):
            inv[int(ras_axis)] = (axis, flip)
        return inv

    @property
    def ras_affine(self) -> np.ndarray:
        """Affine of the RAS-reoriented array (the same world points as ``affine``)."""
        return self.affine @ nib.orientations.inv_ornt_aff(self.to_ras, self.shape)

    @property
    def grid_affine(self) -> np.ndarray:
        """Affine of the preprocessed (H, W, Z) grid (equals ``Preprocessed.affine``)."""
        return grid_affine(self.ras_affine, self.box, self.size, self.z_range[0])

    @property
    def depth(self) -> int:
        return self.z_range[1] - self.z_range[0]


def native_grid_of(pre, *, dataset=None, cfg: PreprocessConfig | None = None) -> NativeGrid:
    """The :class:`NativeGrid` of a ``Preprocessed``: from its meta, or — for a slice-cache
    entry written before the geometry was recorded — recomputed from ``dataset.load(subject)``."""
    rec = pre.meta.get(NATIVE_GRID_KEY)
    if rec is not None:
        return NativeGrid.from_dict(rec, where=f"subject {pre.subject_id!r} meta[{NATIVE_GRID_KEY!r}]")
    if dataset is None or cfg is None:
        raise DataError(f"subject {pre.subject_id!r}: no meta[{NATIVE_GRID_KEY!r}] (a slice-cache "
                        f"entry from an older adbench); pass dataset= and cfg= to recompute it, "
                        f"or prune the cache (adbench cache prune --older-than 0)")
    return NativeGrid.from_volume(dataset.load(pre.subject_id), cfg)


def grid_positions(n_src: int, start: float, extent: float, n_out: int, *, reverse: bool
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(grid positions (n_src,), inside (n_src,) bool) of RAS voxel indices 0..n_src−1 along
    one in-plane axis: w of x (``reverse=False``) or h of y (``reverse=True``, rows run
    anterior→posterior). Inverse of :func:`resample_axial`'s
    ``x = x0 + (w + 0.5)·cx/W − 0.5`` and ``y = y0 + cy − (h + 0.5)·cy/H − 0.5``."""
    v = np.arange(n_src, dtype=np.float64)
    pos = ((start + extent - v - 0.5) if reverse else (v + 0.5 - start)) * n_out / extent - 0.5
    inside = (pos >= -0.5 - _EDGE_EPS) & (pos <= n_out - 0.5 + _EDGE_EPS)
    return pos, inside


def _linear(a: np.ndarray, pos: np.ndarray, axis: int) -> np.ndarray:
    """``a`` read at fractional ``pos`` along ``axis`` by linear interpolation, clamped to
    the end samples."""
    n = a.shape[axis]
    p = np.clip(pos, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(p).astype(np.int64), max(n - 2, 0))
    i1 = np.minimum(i0 + 1, n - 1)
    t = (p - i0).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = len(pos)
    t = t.reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - t) + np.take(a, i1, axis=axis) * t


def background_value(amap: np.ndarray, slices: Sequence[int] | None = None) -> float:
    """The fill of voxels without a prediction: min of ``amap[:, :, slices]`` (0.0 when no
    slice; ``slices=None``: every slice)."""
    a = np.asarray(amap)
    if slices is not None:
        a = a[:, :, np.asarray(slices, dtype=np.int64)]
    return float(a.min()) if a.size else 0.0


def to_native(amap: np.ndarray, grid: NativeGrid, *, slices: Sequence[int] | None = None,
              background: float | None = None) -> np.ndarray:
    """The map (H, W, Z) of the preprocessed grid on the source grid ``grid.shape`` (float32).

    slices      grid slices that hold predictions (None: all); the others are background.
    background  the fill value; None = :func:`background_value` (the module docstring).
    Apply it to the anomaly map only: a mask is read back by thresholding the result at 0.5.
    """
    m = np.asarray(amap, dtype=np.float32)
    h, w = grid.size
    if m.shape != (h, w, grid.depth):
        raise ValueError(f"map shape {m.shape} != the preprocessed grid {(h, w, grid.depth)} "
                         f"of this native-grid record (size {grid.size}, z_range {grid.z_range})")
    keep = np.arange(grid.depth) if slices is None else np.asarray(slices, dtype=np.int64)
    fill = background_value(m, keep) if background is None else float(background)
    X, Y, _ = grid.ras_shape
    x0, y0, cx, cy = grid.box
    wx, in_x = grid_positions(X, x0, cx, w, reverse=False)
    hy, in_y = grid_positions(Y, y0, cy, h, reverse=True)
    ras = np.full(grid.ras_shape, fill, np.float32)
    if len(keep) and in_x.any() and in_y.any():
        part = m[:, :, keep]                                      # (H, W, K)
        part = _linear(part, wx[in_x], axis=1)                    # (H, X_in, K)
        part = _linear(part, hy[in_y], axis=0)                    # (Y_in, X_in, K)
        z0 = grid.z_range[0]
        ix, iy = np.flatnonzero(in_x), np.flatnonzero(in_y)
        ras[np.ix_(ix, iy, keep + z0)] = np.transpose(part, (1, 0, 2))
    out = np.ascontiguousarray(nib.orientations.apply_orientation(ras, grid.from_ras),
                               dtype=np.float32)
    if out.shape != grid.shape:  # the record is inconsistent with its own affine
        raise DataError(f"native grid: reorientation gave shape {out.shape}, the source is "
                        f"{grid.shape}; the recorded to_ras does not match the affine")
    return out


def write_native_map(path: str | Path, amap: np.ndarray, grid: NativeGrid, *,
                     slices: Sequence[int] | None = None) -> float:
    """Write :func:`to_native` of ``amap`` as NIfTI with the source affine (qform and sform,
    code 1 "scanner", so FSLeyes and ITK-SNAP place it on the scan); atomically. Returns
    the background value used (also in the header's ``descrip``)."""
    fill = background_value(amap, np.arange(grid.depth) if slices is None else slices)
    data = to_native(amap, grid, slices=slices, background=fill)
    img = nib.Nifti1Image(data, grid.affine)
    img.set_qform(grid.affine, code=1)
    img.set_sform(grid.affine, code=1)
    img.header["descrip"] = f"adbench background={fill:.6g}".encode()[:79]
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    with atomic_path(path) as tmp:
        target = tmp.with_name(tmp.name + suffix)
        nib.save(img, target)
        os.replace(target, tmp)
    return fill
