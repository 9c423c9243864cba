"""Perceptual score A_per and perceptual loss on VGG16 features (paper §2.1 Eq. 2, §2.2).

Both follow LPIPS (Zhang et al., CVPR 2018 — the paper's ref. [31]) on VGG16 blocks:

* per block *j*, features ``F_j`` (B, C_j, h_j, w_j) of both images are unit-normalised along
  channels, ``n = F / ||F||_2``;
* the squared difference ``(n_x - n_y)^2`` is weighted per channel by the lpips package's
  linear head ``w_j`` (v0.1, calibrated on human judgements) and summed over channels;
* A_per upsamples each block's map bilinearly to H x W and sums over blocks 3-5;
  the "lpips" loss averages each map over space and sums over blocks 1-5.

The heads are loaded from the file shipped inside the installed ``lpips`` package
(``lpips/weights/v0.1/vgg.pth``, ``torch.load(weights_only=True)``); no backbone is downloaded.

**Input scaling.** The heads were fitted with LPIPS's ``ScalingLayer``: RGB in [-1, 1] minus
shift (-.030, -.088, -.188), over scale (.458, .448, .450). That is exactly torchvision's
ImageNet normalisation of ``(x + 1) / 2`` (shift = 2·mean − 1, scale = 2·std), so VGG16 sees the
same input as :class:`adbench.nn.backbones.FeatureExtractor`; the grayscale slice is repeated to
three channels first.

**Safe normalisation.** LPIPS computes ``F / (sqrt(sum F^2) + 1e-10)``: on an all-zero feature
vector (ReLU outputs over a black background) the gradient of ``sqrt`` at 0 is infinite and
``0 · inf`` gives NaN. We use ``F · rsqrt(sum F^2 + 1e-20)`` instead, equal to LPIPS wherever
``||F|| >> 1e-10`` and with a finite gradient everywhere. Normalisation, differences and heads
run in float32 even under ``torch.autocast`` (only the convolutions run in bf16/fp16).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adbench.nn.backbones import CHANNELS, GrayToRGB, VGG16Trunk, check_slices
from adbench.io import file_sha256
from adbench.nn.weights import resolve_vgg16

__all__ = ["PerceptualScore", "PerceptualLoss", "unit_normalize", "lpips_heads_file",
           "load_lpips_heads"]

_EPS = 1e-20  # squared-norm floor: LPIPS's 1e-10 on the norm, moved inside the root


def unit_normalize(f: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """``f / ||f||_2`` along dim 1, with a finite gradient at ``f = 0``. (B, C, h, w) → same."""
    return f * torch.rsqrt(f.square().sum(dim=1, keepdim=True) + eps)


def lpips_heads_file() -> Path:
    """The VGG linear-head weights shipped inside the installed ``lpips`` package."""
    import lpips  # imported lazily: only the heads file is needed, never its networks

    return Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / "vgg.pth"


def load_lpips_heads() -> list[torch.Tensor]:
    """The five VGG16 heads ``w_1`` … ``w_5``, each (C_j,) float32 and non-negative."""
    path = lpips_heads_file()
    if not path.is_file():
        raise FileNotFoundError(f"lpips head weights {str(path)!r} are missing; reinstall the "
                                f"`lpips` package (pip install --force-reinstall lpips)")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    heads = [sd[f"lin{j}.model.1.weight"].reshape(-1).float() for j in range(5)]
    for j, (h, c) in enumerate(zip(heads, CHANNELS["vgg16"])):
        if h.numel() != c:
            raise ValueError(f"lpips head lin{j} in {str(path)!r} has {h.numel()} channels, "
                             f"expected {c}")
    return heads


class _VGGPerceptual(nn.Module):
    """Shared frozen VGG16 trunk + LPIPS input scaling + (optional) linear heads."""

    def __init__(self, weights: str, blocks: tuple[int, ...], seed: int, heads: bool):
        super().__init__()
        blocks = tuple(int(b) for b in blocks)
        state, info = resolve_vgg16(weights, seed=seed)
        self.blocks = blocks
        self.to_rgb = GrayToRGB.lpips()
        self.trunk = VGG16Trunk(state, blocks)
        if heads:
            path = lpips_heads_file()
            info = dict(info, lpips_heads={"path": str(path), "sha256": file_sha256(path)})
            all_heads = load_lpips_heads()
            for j in blocks:  # (1, C, 1, 1) buffers: broadcast against (B, C, h, w)
                self.register_buffer(f"head{j}", all_heads[j - 1].view(1, -1, 1, 1),
                                     persistent=False)
        self.weights_info = info
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "_VGGPerceptual":
        return super().train(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [f.float() for f in self.trunk(self.to_rgb(x))]

    def _head_map(self, j: int, nx: torch.Tensor, ny: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) unit features → (B, 1, h, w) = sum_c w_c (nx - ny)_c^2."""
        return ((nx - ny).square() * getattr(self, f"head{j}")).sum(dim=1, keepdim=True)


