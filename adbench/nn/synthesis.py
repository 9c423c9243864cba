"""Pseudo-anomaly synthesis shared by the methods that train on synthetic anomalies
(DRÆM, RealNet, MediCLIP).

A synthetic anomaly is DRÆM's (Zavrtanik et al., ICCV 2021, Sec. 3.3): a binary mask M from
thresholded, rotated Perlin noise, restricted to the brain, and a texture T blended in with

    aug = (1 - M) * I + (1 - beta) * M * T + beta * M * I,      beta ~ U(beta_range)

where pixels whose change |aug - I| stays below ``min_change`` (default 0.08, 4 % of the
[-1, 1] range: hardly visible) are left unchanged, so that a mask marks what can be seen. The
returned mask is computed from the result, ``mask = (aug != I)``, so it is exact: 1
exactly where a value changed, and (because M is restricted to the brain) always inside the
brain. Texture sources (``sources``) are pluggable; all but ``dtd`` exist offline:

===============  ==========================================================================
``healthy``      another healthy slice from ``pool``, randomly shifted and rotated
``procedural``   fractal Perlin noise or stripes, random contrast (no files needed)
``intensity``    the slice itself made hypo-/hyper-intense, gamma-changed, blurred or noisy
``dtd``          a grey, resized image from a user's DTD folder ``dtd_root`` (DRÆM's source;
                 cannot be downloaded here, so it is off by default)
===============  ==========================================================================

Each sample has its own ``numpy.random.Generator`` seeded by its own seed: sample i depends
only on seeds[i], images[i], brain_masks[i] and the pool, never on its batch or position.

Usage::

    cfg = SynthesisConfig.from_dict(method_config["synthesis"])   # {} = defaults
    aug, masks = synthesize(images, brain_masks, seeds, config=cfg, pool=pool)
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from adbench.errors import ConfigError

__all__ = [
    "IMAGE_SUFFIXES",
    "SOURCES",
    "SynthesisConfig",
    "image_files",
    "perlin_mask",
    "perlin_noise",
    "sample_seeds",
    "synthesize",
    "synthesize_one",
]

SOURCES = ("healthy", "procedural", "intensity", "dtd")
#: image files a texture or anomaly folder may hold
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    """Settings of :func:`synthesize`; build it with :meth:`from_dict` from a config value."""

    p_anomaly: float = 0.5                         # probability a sample gets an anomaly (DRÆM: 0.5)
    sources: tuple[str, ...] = ("healthy", "procedural", "intensity")  # drawn uniformly per sample
    beta_range: tuple[float, float] = (0.0, 0.8)   # opacity beta of the original pixels (DRÆM)
    perlin_scale_exp: tuple[int, int] = (0, 5)     # Perlin grid 2^k per axis, k ~ U{lo..hi}
    #                                                (DRÆM: 2 ** torch.randint(0, 6), k in 0..5)
    threshold: float = 0.5                         # Perlin noise > threshold is the mask (DRÆM)
    rotate: float = 90.0                           # mask rotated by U(-rotate, rotate) degrees
    min_change: float = 0.08                       # smaller changes |aug - I| are undone (0: keep all)
    min_pixels: int = 16                           # fewer changed brain pixels: draw again
    max_tries: int = 8                             # draws before a sample is left anomaly-free
    healthy_shift: float = 0.15                    # "healthy": shift up to this fraction of H, W
    healthy_rotate: float = 20.0                   # "healthy": rotation up to this many degrees
    dtd_root: str | None = None                    # folder of DTD images (searched recursively)

    @classmethod
    def from_dict(cls, value: dict[str, Any] | SynthesisConfig | None) -> SynthesisConfig:
        """Validated config from a method's ``synthesis`` value; unknown keys are an error."""
        if isinstance(value, SynthesisConfig):
            return value
        value = dict(value or {})
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise ConfigError(f"synthesis: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
        for key in ("sources", "beta_range", "perlin_scale_exp"):
            if key in value:
                v = value[key]
                if isinstance(v, str):
                    v = [s.strip() for s in v.split(",") if s.strip()]
                if not isinstance(v, (list, tuple)):
                    raise ConfigError(f"synthesis.{key}: got {v!r}; expected a list")
                value[key] = tuple(v)
        cfg = cls(**value)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, no tuples) that :meth:`from_dict` reads back."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad key."""
        if not 0.0 <= float(self.p_anomaly) <= 1.0:
            raise ConfigError(f"synthesis.p_anomaly: got {self.p_anomaly!r}; expected 0 <= p <= 1")
        bad = [s for s in self.sources if s not in SOURCES]
        if bad or not self.sources:
            raise ConfigError(f"synthesis.sources: got {list(self.sources)}; expected a non-empty "
                              f"list of {list(SOURCES)}")
        lo, hi = _pair("beta_range", self.beta_range)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"synthesis.beta_range: got {list(self.beta_range)}; expected "
                              "[lo, hi] with 0 <= lo <= hi <= 1")
        klo, khi = _pair("perlin_scale_exp", self.perlin_scale_exp)
        if not (float(klo).is_integer() and float(khi).is_integer() and 0 <= klo <= khi <= 8):
            raise ConfigError(f"synthesis.perlin_scale_exp: got {list(self.perlin_scale_exp)}; "
                              "expected integers [lo, hi] with 0 <= lo <= hi <= 8")
        if not -1.0 < float(self.threshold) < 1.0:
            raise ConfigError(f"synthesis.threshold: got {self.threshold!r}; expected in (-1, 1)")
        for key in ("rotate", "healthy_shift", "healthy_rotate", "min_change"):
            if float(getattr(self, key)) < 0:
                raise ConfigError(f"synthesis.{key}: got {getattr(self, key)!r}; expected >= 0")
        for key in ("min_pixels", "max_tries"):
            v = getattr(self, key)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"synthesis.{key}: got {v!r}; expected an integer >= 1")
        if "dtd" in self.sources:
            _dtd_files(self.dtd_root)  # fail before any training, naming the folder


