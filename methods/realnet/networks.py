"""RealNet's trainable networks (Zhang, Xu and Zhou, CVPR 2024, §3.3-3.4; code
github.com/cnulab/RealNet ``models/recon`` and ``models/rrs``).

=======================  ===================================================================
:class:`FeatureUNet`     one feature reconstruction network per backbone layer: a UNet on the
                         AFS-selected features (B, C_l, h_l, w_l) -> (B, C_l, h_l, w_l),
                         GroupNorm + SiLU residual blocks, self-attention at the configured
                         down-sampling factors, zero-initialised output convolution
:class:`SegmentationHead`  Reconstruction Residual Selection (RRS, §3.4) and the
                         discriminator: residuals of every layer on the finest grid, a
                         non-affine BatchNorm that ranks channels, the top-k channels by
                         spatial max and by spatial mean per sample, decoded to 2-class
                         logits at the image size
:class:`RealNetModel`    the selected channel indices (buffers), the reconstruction networks
                         and the head; ``forward(feats, size)`` -> selected features, their
                         reconstructions and the logits
=======================  ===================================================================

Widths follow the code: a reconstruction network's base width is ``hidden_ratio`` x C_l
(0.5), with channel multipliers (1, 2, 4) and two residual blocks per level; the head decodes
k -> 128 -> 32 -> 8, up-samples x2, then 8 -> 4 -> 2. One difference: the code up-samples
with a stride-2 transposed convolution, which cannot return to the odd grids VGG16 gives at
160 x 128 (block 5: 10 x 8 -> 5 x 4 -> 3 x 2); here the up-sampling interpolates to the size
of the matching skip connection (nearest) before the convolution.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .selection import select_residuals

__all__ = ["FeatureUNet", "SegmentationHead", "RealNetModel", "HEAD_WIDTHS"]

#: the code's decoder widths after the residual stack (decoder1 -> decoder2 -> decoder3)
HEAD_WIDTHS = (128, 32, 8, 4)


def _norm(c: int) -> nn.GroupNorm:
    """The code's GroupNorm32, with as many groups (<= 32) as divide ``c`` (tiny test widths)."""
    return nn.GroupNorm(math.gcd(32, c), c)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, plus a skip (1x1 conv when the width changes).

    resample  None | "down" (average pooling x2, ceil) | "up" (nearest to the ``size`` given
              to forward); applied to both paths between the activation and the convolution,
              as the code's ``ResBlock(up=..., down=...)``.
    """

    def __init__(self, c_in: int, c_out: int, resample: str | None = None):
        super().__init__()
        self.norm, self.act = _norm(c_in), nn.SiLU()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
        self.resample = resample

    def _resample(self, x: torch.Tensor, size) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2, ceil_mode=True)
        if self.resample == "up":
            return F.interpolate(x, size=size, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        h = self._resample(self.act(self.norm(x)), size)
        return self.skip(self._resample(x, size)) + self.conv(h)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the h*w positions, heads of ``head_channels`` (64, the
    code's ``num_head_channels``; at least one head), residual, zero-initialised projection."""

    def __init__(self, c: int, head_channels: int = 64):
        super().__init__()
        self.heads = max(c // head_channels, 1)
        if c % self.heads:
            raise ValueError(f"SelfAttention: {c} channels do not split into {self.heads} heads")
        self.norm = _norm(c)
        self.qkv = nn.Conv1d(c, 3 * c, 1)
        self.proj = nn.Conv1d(c, c, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x).flatten(2)).view(b, 3, self.heads, c // self.heads,
                                                         h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2),
                                             v.transpose(-1, -2))    # (b, heads, hw, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h * w)).view(b, c, h, w)


class _Stage(nn.Module):
    """A residual block, optionally followed by self-attention."""

    def __init__(self, c_in: int, c_out: int, attention: bool):
        super().__init__()
        self.block = ResBlock(c_in, c_out)
        self.attn = SelfAttention(c_out) if attention else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.block(x))