class PerceptualScore(_VGGPerceptual):
    """A_per, the LPIPS spatial perceptual difference map (paper §2.2, ref. [31]).

    ``forward(x, y)``: x, y (B, 1, H, W) in [-1, 1] → (B, H, W), non-negative, exactly zero
    where x and y are identical (and for identical inputs everywhere):
    ``A(x, y) = sum_{j in blocks} up_{HxW}( sum_c w_{j,c} (n_j(x) - n_j(y))_c^2 )``
    with ``n_j`` the unit-normalised VGG16 block-*j* features and ``up`` bilinear
    (align_corners=False), as ``lpips.LPIPS(net="vgg", spatial=True)`` restricted to
    ``blocks`` (default 3-5, paper §3.2).
    """

    def __init__(self, weights: str = "imagenet", blocks: tuple[int, ...] = (3, 4, 5),
                 seed: int = 0):
        super().__init__(weights, blocks, seed, heads=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_slices(x, "x")
        check_slices(y, "y")
        if x.shape != y.shape:
            raise ValueError(f"PerceptualScore: x {tuple(x.shape)} and y {tuple(y.shape)} differ")
        b, size = x.shape[0], x.shape[-2:]
        feats = self._features(torch.cat([x, y.to(x.dtype)]))  # one pass for both images
        score = None
        for j, f in zip(self.blocks, feats):
            n = unit_normalize(f)
            m = F.interpolate(self._head_map(j, n[:b], n[b:]), size=size, mode="bilinear",
                              align_corners=False)
            score = m if score is None else score + m
        return score[:, 0]


class PerceptualLoss(_VGGPerceptual):
    """Per-sample perceptual loss for GAN inversion (paper Eq. 1-2).

    mode "lpips" (default): ``sum_j mean_{h,w} sum_c w_{j,c} (n_j(x) - n_j(y))_c^2``, i.e.
      ``lpips.LPIPS(net="vgg")`` restricted to ``blocks``.
    mode "eq2": paper Eq. 2 literally, ``sum_j ||F_j(x) - F_j(y)||_2^2 / N_j`` with raw
      (un-normalised) block features and ``N_j = h_j · w_j``, the number of pixels (spatial
      positions) of block *j*'s output.
    blocks: VGG16 blocks, default all five (Eq. 2 sums j = 1..5).

    ``features(y)`` → list of per-block target tensors in the mode's comparison space
    (unit-normalised for "lpips", raw for "eq2"), float32, to compute once per inversion;
    ``from_features(x, target)`` → (B,); ``forward(x, y)`` → (B,). Samples never interact, so
    the sum over a batch gives each sample its own gradient.
    """

    def __init__(self, weights: str = "imagenet", mode: str = "lpips",
                 blocks: tuple[int, ...] = (1, 2, 3, 4, 5), seed: int = 0):
        if mode not in ("lpips", "eq2"):
            raise ValueError(f"PerceptualLoss mode: got {mode!r}; expected 'lpips' or 'eq2'")
        super().__init__(weights, blocks, seed, heads=(mode == "lpips"))
        self.mode = mode

    def _prepare(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [unit_normalize(f) for f in feats] if self.mode == "lpips" else feats

    def features(self, y: torch.Tensor) -> list[torch.Tensor]:
        """y (B, 1, H, W) → per-block targets [(B, C_j, h_j, w_j)] for :meth:`from_features`."""
        check_slices(y, "y")
        return self._prepare(self._features(y))

    def from_features(self, x: torch.Tensor, target: list[torch.Tensor]) -> torch.Tensor:
        """x (B, 1, H, W) against precomputed ``features(y)`` → loss (B,)."""
        check_slices(x, "x")
        return self._compare(self._prepare(self._features(x)), target)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_slices(x, "x")
        check_slices(y, "y")
        if x.shape != y.shape:
            raise ValueError(f"PerceptualLoss: x {tuple(x.shape)} and y {tuple(y.shape)} differ")
        b = x.shape[0]
        feats = self._prepare(self._features(torch.cat([x, y.to(x.dtype)])))
        return self._compare([f[:b] for f in feats], [f[b:] for f in feats])

    def _compare(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        if len(fy) != len(fx) or any(a.shape != t.shape for a, t in zip(fx, fy)):
            raise ValueError(f"PerceptualLoss: target features {[tuple(t.shape) for t in fy]} "
                             f"do not match x's {[tuple(a.shape) for a in fx]}; compute them "
                             f"with features(y) on images of x's size and batch")
        loss = None
        for j, a, t in zip(self.blocks, fx, fy):
            if self.mode == "lpips":
                term = self._head_map(j, a, t).mean(dim=(1, 2, 3))
            else:
                term = (a - t).square().sum(dim=(1, 2, 3)) / (a.shape[-2] * a.shape[-1])
            loss = term if loss is None else loss + term
        return loss
