"""Locally aware patch features (PatchCore §3.1, Eq. 2-3) and the training-patch selection.

Each layer's map is averaged over a p x p neighbourhood (p = 3 by default), which widens the
receptive field without losing resolution; the deeper, coarser layers are then bilinearly
resized to the first (finest) layer's grid and all are concatenated along channels. For VGG16
blocks 3-5 at 160x128 that is D = 256 + 512 + 512 = 1280 channels on a 40x32 grid.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["locally_aware", "keep_mask"]


def locally_aware(feats: Sequence[torch.Tensor], neighbourhood: int = 3,
                  embed_dim: int | None = None) -> torch.Tensor:
    """Layer maps [(B, C_l, h_l, w_l)], finest first → patch features (B, D, h_0, w_0).

    neighbourhood  p of the p x p average (padding excluded from the mean at the borders).
    embed_dim      None: D = sum C_l. Otherwise each layer is adaptively average-pooled over
                   channels to embed_dim // L (PatchCore's per-layer "preprocessing"), so every
                   layer gets the same share of D = L * (embed_dim // L) whatever its width.
    """
    if not feats:
        raise ValueError("locally_aware needs at least one layer")
    if neighbourhood < 1 or neighbourhood % 2 == 0:
        raise ValueError(f"neighbourhood must be an odd integer >= 1, got {neighbourhood!r}")
    h, w = feats[0].shape[-2:]
    share = None if embed_dim is None else int(embed_dim) // len(feats)
    if share is not None and share < 1:
        raise ValueError(f"embed_dim={embed_dim} is smaller than the number of layers ({len(feats)})")
    out = []
    for f in feats:
        if neighbourhood > 1:
            f = F.avg_pool2d(f, neighbourhood, stride=1, padding=neighbourhood // 2,
                             count_include_pad=False)
        if f.shape[-2:] != (h, w):
            f = F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False)
        if share is not None and share != f.shape[1]:
            b = f.shape[0]
            # pool neighbouring channels: (B, C, h, w) → (B*h*w, 1, C) → (B*h*w, 1, share)
            f = F.adaptive_avg_pool1d(f.permute(0, 2, 3, 1).reshape(-1, 1, f.shape[1]), share)
            f = f.reshape(b, h, w, share).permute(0, 3, 1, 2)
        out.append(f)
    return torch.cat(out, dim=1)


def keep_mask(brain: torch.Tensor, grid: tuple[int, int], margin: int | None) -> torch.Tensor:
    """Which grid patches of training slices go into the memory bank: (B, H, W) → (B, h, w).

    A patch is kept when its image cell holds brain or lies within ``margin`` cells of one
    that does. Farther background patches are dropped: background is constant (-1), so those
    patches are near-copies of each other that would only waste coreset slots and time (one
    all-background slice added by the detector represents them). margin=None keeps all.
    """
    b = brain.shape[0]
    if margin is None:
        return torch.ones(b, *grid, dtype=torch.bool)
    if margin < 0:
        raise ValueError(f"brain_margin must be None or an integer >= 0, got {margin!r}")
    cells = F.adaptive_max_pool2d(brain[:, None].float(), grid)
    if margin > 0:
        cells = F.max_pool2d(cells, 2 * margin + 1, stride=1, padding=margin)
    return cells[:, 0] > 0