class FeatureUNet(nn.Module):
    """Reconstruct one layer's selected features: (B, C, h, w) -> (B, C, h, w).

    channels        C, the AFS-selected channels of this layer
    hidden_ratio    base width = round(hidden_ratio * C) (code ``hide_channels_ratio`` 0.5)
    channel_mult    width multipliers per level (code (1, 2, 4)); a level after the first
                    halves the grid (ceil)
    num_res_blocks  residual blocks per level (code 2)
    attention_mult  down-sampling factors (1, 2, 4, ...) whose stages get self-attention
                    (code (2, 4)); the middle stage always has it, as in the code
    """

    def __init__(self, channels: int, hidden_ratio: float = 0.5,
                 channel_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2,
                 attention_mult: Sequence[int] = (2, 4)):
        super().__init__()
        base = max(round(hidden_ratio * channels), 1)
        mult = [int(m) for m in channel_mult]
        attn = {int(a) for a in attention_mult}
        ch = mult[0] * base
        self.inp = nn.Conv2d(channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ds = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(num_res_blocks):
                self.down.append(_Stage(ch, m * base, ds in attn))
                ch = m * base
                skips.append(ch)
            if level != len(mult) - 1:
                self.down.append(ResBlock(ch, ch, resample="down"))
                skips.append(ch)
                ds *= 2
        self.middle = nn.Sequential(ResBlock(ch, ch), SelfAttention(ch), ResBlock(ch, ch))
        self.up = nn.ModuleList()
        self.up_resample = nn.ModuleDict()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(num_res_blocks + 1):
                self.up.append(_Stage(ch + skips.pop(), m * base, ds in attn))
                ch = m * base
                if level and i == num_res_blocks:
                    self.up_resample[str(len(self.up) - 1)] = ResBlock(ch, ch, resample="up")
                    ds //= 2
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)    # the code's zero_module: starts at 0
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        hs = [h]
        for m in self.down:
            h = m(h)
            hs.append(h)
        h = self.middle(h)
        for i, m in enumerate(self.up):
            skip = hs.pop()
            h = m(torch.cat([h, skip], dim=1))
            if str(i) in self.up_resample:     # back to the grid of the next skip
                h = self.up_resample[str(i)](h, size=tuple(hs[-1].shape[-2:]))
        return self.out(h)


class ResidualStack(nn.Module):
    """The code's ``ResidualStack``: n x [x + conv1x1(ReLU(conv3x3(ReLU(x))))], then ReLU."""

    def __init__(self, c: int, n: int):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(
            nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.ReLU(),
            nn.Conv2d(c, c, 1, bias=False)) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return F.relu(x)


