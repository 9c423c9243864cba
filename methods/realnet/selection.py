"""RealNet's two selections (Zhang, Xu and Zhou, CVPR 2024; code github.com/cnulab/RealNet
``models/afs`` and ``models/rrs``).

Anomaly-aware Features Selection (AFS, §3.3) runs once, before training, on the frozen
backbone. For every channel c of a layer it measures how well the channel's squared feature
change separates a synthetic anomaly from the rest of the slice::

    r_c   = (F_c(x_aug) - F_c(x))^2                         over the B*h*w positions
    r̃_c   = (r_c - min r_c) / (max r_c - min r_c + 1e-4)     (min and max over the batch)
    e_c   = mean over positions of (r̃_c - M)^2              M: the mask, nearest-resized to h x w

summed over ``afs_batches`` batches of anomalous slices; the ``afs_channels`` channels with
the smallest sum are kept, in ascending index order (the code's ``init_block_idxs``; a NaN
sum, a channel that never changes, counts as the largest finite sum).

Reconstruction Residual Selection (RRS, §3.4) runs on every forward pass: from the residuals
of all layers, aligned on one grid and ranked after a non-affine BatchNorm, each sample keeps
the channels with the largest spatial max and those with the largest spatial mean (the code's
``select_ano_index``; the two lists may share channels, as in the code).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["AFSAccumulator", "channel_errors", "select_channels", "select_residuals"]


@torch.no_grad()
def channel_errors(anomalous: torch.Tensor, normal: torch.Tensor,
                   masks: torch.Tensor) -> torch.Tensor:
    """e_c of one batch (module docstring): anomalous, normal (B, C, h, w) features of the
    synthetic and the original slices, masks (B, 1, H, W) in {0, 1} -> (C,) float64."""
    if anomalous.shape != normal.shape or anomalous.ndim != 4:
        raise ValueError(f"AFS: features {tuple(anomalous.shape)} and {tuple(normal.shape)} "
                         "must both be (B, C, h, w)")
    b, c, h, w = anomalous.shape
    r = (anomalous.double() - normal.double()).pow(2).transpose(0, 1).reshape(c, b * h * w)
    lo, hi = r.amin(dim=1, keepdim=True), r.amax(dim=1, keepdim=True)
    r = (r - lo) / (hi - lo + 1e-4)
    label = F.interpolate(masks.double(), size=(h, w), mode="nearest")
    label = label.transpose(0, 1).reshape(1, b * h * w)
    return (r - label).pow(2).mean(dim=1)


def select_channels(errors: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` channels of smallest error (C,), sorted ascending: (k,) int64."""
    e = errors.clone()
    bad = torch.isnan(e)
    if bool(bad.all()):
        raise ValueError("AFS: every channel's error is NaN; the synthetic anomalies changed "
                         "no feature (check the anomaly source)")
    e[bad] = e[~bad].max()
    return torch.topk(e, k=int(k), largest=False).indices.sort().values.long()


class AFSAccumulator:
    """Sum of :func:`channel_errors` per layer over batches; :meth:`indices` selects."""

    def __init__(self, channels: dict[str, int]):
        self.sums = {n: torch.zeros(int(c), dtype=torch.float64) for n, c in channels.items()}
        self.batches = 0

    def update(self, anomalous: dict[str, torch.Tensor], normal: dict[str, torch.Tensor],
               masks: torch.Tensor) -> None:
        for n in self.sums:
            self.sums[n] += channel_errors(anomalous[n], normal[n], masks).cpu()
        self.batches += 1

    def indices(self, keep: dict[str, int]) -> dict[str, torch.Tensor]:
        return {n: select_channels(self.sums[n], keep[n]) for n in self.sums}


@torch.no_grad()
def _rank(ranked: torch.Tensor, mode: str, k: int) -> torch.Tensor:
    flat = ranked.flatten(2)
    if mode == "max":
        score = flat.amax(dim=-1)
    elif mode == "mean":
        score = flat.mean(dim=-1)
    else:
        raise ValueError(f"RRS mode {mode!r}: expected 'max' or 'mean'")
    return torch.topk(score, k=int(k), dim=1, largest=True, sorted=True).indices


def select_residuals(residual: torch.Tensor, ranked: torch.Tensor, modes: Sequence[str],
                     numbers: Sequence[int]) -> torch.Tensor:
    """RRS: residual (B, C, h, w) (gradients flow through it), ranked (B, C, h, w) (its
    normalised copy, only ranked) -> (B, sum(numbers), h, w): for each mode its ``numbers[i]``
    top channels per sample, in descending score order, the modes one after the other."""
    if len(modes) != len(numbers):
        raise ValueError(f"RRS: {len(modes)} modes {list(modes)} but {len(numbers)} numbers")
    b, _, h, w = residual.shape
    out = []
    for mode, k in zip(modes, numbers):
        idx = _rank(ranked, mode, k)                                   # (B, k)
        out.append(torch.gather(residual, 1, idx[:, :, None, None].expand(b, int(k), h, w)))
    return torch.cat(out, dim=1)