def _pair(key: str, v: Sequence) -> tuple[float, float]:
    if len(v) != 2:
        raise ConfigError(f"synthesis.{key}: got {list(v)}; expected two numbers [lo, hi]")
    try:
        return float(v[0]), float(v[1])
    except (TypeError, ValueError):
        raise ConfigError(f"synthesis.{key}: got {list(v)}; expected two numbers") from None


@functools.lru_cache(maxsize=8)
def _image_listing(root: str) -> tuple[str, ...]:
    return tuple(sorted(str(p) for p in Path(root).rglob("*")
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))


def image_files(folder: str | None, *, key: str, hint: str) -> tuple[str, ...]:
    """The image files under ``folder`` (recursively, sorted by path). A ConfigError naming
    the config ``key`` (with ``hint``: what to do) when it is unset, not a folder, or empty."""
    if folder is None:
        raise ConfigError(f"{key} is not set; {hint}")
    if not Path(folder).is_dir():
        raise ConfigError(f"{key}: folder {str(folder)!r} not found; {hint}")
    files = _image_listing(str(Path(folder).resolve()))
    if not files:
        raise ConfigError(f"{key}: folder {str(folder)!r} holds no images "
                          f"({', '.join(IMAGE_SUFFIXES)}); {hint}")
    return files


def _dtd_files(root: str | None) -> tuple[str, ...]:
    return image_files(root, key="synthesis.dtd_root",
                       hint="set synthesis.dtd_root to a folder of texture images (e.g. DTD's "
                            "dtd/images), or drop 'dtd' from synthesis.sources")


# ---------------------------------------------------------------------------------- masks

