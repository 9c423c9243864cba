"""Procedural 'healthy' slices for method tests: textured ellipses on a -1 background,
and a copy with a bright blob (a known anomaly the map maximum must fall inside)."""
from __future__ import annotations

import numpy as np
import torch

from adbench import SliceSet

H, W = 64, 64


def healthy_slices(n: int, seed: int) -> SliceSet:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    imgs, brains = [], []
    for _ in range(n):
        a, b = 0.8 + 0.05 * torch.rand(2, generator=g)
        r = (yy / a) ** 2 + (xx / b) ** 2
        ph = torch.rand(2, generator=g) * 6.28
        tex = 0.15 * torch.sin(9 * yy + ph[0]) * torch.cos(8 * xx + ph[1])
        brain = r < 1
        imgs.append(torch.where(brain, 0.2 - 0.3 * r + tex, torch.tensor(-1.0)))
        brains.append(brain)
    brain = torch.stack(brains)
    return SliceSet(images=torch.stack(imgs)[:, None], brain=brain,
                    lesion=torch.zeros_like(brain), subjects=[f"s{i}" for i in range(n)],
                    z=np.arange(n))


def with_blob(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(copy of x with a bright disc in slice 0, the disc's (H, W) mask)."""
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    blob = ((yy - 26) ** 2 + (xx - 38) ** 2) < 8 ** 2
    x = x.clone()
    x[0, 0][blob] = 1.0
    return x, blob
