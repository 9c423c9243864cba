"""Synthetic lesions with exact masks: tumour-like (space-occupying) and stroke-like.

Both kinds are drawn as a *plan* (every random choice, from the lesion's generator) and then
*painted* onto the contrast-adjusted T1 of a warped template (:mod:`.anatomy`), before the
scanner nuisance of :func:`.anatomy.finish`. Painting changes the intensity of exactly the
voxels it returns as the mask: any voxel whose change would be below ``MIN_CHANGE`` × the WM
intensity is left untouched and out of the mask, so "lesion" always means "intensity differs
from the healthy counterpart" (the BraTS convention label > 0 for tumours: necrotic core,
enhancing rim and oedema all count).

Tumour (glioma-like, T1 after contrast):
  * mass effect: a radial displacement pushes the surrounding tissue outwards; source radius
    r - m(r) with m(r) = A r / R0 inside the solid part (radius R0) and A·φ((r - R0) / L),
    φ(t) = (1 - t)²(1 + 2t), outside it, which is strictly increasing in r, so the map folds
    nothing; the mass effect changes the anatomy around the lesion, not only the lesion;
  * compartments on an irregular ellipsoid (radius perturbed by smooth noise): a hypo-intense
    necrotic core, a hyper-intense enhancing rim, and a surrounding mildly hypo-intense
    oedema that spreads further into white matter and stays out of CSF.
Stroke (chronic infarct, T1):
  * territorial: a wedge of a vascular-territory-like cone, apex deep in the hemisphere, base on
    the cortex; lacunar: a small deep ellipsoid;
  * intersected with GM/WM probability, so it follows the cortical ribbon and the underlying
    white matter and leaves sulcal CSF out; hypo-intense towards CSF; no mass effect.
Every lesion lies inside a ball of its nominal diameter (5–45 mm by default) around its centre.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from adbench.datasets.synth.anatomy import Tissue, rotation_matrix, sample, smooth_noise

__all__ = ["MIN_CHANGE", "lesion_kind", "TumourPlan", "StrokePlan", "plan_tumour", "plan_stroke",
           "mass_effect", "paint_tumour", "paint_stroke", "equivalent_diameter"]

MIN_CHANGE = 0.03   # smallest painted change, relative to the WM intensity


def lesion_kind(index: int, tumour_fraction: float) -> str:
    """'tumour' or 'stroke' for test volume ``index``: exactly round-down(n·fraction) tumours
    among the first n volumes, spread evenly, for every n."""
    f = float(tumour_fraction)
    return "tumour" if math.floor((index + 1) * f) > math.floor(index * f) else "stroke"


def equivalent_diameter(n_voxels: int, spacing: float) -> float:
    """Diameter (mm) of the sphere with the volume of ``n_voxels`` voxels."""
    return float((6.0 * n_voxels * spacing ** 3 / math.pi) ** (1.0 / 3.0))


@dataclass(frozen=True)
class TumourPlan:
    centre: tuple[float, float, float]   # voxel coordinates
    diameter_mm: float                   # nominal: every lesion voxel lies within diameter/2
    axes: tuple[float, float, float]     # ellipsoid semi-axes relative to diameter/2 (<= 1)
    rotation_deg: tuple[float, float, float]
    solid_frac: float                    # solid (core + rim) radius / lesion radius
    core_frac: float                     # necrotic core radius / solid radius (0: no necrosis)
    mass_mm: float                       # displacement A at the solid boundary
    falloff_mm: float                    # L: the displacement reaches 0 at R0 + L
    core_level: float                    # intensities relative to the WM intensity
    rim_level: float
    oedema_factor: float                 # multiplies the underlying tissue
    texture_seed: int

    def to_meta(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class StrokePlan:
    centre: tuple[float, float, float]
    diameter_mm: float
    subtype: str                         # "territorial" or "lacunar"
    apex: tuple[float, float, float]     # cone apex (voxels); territorial only
    direction: tuple[float, float, float]
    half_angle_deg: float
    axes: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    depth: float                         # fraction of the way from tissue to CSF intensity
    texture_seed: int

    def to_meta(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


# -- geometry helpers ---------------------------------------------------------------------
def _box(centre, radius_vox: float, shape) -> tuple[slice, slice, slice]:
    return tuple(slice(max(0, int(math.floor(c - radius_vox)) - 1),
                       min(n, int(math.ceil(c + radius_vox)) + 2))
                 for c, n in zip(centre, shape))  # type: ignore[return-value]


def _offsets_mm(box, centre, spacing: float) -> np.ndarray:
    """(3, *box shape) float32 offsets in mm from ``centre`` (voxels) to each voxel of ``box``."""
    axes = [(np.arange(s.start, s.stop, dtype=np.float32) - np.float32(c)) * np.float32(spacing)
            for s, c in zip(box, centre)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def _keep_connected(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Components of ``mask`` that touch ``seed`` (or the largest one when none does)."""
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    hit = np.unique(lab[seed & mask])
    hit = hit[hit > 0]
    if hit.size == 0:
        hit = [int(np.argmax(np.bincount(lab.ravel())[1:])) + 1]
    return np.isin(lab, hit)