def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int],
                 rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise (H, W) float32, roughly in [-1, 1], with ``res`` = (ry, rx)
    lattice cells along H and W (random unit gradients at the (ry+1)(rx+1) lattice points,
    quintic fade 6t^5 - 15t^4 + 10t^3, Perlin 2002)."""
    (h, w), (ry, rx) = shape, res
    angles = rng.uniform(0.0, 2 * np.pi, size=(ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y = np.arange(h) * (ry / h)
    x = np.arange(w) * (rx / w)
    iy, ix = y.astype(int), x.astype(int)
    fy, fx = (y - iy)[:, None], (x - ix)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grads[(iy + dy)[:, None], (ix + dx)[None, :]]
        return (fy - dy) * g[..., 0] + (fx - dx) * g[..., 1]

    u, v = _fade(fy), _fade(fx)
    top = corner(0, 0) + v * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + v * (corner(1, 1) - corner(1, 0))
    return (np.sqrt(2.0) * (top + u * (bottom - top))).astype(np.float32)


def perlin_mask(shape: tuple[int, int], cfg: SynthesisConfig,
                rng: np.random.Generator) -> np.ndarray:
    """DRÆM's anomaly mask (H, W) bool: Perlin noise with 2^k cells per axis (k drawn per
    axis from ``perlin_scale_exp``), rotated by U(-rotate, rotate) degrees, > ``threshold``."""
    lo, hi = (int(k) for k in cfg.perlin_scale_exp)
    res = (2 ** int(rng.integers(lo, hi + 1)), 2 ** int(rng.integers(lo, hi + 1)))
    noise = perlin_noise(shape, res, rng)
    angle = float(rng.uniform(-cfg.rotate, cfg.rotate)) if cfg.rotate > 0 else 0.0
    if angle != 0.0:  # outside the rotated field is 0, below any threshold >= 0 (as imgaug's fill)
        noise = ndimage.rotate(noise, angle, reshape=False, order=1, mode="constant", cval=0.0)
    return noise > cfg.threshold


# ------------------------------------------------------------------------------- textures

def _rescale(t: np.ndarray) -> np.ndarray:
    """Min-max to [-1, 1] (a constant field becomes 0)."""
    lo, hi = float(t.min()), float(t.max())
    return np.zeros_like(t) if hi - lo < 1e-8 else (2 * (t - lo) / (hi - lo) - 1).astype(np.float32)


def _texture_healthy(img, brain, rng, cfg, pool):
    other = pool[int(rng.integers(len(pool)))]
    h, w = other.shape
    shift = rng.uniform(-cfg.healthy_shift, cfg.healthy_shift, size=2) * (h, w)
    angle = float(rng.uniform(-cfg.healthy_rotate, cfg.healthy_rotate))
    moved = ndimage.shift(ndimage.rotate(other, angle, reshape=False, order=1, mode="nearest"),
                          shift, order=1, mode="nearest")
    # where the moved slice is background there is no texture to take: keep the slice itself
    return np.where(moved > -0.98, moved, img).astype(np.float32)


def _texture_procedural(img, brain, rng, cfg, pool):
    h, w = img.shape
    if rng.random() < 0.5:  # fractal Perlin noise: octaves of halving amplitude
        base = int(rng.integers(1, 4))
        t = sum(0.5 ** o * perlin_noise((h, w), (2 ** (base + o),) * 2, rng) for o in range(4))
    else:  # stripes at a random angle and period, slightly warped
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(4.0, 24.0)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = (np.cos(theta) * yy + np.sin(theta) * xx) * 2 * np.pi / period
        t = np.sin(phase + 2.0 * perlin_noise((h, w), (4, 4), rng))
    t = _rescale(np.asarray(t, dtype=np.float32))
    lo, hi = sorted(rng.uniform(-1.0, 1.0, size=2))  # random contrast window
    return (lo + (t + 1) / 2 * max(hi - lo, 0.3)).clip(-1, 1).astype(np.float32)


def _texture_intensity(img, brain, rng, cfg, pool):
    mode = int(rng.integers(4))
    if mode == 0:  # hypo- or hyper-intensity
        delta = rng.uniform(0.6, 1.5) * (1 if rng.random() < 0.5 else -1)
        t = img + delta
    elif mode == 1:  # gamma on [0, 1], away from 1 (gamma in [1/4, 1/1.8] or [1.8, 4])
        g = float(np.exp(rng.uniform(np.log(1.8), np.log(4.0)) * (1 if rng.random() < 0.5 else -1)))
        t = 2 * ((img + 1) / 2).clip(0, 1) ** g - 1
    elif mode == 2:  # contrast about the brain's mean
        m = float(img[brain].mean()) if brain.any() else 0.0
        t = m + (img - m) * (rng.uniform(2.5, 4.0) if rng.random() < 0.7 else -rng.uniform(1.5, 2.5))
    else:  # smoothed texture noise on top of a blur
        blur = ndimage.gaussian_filter(img, sigma=rng.uniform(1.0, 3.0))
        noise = ndimage.gaussian_filter(rng.standard_normal(img.shape), sigma=rng.uniform(0.5, 1.5))
        t = blur + rng.uniform(0.4, 0.8) * noise / max(float(noise.std()), 1e-6)
    return np.asarray(t, dtype=np.float32).clip(-1, 1)


def _texture_dtd(img, brain, rng, cfg, pool):
    from PIL import Image

    files = _dtd_files(cfg.dtd_root)
    path = files[int(rng.integers(len(files)))]
    h, w = img.shape
    try:
        with Image.open(path) as im:
            grey = im.convert("L").resize((w, h), Image.BILINEAR)
    except OSError as exc:
        raise ConfigError(f"synthesis.dtd_root: cannot read image {path} ({exc})") from None
    t = np.asarray(grey, dtype=np.float32) / 127.5 - 1.0
    t = np.rot90(t, 2) if rng.random() < 0.5 else t  # 180 degrees keeps H x W
    return np.ascontiguousarray(t[:, ::-1] if rng.random() < 0.5 else t)


_TEXTURES = {"healthy": _texture_healthy, "procedural": _texture_procedural,
             "intensity": _texture_intensity, "dtd": _texture_dtd}


# ------------------------------------------------------------------------------ synthesis

def synthesize_one(image: np.ndarray, brain: np.ndarray, seed: int, cfg: SynthesisConfig,
                   pool: np.ndarray | None = None, *, details: dict | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One slice: image (H, W) float32 in [-1, 1], brain (H, W) bool, pool (M, H, W) or None.
    Returns (aug (H, W) float32, mask (H, W) float32 in {0, 1}, mask == (aug != image)).
    ``details``, when given, receives the drawn ``source``, ``beta`` and ``tries`` (for
    ``adbench show --anomalies``)."""
    rng = np.random.default_rng(int(seed) % 2 ** 64)
    image = np.asarray(image, dtype=np.float32)
    brain = np.asarray(brain, dtype=bool)
    none = (image.copy(), np.zeros(image.shape, np.float32))
    info = details if details is not None else {}
    info.update(source=None, beta=None, tries=0)
    if rng.random() >= cfg.p_anomaly or not brain.any():
        return none
    sources = [s for s in cfg.sources if s != "healthy" or (pool is not None and len(pool))]
    if not sources:
        raise ConfigError("synthesis.sources: only 'healthy' is configured but no pool of "
                          "healthy slices was given; add 'procedural' or 'intensity', or pass pool=")
    blo, bhi = (float(b) for b in cfg.beta_range)
    for tries in range(1, cfg.max_tries + 1):
        m = perlin_mask(image.shape, cfg, rng) & brain
        source = sources[int(rng.integers(len(sources)))]
        texture = _TEXTURES[source](image, brain, rng, cfg, pool)
        beta = np.float32(rng.uniform(blo, bhi))
        blended = ((1 - beta) * texture + beta * image).clip(-1, 1).astype(np.float32)
        # a change too small to see is not an anomaly: undo it, so the mask marks what shows
        m &= np.abs(blended - image) >= cfg.min_change
        aug = np.where(m, blended, image).astype(np.float32)
        changed = aug != image
        if int(changed.sum()) >= cfg.min_pixels:
            info.update(source=source, beta=float(beta), tries=tries)
            return aug, changed.astype(np.float32)
    return none


