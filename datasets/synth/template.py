"""The MNI152 2009a template that nilearn ships, as the anatomy every synth volume derives from.

nilearn installs the 1 mm ICBM152 2009a (symmetric, "converted") T1, grey-matter and
white-matter maps inside its package (``nilearn/datasets/data``); its loaders read those files
and never touch the network at resolution 1. The T1 is already skull-stripped (zero outside
the head); the brain mask is nilearn's threshold of the T1 at 0.2 (its
``load_mni152_brain_mask``), and we zero the T1 outside that mask so the anatomy and the mask
agree exactly. The files are read directly (the same files, rescaled the same way, as
nilearn's loaders; see ``_read_shipped``), falling back to the loaders if the layout changes.

Grid: (X, Y, Z) = (197, 233, 189) voxels of 1 mm, axes L→R, P→A, I→S (RAS), with the affine
nilearn gives. ``spacing`` = s > 1 block-averages s×s×s voxels (the grid is zero-padded to a
multiple of s), so a 2 mm grid is (99, 117, 95); the affine is adjusted so every coarse voxel
centre sits at the centre of the fine block it averages.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Template", "load_template", "template_affine"]


@dataclass(frozen=True)
class Template:
    """Template maps on one grid; arrays are read-only and shared between callers.

    t1        (X, Y, Z) float32 T1 intensity in [0, 1] (1 = template maximum), 0 outside brain.
    gm, wm    (X, Y, Z) float32 grey / white matter probability in [0, 1], 0 outside brain.
    brain     (X, Y, Z) float32 brain fraction in [0, 1] (binary at 1 mm, block mean above).
    affine    (4, 4) voxel → RAS mm.
    spacing   voxel size in mm (isotropic).
    wm_level  median T1 where wm > 0.9: the white-matter intensity lesions are scaled by.
    csf_level median T1 inside the brain where gm + wm < 0.2 (ventricles, sulci).
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    spacing: int
    wm_level: float
    csf_level: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.t1.shape)  # type: ignore[return-value]


def template_affine(spacing: int) -> np.ndarray:
    """The affine of the ``spacing`` mm grid derived from nilearn's 1 mm template affine."""
    return _template(int(spacing)).affine.copy()


def load_template(spacing: int = 1) -> Template:
    """The template on a ``spacing`` mm grid (integer ≥ 1), loaded once per process."""
    if not isinstance(spacing, (int, np.integer)) or isinstance(spacing, bool) or spacing < 1:
        raise ValueError(f"synth spacing={spacing!r}: expected an integer number of mm >= 1 "
                         f"(1 = the template's native 1 mm grid, 2 = 2 mm, ...)")
    return _template(int(spacing))


@functools.lru_cache(maxsize=4)
def _template(spacing: int) -> Template:
    t1, gm, wm, brain, affine = _native()
    if spacing > 1:
        t1, gm, wm, brain = (_block_mean(a, spacing) for a in (t1, gm, wm, brain))
        # a coarse voxel i averages fine voxels s*i .. s*i+s-1, whose centre is s*i + (s-1)/2
        scale = np.diag([spacing, spacing, spacing, 1.0])
        scale[:3, 3] = (spacing - 1) / 2.0
        affine = affine @ scale
    wm_level = float(np.median(t1[wm > 0.9]))
    csf_level = float(np.median(t1[(brain > 0.5) & (gm + wm < 0.2)]))
    arrays = []
    for a in (t1, gm, wm, brain):
        a = np.ascontiguousarray(a, dtype=np.float32)
        a.setflags(write=False)
        arrays.append(a)
    affine = np.asarray(affine, dtype=np.float64)
    affine.setflags(write=False)
    return Template(*arrays, affine=affine, spacing=spacing, wm_level=wm_level, csf_level=csf_level)


# the files nilearn's load_mni152_{template,gm_template,wm_template} read (nilearn >= 0.8)
_SHIPPED = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
            "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
            "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}


@functools.lru_cache(maxsize=1)
def _native() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    maps, affine = _read_shipped()
    if maps is None:
        maps, affine = _read_with_loaders()
    t1, gm, wm = maps["t1"], maps["gm"], maps["wm"]
    brain = t1 > 0.2          # nilearn's load_mni152_brain_mask(threshold=0.2)
    if t1.shape != (197, 233, 189) or gm.shape != t1.shape or wm.shape != t1.shape:
        raise RuntimeError(f"nilearn's MNI152 template has shape {t1.shape} (GM {gm.shape}, WM "
                           f"{wm.shape}); synth expects the 2009a 1 mm grid (197, 233, 189). "
                           f"Install a nilearn version that ships it (>= 0.10).")
    return (t1 * brain, gm * brain, wm * brain, brain.astype(np.float32),
            np.asarray(affine, dtype=np.float64))


def _read_shipped():
    """The shipped files read directly, rescaled to [0, 1] as nilearn's loaders do.

    Importing ``nilearn.datasets`` costs seconds (it pulls in pandas and scikit-learn), and
    every command that generates synth volumes would pay it; the files are the same.
    """
    import importlib.util

    import nibabel as nib

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None, None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    paths = {k: folder / name for k, name in _SHIPPED.items()}
    if not all(p.is_file() for p in paths.values()):
        return None, None
    maps, affine = {}, None
    for key, path in paths.items():
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
        maps[key] = data / data.max()
        affine = img.affine if affine is None else affine
    return maps, affine


def _read_with_loaders():
    from nilearn import datasets as nd  # slow import; only when the file layout changed

    imgs = {"t1": nd.load_mni152_template(resolution=1),
            "gm": nd.load_mni152_gm_template(resolution=1),
            "wm": nd.load_mni152_wm_template(resolution=1)}
    return ({k: np.asarray(v.dataobj, dtype=np.float32) for k, v in imgs.items()},
            imgs["t1"].affine)


def _block_mean(a: np.ndarray, s: int) -> np.ndarray:
    pad = [(0, (-n) % s) for n in a.shape]
    a = np.pad(a, pad)
    x, y, z = (n // s for n in a.shape)
    return a.reshape(x, s, y, s, z, s).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)
