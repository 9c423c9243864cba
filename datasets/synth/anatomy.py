"""Healthy variation: a random smooth warp of the template and random scanner-like intensities.

One healthy volume is the template resampled through a coordinate map

    p(x) = c + A (x - c) + t + d(x)            (voxel units, x = output voxel, p = template voxel)

with c the brain centroid, A = R·S a small rotation (a few degrees about each axis) times an
anisotropic scaling (±5 %), t a translation of a few mm and d a smooth, low-frequency
displacement field (control points every ~20 mm, a few mm amplitude). T1, GM, WM and the brain
fraction are all sampled through the same map, so the brain mask deforms with the image.

Intensities then vary as a scanner would make them vary (:func:`finish`): a tissue-specific
contrast change, a gamma, a smooth multiplicative bias field, a global gain and Rician noise.
All random numbers come from the :class:`numpy.random.Generator` passed in, in a fixed order,
so a volume is a pure function of its seed.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from adbench.datasets.synth.template import Template, load_template

__all__ = ["AnatomyDraw", "draw_anatomy", "coordinate_map", "sample", "Tissue", "sample_tissue",
           "tissue_contrast", "finish", "smooth_field", "smooth_noise", "rotation_matrix"]


@dataclass(frozen=True)
class AnatomyDraw:
    """The random choices of one healthy volume (all drawn up front, in a fixed order)."""

    rotation_deg: tuple[float, float, float]   # about the x, y, z axes
    scale: tuple[float, float, float]          # per-axis scaling of the template
    translation_mm: tuple[float, float, float]
    displacement: np.ndarray                   # (3, X, Y, Z) float32 smooth field, voxels
    gm_contrast: float                         # relative intensity change of pure GM
    wm_contrast: float                         # relative intensity change of pure WM
    gamma: float                               # intensity ** gamma (on the [0, ~1] scale)
    bias: np.ndarray                           # (X, Y, Z) float32 multiplicative field, ~1
    gain: float                                # global scale of the stored intensities
    noise_sigma: float                         # Rician sigma relative to the WM intensity


def rotation_matrix(angles_rad: np.ndarray) -> np.ndarray:
    """R = Rz · Ry · Rx for angles (ax, ay, az) in radians; (3, 3)."""
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def smooth_field(rng: np.random.Generator, channels: int, shape: tuple[int, ...],
                 control_vox: float) -> np.ndarray:
    """(channels, *shape) float32 random field with unit std at the control points.

    Gaussian values on a control grid every ``control_vox`` voxels are interpolated with cubic
    splines onto a grid 4× finer and then trilinearly onto ``shape``: the result is smooth at
    the control scale, and the expensive cubic step never runs at full resolution.
    """
    coarse = [max(2, int(math.ceil(n / control_vox)) + 1) for n in shape]
    values = rng.standard_normal((channels, *coarse))
    mid = [min(n, 4 * (c - 1) + 1) for n, c in zip(shape, coarse)]
    grids = np.meshgrid(*[np.linspace(0, c - 1, m) for c, m in zip(coarse, mid)], indexing="ij")
    fine = np.stack([ndimage.map_coordinates(v, grids, order=3, mode="nearest") for v in values])
    t = torch.from_numpy(fine.astype(np.float32))[None]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    out = F.interpolate(t, size=tuple(shape), mode=mode, align_corners=True)[0]
    return out.numpy()


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], corr_vox: float) -> np.ndarray:
    """(*shape) float32 smooth noise normalised to zero mean and unit std over ``shape``."""
    f = smooth_field(rng, 1, shape, max(corr_vox, 1.0))[0]
    f = f - f.mean()
    return (f / max(float(f.std()), 1e-6)).astype(np.float32)


def draw_anatomy(rng: np.random.Generator, tpl: Template) -> AnatomyDraw:
    """Draw every random choice of a healthy volume on ``tpl``'s grid."""
    s = tpl.spacing
    rotation = tuple(float(v) for v in rng.uniform(-4.0, 4.0, 3))
    scale = tuple(float(v) for v in rng.uniform(0.95, 1.05, 3))
    translation = tuple(float(v) for v in rng.uniform(-3.0, 3.0, 3))
    amplitude_mm = float(rng.uniform(1.5, 3.5))
    disp = smooth_field(rng, 3, tpl.shape, control_vox=20.0 / s) * (amplitude_mm / s)
    gm_c, wm_c = (float(v) for v in rng.uniform(-0.06, 0.06, 2))
    gamma = float(math.exp(rng.uniform(math.log(0.8), math.log(1.25))))
    bias_strength = float(rng.uniform(0.03, 0.12))
    bias = np.exp(smooth_field(rng, 1, tpl.shape, control_vox=60.0 / s)[0] * bias_strength)
    gain = float(rng.uniform(600.0, 1400.0))
    sigma = float(rng.uniform(0.01, 0.035))
    return AnatomyDraw(rotation, scale, translation, disp.astype(np.float32), gm_c, wm_c, gamma,
                       bias.astype(np.float32), gain, sigma)