def _apply(img: np.ndarray, box, mask: np.ndarray, delta: np.ndarray,
           wm_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``delta`` (smoothed for partial volume) on ``mask``; drop voxels that barely change.

    Returns (new image, full-grid mask) with new != img exactly on the mask.
    """
    delta = ndimage.gaussian_filter(np.where(mask, delta, 0).astype(np.float32), 0.6, mode="constant")
    keep = mask & (np.abs(delta) >= MIN_CHANGE * wm_level)
    out = img.copy()
    out[box] = np.where(keep, img[box] + delta, img[box])
    full = np.zeros(img.shape, dtype=bool)
    full[box] = keep
    return out, full


def _ellipsoid_radius(r: np.ndarray, axes, rotation_deg, radius_mm: float) -> np.ndarray:
    """Normalised ellipsoidal radius: 1 on the surface of semi-axes ``axes``·radius_mm."""
    rot = rotation_matrix(np.deg2rad(rotation_deg)).astype(np.float32)
    q = np.einsum("ji,j...->i...", rot, r)   # coordinates in the ellipsoid's own frame
    q /= (np.asarray(axes, dtype=np.float32) * np.float32(radius_mm))[:, None, None, None]
    return np.sqrt((q ** 2).sum(axis=0))


def _draw_diameter(rng, lo: float, hi: float, log: bool) -> float:
    if log:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


# -- tumour -------------------------------------------------------------------------------
def plan_tumour(rng: np.random.Generator, tissue: Tissue, spacing: int, d_min: float,
                d_max: float) -> TumourPlan:
    """Choose size, shape, intensities and a centre in white matter whose solid part fits in
    the brain (healthy ``tissue``, before the mass effect)."""
    lo = min(max(12.0, 1.5 * d_min, 4.0 * spacing), d_max)
    diameter = _draw_diameter(rng, lo, d_max, log=False)
    axes = tuple(float(v) for v in rng.uniform(0.75, 1.0, 3))
    axes = tuple(a / max(axes) for a in axes)
    rotation = tuple(float(v) for v in rng.uniform(-180.0, 180.0, 3))
    solid = float(rng.uniform(0.45, 0.75))
    core = float(rng.uniform(0.35, 0.7)) if diameter * solid / 2 > 4.0 else 0.0
    mass = float(rng.uniform(0.2, 0.45))
    core_level, rim_level = float(rng.uniform(0.2, 0.38)), float(rng.uniform(1.2, 1.45))
    oedema = float(rng.uniform(0.65, 0.8))
    texture_seed = int(rng.integers(2 ** 31))
    candidates = np.flatnonzero(tissue.brain & (tissue.wm > 0.5))
    if candidates.size == 0:
        raise RuntimeError("synth: no white matter in the warped template to place a tumour in")
    for attempt in range(200):
        if attempt and attempt % 40 == 0:
            diameter = max(lo, diameter * 0.85)   # a large tumour that keeps not fitting
        centre = np.array(np.unravel_index(int(rng.choice(candidates)), tissue.brain.shape), float)
        r0 = diameter * solid / 2
        box = _box(centre, (r0 + 1) / spacing, tissue.brain.shape)
        ball = np.sqrt((_offsets_mm(box, centre, spacing) ** 2).sum(0)) <= r0 + 1
        if tissue.brain[box][ball].mean() >= 0.97:
            break
    r0 = diameter * solid / 2
    return TumourPlan(tuple(float(c) for c in centre), diameter, axes, rotation, solid, core,
                      mass * r0, 2.0 * r0 + 5.0, core_level, rim_level, oedema, texture_seed)


def mass_effect(plan: TumourPlan, coords: np.ndarray,
                spacing: int) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """Compose the tumour's radial push into the template coordinate map.

    coords (3, X, Y, Z) template voxel coordinates of every output voxel. Returns (box, new
    coordinates of the box) where new(x) = coords(x - u(x)), u the outward displacement (the
    tissue that ends up at x came from nearer the centre).
    """
    r0 = plan.diameter_mm * plan.solid_frac / 2
    a, length = plan.mass_mm, plan.falloff_mm
    box = _box(plan.centre, (r0 + length) / spacing + 1, coords.shape[1:])
    r = _offsets_mm(box, plan.centre, spacing)
    dist = np.sqrt((r ** 2).sum(0))
    t = np.clip((dist - r0) / length, 0.0, 1.0)
    m = np.where(dist < r0, a * dist / r0, a * (1 - t) ** 2 * (1 + 2 * t)).astype(np.float32)
    unit = r / np.maximum(dist, 1e-6)
    start = np.array([s.start for s in box], dtype=np.float32)[:, None, None, None]
    local = (r / np.float32(spacing) + np.asarray(plan.centre, np.float32)[:, None, None, None] - start)
    src = local - unit * (m / np.float32(spacing))
    moved = m > 0
    # resampled only where the tissue moves: elsewhere the map must stay bit-identical
    old = coords[(slice(None), *box)]
    return box, moved, np.where(moved, sample(old, src, border=True), old)


def _lesion_frame(plan, img_shape: tuple[int, ...], spacing: int):
    """What painting a lesion starts from: (radius mm, bounding box of the lesion's ball, offsets
    (3, ...) in mm from its centre, its texture generator, the texture's correlation length in
    voxels)."""
    radius = plan.diameter_mm / 2
    box = _box(plan.centre, radius / spacing, img_shape)
    r = _offsets_mm(box, plan.centre, spacing)
    rng = np.random.default_rng(plan.texture_seed)
    return radius, box, r, rng, max(radius / 3 / spacing, 1.5)


def paint_tumour(plan: TumourPlan, tissue: Tissue, img: np.ndarray, wm_level: float,
                 spacing: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask): core + rim + oedema painted on ``img`` (mass effect already applied)."""
    radius, box, r, rng, corr = _lesion_frame(plan, img.shape, spacing)
    shape = r.shape[1:]
    n1, n2 = smooth_noise(rng, shape, corr), smooth_noise(rng, shape, corr)
    n3 = smooth_noise(rng, shape, max(corr / 2, 1.0))
    rho = _ellipsoid_radius(r, plan.axes, plan.rotation_deg, radius)
    ball = np.sqrt((r ** 2).sum(0)) <= radius
    brain, gm, wm = tissue.brain[box], tissue.gm[box], tissue.wm[box]
    rho1 = rho * (1 + 0.12 * n1)
    solid = (rho1 < plan.solid_frac) & ball & brain
    core = solid & (rho1 < plan.solid_frac * plan.core_frac)
    oedema = (rho * (1 + 0.2 * n2) - 0.15 * (wm - 0.5) < 1.0) & ball & brain & (gm + wm > 0.3)
    mask = _keep_connected(solid | oedema, solid)
    base = img[box]
    # oedema is strongest next to the solid part and fades towards its edge
    fade = np.clip((rho - plan.solid_frac) / max(1 - plan.solid_frac, 1e-3), 0, 1)
    target = base * (plan.oedema_factor + (1 - plan.oedema_factor) * 0.4 * fade)
    target = np.where(solid, wm_level * plan.rim_level * (1 + 0.05 * n3), target)
    target = np.where(core, wm_level * plan.core_level * (1 + 0.08 * n3), target)
    return _apply(img, box, mask, (target - base).astype(np.float32), wm_level)


# -- stroke -------------------------------------------------------------------------------
def plan_stroke(rng: np.random.Generator, tissue: Tissue, spacing: int, d_min: float,
                d_max: float) -> StrokePlan:
    """Choose a territorial wedge (base on the cortex) or a small deep lacune."""
    lo = min(max(1.5 * d_min, 4.0 * spacing), d_max)
    diameter = _draw_diameter(rng, lo, d_max, log=True)
    lacunar = diameter <= 15.0 and rng.random() < 0.5
    axes = tuple(float(v) for v in rng.uniform(0.6, 1.0, 3))
    axes = tuple(a / max(axes) for a in axes)
    rotation = tuple(float(v) for v in rng.uniform(-180.0, 180.0, 3))
    depth = float(rng.uniform(0.45, 0.85))
    texture_seed = int(rng.integers(2 ** 31))
    shape = tissue.brain.shape
    centroid = np.array(ndimage.center_of_mass(tissue.brain))
    if lacunar:
        deep = tissue.brain & ((tissue.wm > 0.6) | (tissue.gm > 0.6))
        idx = np.argwhere(deep)
        near = idx[np.sqrt((((idx - centroid) * spacing) ** 2).sum(1)) < 40.0]
        centre = near[int(rng.integers(len(near)))].astype(float)
        return StrokePlan(tuple(centre), diameter, "lacunar", tuple(centre), (0.0, 0.0, 0.0), 0.0,
                          axes, rotation, depth, texture_seed)
    for _ in range(100):
        side = 1.0 if rng.random() < 0.5 else -1.0
        v = np.array([side * rng.uniform(0.4, 1.0), rng.uniform(-1.0, 1.0), rng.uniform(-0.2, 0.9)])
        v /= np.linalg.norm(v)
        apex = centroid + np.array([side * 12.0 / spacing, 0.0, 0.0])
        # march outwards to the last brain voxel on the ray: the cortex where the territory ends
        surface, outside = None, 0
        for step in np.arange(0.0, 200.0 / spacing, 0.5):
            p = apex + step * v
            ip = np.round(p).astype(int)
            if np.any(ip < 0) or np.any(ip >= shape):
                break
            if tissue.brain[tuple(ip)]:
                surface, outside = p, 0
            else:
                outside += 1
                if outside > 6 / (0.5 * spacing):
                    break
        if surface is not None and np.linalg.norm((surface - apex) * spacing) > diameter:
            break
    # the ball's widest part sits just under the cortex (the part outside the brain is cut
    # away) and the cone narrows inwards: a wedge with its base on the cortex
    centre = surface - v * (0.2 * diameter / spacing)
    half = math.degrees(math.atan(0.45 * diameter / (np.linalg.norm(surface - apex) * spacing)))
    return StrokePlan(tuple(float(c) for c in centre), diameter, "territorial",
                      tuple(float(c) for c in apex), tuple(float(c) for c in v), half, axes,
                      rotation, depth, texture_seed)


def paint_stroke(plan: StrokePlan, tissue: Tissue, img: np.ndarray, wm_level: float,
                 csf_level: float, spacing: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask): hypo-intense infarct on GM/WM inside the plan's wedge or lacune."""
    radius, box, r, rng, corr = _lesion_frame(plan, img.shape, spacing)
    shape = r.shape[1:]
    n1, n2, n3 = (smooth_noise(rng, shape, corr) for _ in range(3))
    dist = np.sqrt((r ** 2).sum(0))
    inside = dist <= radius * (0.85 + 0.15 * np.clip(n1, -1, 1))
    if plan.subtype == "territorial":
        from_apex = r + ((np.asarray(plan.centre) - np.asarray(plan.apex)) * spacing).astype(np.float32)[:, None, None, None]
        cos = np.einsum("i,i...->...", np.asarray(plan.direction, np.float32), from_apex) \
            / np.maximum(np.sqrt((from_apex ** 2).sum(0)), 1e-6)
        inside &= cos >= math.cos(math.radians(plan.half_angle_deg))
    else:
        inside &= _ellipsoid_radius(r, plan.axes, plan.rotation_deg, radius) * (1 + 0.1 * n1) < 1.0
    brain, gm, wm = tissue.brain[box], tissue.gm[box], tissue.wm[box]
    tissue_ok = brain & (gm + wm + 0.15 * n2 > 0.6)
    mask = inside & tissue_ok
    centre_vox = np.zeros(shape, bool)
    c = tuple(min(max(int(round(cv - s.start)), 0), n - 1) for cv, s, n in zip(plan.centre, box, shape))
    centre_vox[c] = True
    mask = _keep_connected(mask, centre_vox)
    base = img[box]
    a = np.clip(plan.depth * (1 + 0.15 * n3), 0.3, 0.95)
    delta = (a * (csf_level - base)).astype(np.float32)
    return _apply(img, box, mask, delta, wm_level)
