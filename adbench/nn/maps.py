"""From a coarse patch-score grid to a slice-sized anomaly map (shared by PatchCore and PaDiM).

Both papers upsample the patch-score grid to the input size and smooth it with a Gaussian of
sigma 4 pixels (PatchCore §3.3, PaDiM §3.3). Everything here is pure torch so it runs on the
detector's device; the Gaussian matches ``scipy.ndimage.gaussian_filter(..., mode="mirror",
truncate=4.0)`` (checked in tests).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["gaussian_kernel1d", "separable_blur", "gaussian_blur", "grid_to_map"]


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype=torch.float32,
                      device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ``int(truncate * sigma + 0.5)`` (scipy's rule)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    k = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return (k / k.sum()).to(dtype)


def separable_blur(x: torch.Tensor, kernel: torch.Tensor, padding: str = "reflect") -> torch.Tensor:
    """Convolve every channel of x (B, C, H, W) with the 1-D ``kernel`` (odd length) along W,
    then along H, padding each side by the kernel radius with ``padding`` ("reflect" =
    scipy's "mirror", "replicate" = scipy's "nearest")."""
    c = x.shape[1]
    r = (kernel.numel() - 1) // 2
    k = kernel.to(x.dtype)
    x = F.pad(x, (r, r, 0, 0), mode=padding)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, r, r), mode=padding)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian smoothing of ``maps`` (B, H, W) with mirror ("reflect") borders.

    sigma <= 0 returns the input unchanged. The radius is clipped to H-1 / W-1 because
    mirror padding cannot reach further than the image itself.
    """
    if sigma <= 0:
        return maps
    b, h, w = maps.shape
    k = gaussian_kernel1d(sigma, truncate, dtype=maps.dtype, device=maps.device)
    r = (k.numel() - 1) // 2
    if r >= min(h, w):  # a tiny grid: fall back to the widest kernel mirror padding allows
        r = min(h, w) - 1
        k = k[(k.numel() - 1) // 2 - r:(k.numel() - 1) // 2 + r + 1]
        k = k / k.sum()
    return separable_blur(maps[:, None], k, padding="reflect")[:, 0]


def grid_to_map(grid: torch.Tensor, size: tuple[int, int], sigma: float = 4.0) -> torch.Tensor:
    """Patch scores (B, h, w) → anomaly map (B, H, W): bilinear upsampling then Gaussian(sigma).

    ``align_corners=False`` so each patch score sits at the centre of the image cell it covers.
    """
    if grid.ndim != 3:
        raise ValueError(f"grid_to_map expects (B, h, w) patch scores, got {tuple(grid.shape)}")
    if not math.isfinite(float(sigma)) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0 (pixels), got {sigma!r}")
    up = F.interpolate(grid[:, None].float(), size=tuple(int(s) for s in size), mode="bilinear",
                       align_corners=False)[:, 0]
    return gaussian_blur(up, sigma)

