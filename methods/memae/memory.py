"""The memory module of MemAE (Gong et al., ICCV 2019, §3.3) and its entropy loss (Eq. 9).

A memory M (N x C) of learned items; every query z (C,) reads ẑ = ŵ M, where

* Eq. 4-5, attention-based addressing: w_i = softmax_i(d(z, m_i)), d the cosine similarity
  (``addressing="cosine"``, the paper) or the plain dot product z m_iᵀ (``"dot"``: the
  authors' code, ``models/memory_module.py``, ``F.linear(input, self.weight)``);
* Eq. 7, hard shrinkage: ŵ_i = max(w_i - λ, 0) · w_i / (|w_i - λ| + ε), ε = 1e-12 (the
  authors' ``hard_shrink_relu``), then the L1 re-normalisation ŵ / ||ŵ||_1 (the paper,
  after Eq. 7; the code's ``F.normalize(p=1)``, which divides by max(||ŵ||_1, 1e-12)).

On a feature grid (B, C, h, w) the memory reads every position's vector on its own, as the
authors' ``MemModule`` does for 2D and 3D convolutional encodings (Fig. 2, "features on one
pixel of the encoding").
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EPS",
    "MemoryModule",
    "address",
    "addressing_entropy",
    "hard_shrink",
    "renormalise",
]

EPS = 1e-12          # ε of Eq. 7, of the L1 re-normalisation and of the entropy's log
Addressing = Literal["cosine", "dot"]


def address(z: torch.Tensor, memory: torch.Tensor, kind: Addressing = "cosine") -> torch.Tensor:
    """Eq. 4-5: soft addressing weights w (T, N) of queries z (T, C) over items (N, C)."""
    if kind == "cosine":
        sim = F.normalize(z, dim=1, eps=EPS) @ F.normalize(memory, dim=1, eps=EPS).t()
    elif kind == "dot":
        sim = z @ memory.t()
    else:
        raise ValueError(f"memory addressing {kind!r}: expected 'cosine' (paper Eq. 4) or "
                         "'dot' (authors' code)")
    return torch.softmax(sim, dim=1)


def hard_shrink(w: torch.Tensor, threshold: float, eps: float = EPS) -> torch.Tensor:
    """Eq. 7: max(w - λ, 0) · w / (|w - λ| + ε), elementwise. Weights at or below λ become 0,
    the others keep (up to ε) their value; the ReLU form keeps a gradient for the survivors."""
    return F.relu(w - threshold) * w / ((w - threshold).abs() + eps)


def renormalise(w: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """ŵ / max(||ŵ||_1, ε) over the last dimension (the items): the weights sum to 1 again."""
    return w / w.abs().sum(dim=-1, keepdim=True).clamp_min(eps)


def addressing_entropy(w: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Eq. 9, E(ŵ) = Σ_i -ŵ_i log ŵ_i, averaged over every query (scalar).

    w: (T, N) weights, or (B, N, h, w) with the items on dimension 1 (what
    :class:`MemoryModule` returns). The log takes ŵ + ε (authors' ``EntropyLoss``), so a
    weight shrunk to 0 adds 0 and no infinite gradient.
    """
    if w.ndim == 4:
        w = w.permute(0, 2, 3, 1).reshape(-1, w.shape[1])
    elif w.ndim != 2:
        raise ValueError(f"addressing_entropy: got weights of shape {tuple(w.shape)}, expected "
                         "(T, N) or (B, N, h, w)")
    return -(w * torch.log(w + eps)).sum(dim=1).mean()


class MemoryModule(nn.Module):
    """z (B, C, h, w) -> (ẑ (B, C, h, w), ŵ (B, N, h, w)): every grid vector read from M."""

    def __init__(self, num_items: int = 2000,             # N, memory size (items)
                 dim: int = 256,                           # C, length of an item = feature channels
                 shrink_threshold: float | None = None,    # λ of Eq. 7; None: 1/N; 0: no shrinkage
                 addressing: Addressing = "cosine"):       # "cosine" (paper) or "dot" (code)
        super().__init__()
        if addressing not in ("cosine", "dot"):
            raise ValueError(f"MemoryModule addressing={addressing!r}: expected 'cosine' or 'dot'")
        self.num_items, self.dim, self.addressing = int(num_items), int(dim), addressing
        self.shrink_threshold = (1.0 / self.num_items if shrink_threshold is None
                                 else float(shrink_threshold))
        self.memory = nn.Parameter(torch.empty(self.num_items, self.dim))
        # authors' reset_parameters: U(-1/sqrt(C), 1/sqrt(C))
        bound = 1.0 / math.sqrt(self.dim)
        nn.init.uniform_(self.memory, -bound, bound)

    def weights(self, z: torch.Tensor) -> torch.Tensor:
        """ŵ (T, N) for queries z (T, C): Eq. 4-5, then Eq. 7 and the L1 re-normalisation
        (skipped when λ = 0, as in the authors' code)."""
        w = address(z, self.memory, self.addressing)
        if self.shrink_threshold > 0:
            w = renormalise(hard_shrink(w, self.shrink_threshold))
        return w

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if z.ndim != 4 or z.shape[1] != self.dim:
            raise ValueError(f"MemoryModule: got {tuple(z.shape)}, expected (B, {self.dim}, h, w)")
        b, c, h, w = z.shape
        # addressing in fp32 even under bf16 autocast: λ = 1/N (5e-4 at N = 2000) is below
        # bf16's resolution near the softmax's values
        with torch.autocast(z.device.type, enabled=False):
            q = z.float().permute(0, 2, 3, 1).reshape(-1, c)               # (B h w, C)
            att = self.weights(q)                                          # (B h w, N)
            out = att @ self.memory.float()                                # (B h w, C)
        out = out.view(b, h, w, c).permute(0, 3, 1, 2).contiguous()
        att = att.view(b, h, w, self.num_items).permute(0, 3, 1, 2)
        return out, att

    def extra_repr(self) -> str:
        return (f"num_items={self.num_items}, dim={self.dim}, "
                f"shrink_threshold={self.shrink_threshold:g}, addressing={self.addressing!r}")