def coordinate_map(tpl: Template, d: AnatomyDraw) -> np.ndarray:
    """(3, X, Y, Z) float32 template voxel coordinates p(x) for every output voxel x."""
    shape = tpl.shape
    centre = np.array(ndimage.center_of_mass(tpl.brain), dtype=np.float64)
    a = rotation_matrix(np.deg2rad(d.rotation_deg)) @ np.diag(d.scale)
    offset = centre - a @ centre + np.asarray(d.translation_mm) / tpl.spacing
    axes = [np.arange(n, dtype=np.float32) for n in shape]
    coords = np.empty((3, *shape), dtype=np.float32)
    for i in range(3):
        # separable sum a_i0 x + a_i1 y + a_i2 z + o_i, built by broadcasting (no meshgrid copy)
        coords[i] = (a[i, 0] * axes[0])[:, None, None] + (a[i, 1] * axes[1])[None, :, None] \
            + (a[i, 2] * axes[2])[None, None, :] + np.float32(offset[i])
    coords += d.displacement
    return coords


def sample(volumes: np.ndarray, coords: np.ndarray, *, border: bool = False) -> np.ndarray:
    """Trilinear resampling. volumes (C, X, Y, Z), coords (3, *out) voxel units → (C, *out).

    Outside the grid the value is 0 (``border=False``, for images) or the nearest edge value
    (``border=True``, for coordinate maps).
    """
    shape = volumes.shape[1:]
    grid = torch.empty((*coords.shape[1:], 3), dtype=torch.float32)
    for i, n in enumerate(shape):
        # grid_sample's last dimension is ordered (W, H, D) = (Z, Y, X); align_corners maps
        # voxel 0 to -1 and voxel n-1 to +1
        grid[..., 2 - i] = torch.from_numpy(coords[i]) * (2.0 / max(n - 1, 1)) - 1.0
    inp = torch.from_numpy(np.require(volumes, np.float32, ["C", "W"]))[None]  # W: torch wants writable
    out = F.grid_sample(inp, grid[None], mode="bilinear", align_corners=True,
                        padding_mode="border" if border else "zeros")
    return out[0].numpy()


@dataclass
class Tissue:
    """Warped template maps of one volume, each (X, Y, Z) float32; ``brain`` is a bool mask."""

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray


def sample_tissue(tpl: Template, coords: np.ndarray) -> Tissue:
    """The template's T1, GM, WM and brain fraction sampled at ``coords`` (3, X', Y', Z').

    Only output voxels that can reach the brain are interpolated (about a third of the grid):
    the brain fraction is first sampled every 4th voxel, and the cells next to a non-zero
    sample are the candidates. The warp moves a voxel far less than a cell between two
    samples, so no brain voxel is missed, and the choice depends on ``coords`` alone.
    """
    shape = coords.shape[1:]
    step = 4
    coarse = sample(tpl.brain[None], np.ascontiguousarray(coords[:, ::step, ::step, ::step]))[0] > 0
    coarse = ndimage.binary_dilation(coarse, np.ones((3, 3, 3), bool))
    cand = coarse.repeat(step, 0).repeat(step, 1).repeat(step, 2)[:shape[0], :shape[1], :shape[2]]
    points = np.ascontiguousarray(coords[:, cand]).reshape(3, 1, 1, -1)
    values = sample(_stacked(tpl.spacing), points)[:, 0, 0, :]
    t1, gm, wm, brain = (np.zeros(shape, np.float32) for _ in range(4))
    for arr, v in zip((t1, gm, wm, brain), values):
        arr[cand] = v
    mask = brain > 0.5
    return Tissue(t1 * mask, gm * mask, wm * mask, mask)


@functools.lru_cache(maxsize=2)
def _stacked(spacing: int) -> np.ndarray:
    tpl = load_template(spacing)
    return np.stack([tpl.t1, tpl.gm, tpl.wm, tpl.brain])


def tissue_contrast(tissue: Tissue, d: AnatomyDraw) -> np.ndarray:
    """(X, Y, Z) float32 T1 on the template's [0, 1] scale with this volume's GM/WM contrast."""
    return (tissue.t1 * (1.0 + d.gm_contrast * tissue.gm + d.wm_contrast * tissue.wm)).astype(np.float32)


def finish(image: np.ndarray, brain: np.ndarray, d: AnatomyDraw, wm_level: float,
           noise_rng: np.random.Generator) -> np.ndarray:
    """Scanner nuisance on a contrast-adjusted image: gamma, bias field, gain, Rician noise.

    Every step is an element-wise, strictly increasing function of the input voxel (for fixed
    noise), so two volumes that differ only inside a lesion still differ there and nowhere
    else. The noise is drawn for the whole grid, independent of the image, for the same reason.
    Returns (X, Y, Z) float32, 0 outside ``brain``.
    """
    img = np.clip(image, 0.0, None) ** np.float32(d.gamma)
    img = img * d.bias * np.float32(d.gain)
    sigma = np.float32(d.noise_sigma * d.gain * wm_level ** d.gamma)
    n1 = noise_rng.standard_normal(img.shape, dtype=np.float32) * sigma
    n2 = noise_rng.standard_normal(img.shape, dtype=np.float32) * sigma
    img = np.sqrt((img + n1) ** 2 + n2 ** 2)
    return (img * brain).astype(np.float32)