class SegmentationHead(nn.Module):
    """RRS and the discriminator (§3.4): residuals {layer: (B, C_l, h_l, w_l)} -> logits
    (B, 2, H, W); softmax channel 1 is the anomaly probability.

    in_channels     sum of C_l (the BatchNorm that ranks the residual channels)
    modes, numbers  RRS: for each mode ("max" | "mean") keep ``numbers[i]`` channels with the
                    largest spatial max / mean of the normalised residual, per sample (code
                    ``modes`` [max, mean], ``mode_numbers`` [256, 256]); k = sum(numbers)
    residual_layers residual blocks on the k selected channels (code 2)
    """

    def __init__(self, in_channels: int, modes: Sequence[str] = ("max", "mean"),
                 numbers: Sequence[int] = (256, 256), residual_layers: int = 2):
        super().__init__()
        self.modes, self.numbers = tuple(modes), tuple(int(n) for n in numbers)
        k = sum(self.numbers)
        if k > in_channels:
            raise ValueError(f"RRS keeps {k} residual channels ({dict(zip(modes, numbers))}) "
                             f"but only {in_channels} are selected by AFS; lower rrs_channels")
        # code: nn.BatchNorm2d(momentum=0.9, affine=False): statistics only, to rank channels
        self.rank_norm = nn.BatchNorm2d(in_channels, momentum=0.9, affine=False)
        w1, w2, w3, w4 = HEAD_WIDTHS
        self.decoder1 = nn.Sequential(ResidualStack(k, residual_layers),
                                      nn.Conv2d(k, w1, 3, padding=1), nn.BatchNorm2d(w1), nn.ReLU())
        self.decoder2 = nn.Sequential(nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(w2, w3, 3, padding=1), nn.ReLU())
        self.decoder3 = nn.Sequential(nn.Conv2d(w3, w4, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(w4, 2, 3, padding=1))

    def aligned(self, residuals: Sequence[torch.Tensor]) -> torch.Tensor:
        """Every residual bilinearly (align_corners, as the code's UpsamplingBilinear2d) on
        the finest grid, concatenated: (B, sum C_l, h_0, w_0)."""
        size = max((r.shape[-2:] for r in residuals), key=lambda s: s[0] * s[1])
        return torch.cat([r if r.shape[-2:] == size else
                          F.interpolate(r, size=tuple(size), mode="bilinear", align_corners=True)
                          for r in residuals], dim=1)

    def forward(self, residuals: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        r = self.aligned(residuals)
        chosen = select_residuals(r, self.rank_norm(r), self.modes, self.numbers)
        h = self.decoder2(self.decoder1(chosen))
        h = F.interpolate(h, size=(2 * h.shape[-2], 2 * h.shape[-1]), mode="bilinear",
                          align_corners=True)
        return F.interpolate(self.decoder3(h), size=tuple(size), mode="bilinear",
                             align_corners=True)


class RealNetModel(nn.Module):
    """AFS indices, reconstruction networks and head of one RealNet.

    cfg  JSON-able dict: "layers" (names), "channels" (C_l of each layer in the backbone),
         "afs_channels" (kept per layer), "hidden_ratio", "channel_mult", "num_res_blocks",
         "attention_mult", "rrs_modes", "rrs_channels", "residual_layers".
    Buffers ``index_<layer>`` (long, sorted) hold the AFS selection; they are zero until
    :meth:`set_indices` (the selection runs before training) and are saved with the model.
    """

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = dict(cfg)
        self.layers = tuple(cfg["layers"])
        for name, c, k in zip(self.layers, cfg["channels"], cfg["afs_channels"]):
            if not 1 <= int(k) <= int(c):
                raise ValueError(f"afs_channels: {k} for layer {name!r}, which has {c} channels; "
                                 f"expected 1..{c}")
            self.register_buffer(f"index_{name}", torch.arange(int(k), dtype=torch.long))
        self.recon = nn.ModuleDict({name: FeatureUNet(
            int(k), cfg["hidden_ratio"], cfg["channel_mult"], int(cfg["num_res_blocks"]),
            cfg["attention_mult"]) for name, k in zip(self.layers, cfg["afs_channels"])})
        self.head = SegmentationHead(sum(int(k) for k in cfg["afs_channels"]), cfg["rrs_modes"],
                                     cfg["rrs_channels"], int(cfg["residual_layers"]))

    def indices(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"index_{name}") for name in self.layers}

    @torch.no_grad()
    def set_indices(self, indices: dict[str, torch.Tensor]) -> None:
        for name, idx in indices.items():
            buf = getattr(self, f"index_{name}")
            if idx.shape != buf.shape:
                raise ValueError(f"AFS indices for {name!r}: got {tuple(idx.shape)}, expected "
                                 f"{tuple(buf.shape)}")
            buf.copy_(idx)

    def select(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """AFS: {layer: (B, C_l, h, w)} -> {layer: (B, afs_channels_l, h, w)}."""
        return {n: feats[n].index_select(1, getattr(self, f"index_{n}")) for n in self.layers}

    def forward(self, feats: dict[str, torch.Tensor], size: tuple[int, int]
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """feats: the backbone's {layer: (B, C_l, h_l, w_l)}; size: (H, W) of the image.
        Returns (selected {layer: F_l}, reconstructions {layer: F̂_l}, logits (B, 2, H, W)),
        with residuals (F_l - F̂_l)^2 (paper Eq. 5) feeding the head."""
        selected = self.select(feats)
        recon = {n: self.recon[n](f) for n, f in selected.items()}
        residuals = [(selected[n] - recon[n]) ** 2 for n in self.layers]
        return selected, recon, self.head(residuals, size)
