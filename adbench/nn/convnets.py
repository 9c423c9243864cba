"""DCGAN-style convolutional encoders and decoders for single-channel 160x128 slices, shared by
the reconstruction baselines (f-AnoGAN, GANomaly, MemAE), never padded to a square.

A level halves both sides with a 4x4 stride-2 convolution (Radford et al. 2016), so an
(H, W) input needs H and W divisible by 2^levels: 160x128 with 5 levels ends on a 5x4 grid,
which one 5x4 convolution maps to the latent vector (GANomaly's and f-AnoGAN's final
"valid" convolution, at the slice's own aspect ratio). Channels double per level from
``base`` up to ``channel_max``.

========================  =====================================================================
:class:`ConvEncoder`      (B, C, H, W) -> features (B, F, h, w) -> latent (B, latent_dim)
:class:`ConvDecoder`      (B, latent_dim) -> (B, C, H, W), tanh output in [-1, 1]
========================  =====================================================================
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["ConvEncoder", "ConvDecoder", "level_channels", "check_size"]

Norm = Literal["batch", "layer", "none"]


def check_size(size: tuple[int, int], levels: int) -> tuple[int, int]:
    """The (h, w) grid after ``levels`` halvings; ValueError unless both sides divide."""
    h, w = (int(v) for v in size)
    f = 2 ** int(levels)
    if levels < 1 or h % f or w % f:
        raise ValueError(f"image size {(h, w)}: both sides must be divisible by 2^levels = {f} "
                         f"(levels={levels}); 160x128 takes up to 5 levels")
    return h // f, w // f


def level_channels(levels: int, base: int, channel_max: int) -> list[int]:
    """Channels after each level: base, 2 base, 4 base, ... capped at channel_max."""
    return [min(base * 2 ** i, channel_max) for i in range(levels)]


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":   # WGAN-GP critics must not normalise over the batch (Gulrajani §4)
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm {kind!r}: expected 'batch', 'layer' or 'none'")


class ConvEncoder(nn.Module):
    """x (B, C, H, W) -> z (B, latent_dim); :meth:`features` gives the last grid (B, F, h, w)
    (f-AnoGAN's critic features, GANomaly's discriminator features)."""

    def __init__(self, size: tuple[int, int] = (160, 128),  # (H, W) of the input
                 in_channels: int = 1,                      # 1 for MRI
                 latent_dim: int = 100,                     # length of z (GANomaly: 100)
                 levels: int = 5,                           # stride-2 convolutions
                 base: int = 64,                            # channels after the first level
                 channel_max: int = 512,                    # cap on the channels
                 norm: Norm = "batch"):                     # not after the first level (DCGAN)
        super().__init__()
        self.size, self.in_channels, self.latent_dim = (int(size[0]), int(size[1])), in_channels, latent_dim
        self.grid = check_size(self.size, levels)
        chans = level_channels(levels, base, channel_max)
        layers: list[nn.Module] = []
        prev = in_channels
        for i, c in enumerate(chans):
            layers += [nn.Conv2d(prev, c, 4, 2, 1, bias=False),
                       nn.Identity() if i == 0 else _norm(norm, c), nn.LeakyReLU(0.2, inplace=True)]
            prev = c
        self.body = nn.Sequential(*layers)
        self.feature_channels = prev
        self.head = nn.Conv2d(prev, latent_dim, self.grid, 1, 0, bias=False)   # valid conv to 1x1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.size):
            raise ValueError(f"ConvEncoder: got {tuple(x.shape)}, expected "
                             f"(B, {self.in_channels}, {self.size[0]}, {self.size[1]})")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).flatten(1)


class ConvDecoder(nn.Module):
    """z (B, latent_dim) -> x (B, C, H, W) in [-1, 1]: the mirror of :class:`ConvEncoder`."""

    def __init__(self, size: tuple[int, int] = (160, 128), out_channels: int = 1,
                 latent_dim: int = 100, levels: int = 5, base: int = 64,
                 channel_max: int = 512, norm: Norm = "batch"):
        super().__init__()
        self.size, self.latent_dim = (int(size[0]), int(size[1])), latent_dim
        grid = check_size(self.size, levels)
        chans = level_channels(levels, base, channel_max)[::-1]
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, chans[0], grid, 1, 0, bias=False),
                                   _norm(norm, chans[0]), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), _norm(norm, c_out),
                       nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(chans[-1], out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"ConvDecoder: got {tuple(z.shape)}, expected (B, {self.latent_dim})")
        return self.body(z[:, :, None, None])