def synthesize(images: torch.Tensor, brain_masks: torch.Tensor,
               seeds: torch.Tensor | Sequence[int], *, config: SynthesisConfig | dict | None = None,
               pool: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic anomalies for a batch.

    images       (N, 1, H, W) float in [-1, 1], healthy slices
    brain_masks  (N, 1, H, W) bool
    seeds        N per-sample seeds (int64 tensor or sequence); see :func:`sample_seeds`
    pool         (M, 1, H, W) float or None: healthy slices for the ``healthy`` source
    Returns (aug (N, 1, H, W) float32, masks (N, 1, H, W) float32 in {0, 1}) on the device
    of ``images``; masks == (aug != images) exactly and lie inside the brain.
    """
    cfg = SynthesisConfig.from_dict(config) if not isinstance(config, SynthesisConfig) else config
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"synthesize: images must be (N, 1, H, W); got {tuple(images.shape)}")
    if tuple(brain_masks.shape) != tuple(images.shape):
        raise ValueError(f"synthesize: brain_masks {tuple(brain_masks.shape)} must match "
                         f"images {tuple(images.shape)}")
    seeds = [int(s) for s in (seeds.tolist() if torch.is_tensor(seeds) else seeds)]
    if len(seeds) != images.shape[0]:
        raise ValueError(f"synthesize: {len(seeds)} seeds for {images.shape[0]} images")
    pool_np = None
    if pool is not None and len(pool):
        if pool.ndim != 4 or tuple(pool.shape[1:]) != tuple(images.shape[1:]):
            raise ValueError(f"synthesize: pool must be (M, 1, H, W) = (M, {images.shape[1:]}); "
                             f"got {tuple(pool.shape)}")
        pool_np = pool[:, 0].detach().float().cpu().numpy()
    imgs = images[:, 0].detach().float().cpu().numpy()
    brains = brain_masks[:, 0].detach().bool().cpu().numpy()
    out = [synthesize_one(imgs[i], brains[i], seeds[i], cfg, pool_np) for i in range(len(seeds))]
    aug = torch.from_numpy(np.stack([a for a, _ in out])[:, None]) if out else images.float() * 0
    masks = torch.from_numpy(np.stack([m for _, m in out])[:, None]) if out else aug.clone()
    return aug.to(images.device), masks.to(images.device)


def sample_seeds(*keys: int, n: int) -> torch.Tensor:
    """n per-sample seeds (int64 tensor) derived from integer keys, e.g. (seed, iteration):
    seed i is a hash of (*keys, i), so a resumed run draws the same anomalies."""
    states = [np.random.SeedSequence([int(k) % 2 ** 63 for k in keys] + [i]).generate_state(
        1, np.uint64)[0] for i in range(n)]
    return torch.tensor([int(s) >> 1 for s in states], dtype=torch.int64)
