"""DRÆM's two sub-networks (Zavrtanik, Kristan and Skočaj, ICCV 2021, Sec. 3.1-3.2; code
github.com/VitjanZ/DRAEM ``model_unet.py``), single channel.

===========================  ================================================================
:class:`ReconstructiveNet`   encoder-decoder without skips: 5 levels of two conv3x3-BN-ReLU
                             (w, 2w, 4w, 8w, 8w channels, 4 max-pools), decoder of bilinear
                             x2 up-sampling + conv3x3-BN-ReLU and two conv3x3-BN-ReLU per level
                             (8w, 4w, 2w, w, w channels);
                             (B, 1, H, W) -> (B, 1, H, W). Base width w = 128 in the original.
:class:`DiscriminativeNet`   U-Net: 6 encoder levels (w, 2w, 4w, 8w, 8w, 8w, 5 max-pools),
                             decoder (8w, 4w, 2w, w, w) with skip concatenations of the
                             encoder's levels; (B, 2, H, W) = concat(x_rec,
                             x_aug) -> (B, 2, H, W) logits (channel 1: anomaly). w = 64.
===========================  ================================================================

H and W must be divisible by 32 (the discriminative network's 5 poolings): 160 x 128 -> 5 x 4.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["DIVISOR", "DiscriminativeNet", "ReconstructiveNet", "check_size"]

DIVISOR = 32


def check_size(size: tuple[int, int]) -> None:
    """Raise ValueError unless both sides are positive multiples of 32."""
    if len(size) != 2 or any(int(s) < DIVISOR or int(s) % DIVISOR for s in size):
        raise ValueError(f"DRÆM: slice size {tuple(size)}: expected H and W divisible by "
                         f"{DIVISOR} (e.g. 160 x 128), for the discriminative U-Net's 5 poolings")


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _double(cin: int, cout: int) -> nn.Sequential:
    """Two conv3x3-BN-ReLU, the block of every level of both networks."""
    return nn.Sequential(*_conv(cin, cout), *_conv(cout, cout))


def _up(cin: int, cout: int) -> nn.Sequential:
    """Bilinear x2 up-sampling then conv3x3-BN-ReLU (the original's ``up`` blocks)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                         *_conv(cin, cout))


class ReconstructiveNet(nn.Module):
    """x_aug (B, 1, H, W) -> x_rec (B, 1, H, W), linear output (trained towards [-1, 1])."""

    def __init__(self, width: int = 128,   # base channels w (original: 128)
                 in_channels: int = 1,     # single-channel MRI (original: 3, RGB)
                 out_channels: int = 1):
        super().__init__()
        w = int(width)
        chans = [w, 2 * w, 4 * w, 8 * w, 8 * w]
        self.encoder = nn.ModuleList([_double(in_channels, chans[0])] +
                                     [_double(chans[i - 1], chans[i]) for i in range(1, 5)])
        self.pool = nn.MaxPool2d(2)
        # decoder level j: up-sample + conv (c_j -> c_j), then conv (c_j -> c_j) and conv
        # (c_j -> c_j / 2), c = 8w, 4w, 2w, w (the last keeps w), as the original's
        ins, outs = [8 * w, 4 * w, 2 * w, w], [4 * w, 2 * w, w, w]
        self.ups = nn.ModuleList([_up(c, c) for c in ins])
        self.decoder = nn.ModuleList([nn.Sequential(*_conv(c, c), *_conv(c, o))
                                      for c, o in zip(ins, outs)])
        self.out = nn.Conv2d(w, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size(tuple(x.shape[2:]))
        h = x
        for i, block in enumerate(self.encoder):
            h = block(h if i == 0 else self.pool(h))
        for up, block in zip(self.ups, self.decoder):
            h = block(up(h))
        return self.out(h)


class DiscriminativeNet(nn.Module):
    """concat(x_rec, x_aug) (B, 2, H, W) -> logits (B, 2, H, W); softmax channel 1 is the
    anomaly probability, the DRÆM map."""

    def __init__(self, width: int = 64,    # base channels w (original: 64)
                 in_channels: int = 2,     # reconstruction and augmented slice (original: 6)
                 out_channels: int = 2):   # normal / anomalous
        super().__init__()
        w = int(width)
        chans = [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w]
        self.encoder = nn.ModuleList([_double(in_channels, chans[0])] +
                                     [_double(chans[i - 1], chans[i]) for i in range(1, 6)])
        self.pool = nn.MaxPool2d(2)
        # decoder level j: up-sample + conv to o_j, concat the encoder's level (5 - j)
        # output (skip_j channels), two convs to o_j; o = 8w, 4w, 2w, w, w as the original's
        prev, outs, skips = [8 * w, 8 * w, 4 * w, 2 * w, w], [8 * w, 4 * w, 2 * w, w, w], chans[4::-1]
        self.ups = nn.ModuleList([_up(p, o) for p, o in zip(prev, outs)])
        self.decoder = nn.ModuleList([nn.Sequential(*_conv(o + k, o), *_conv(o, o))
                                      for o, k in zip(outs, skips)])
        self.out = nn.Conv2d(w, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size(tuple(x.shape[2:]))
        skips = []
        h = x
        for i, block in enumerate(self.encoder):
            h = block(h if i == 0 else self.pool(h))
            skips.append(h)
        for up, block, skip in zip(self.ups, self.decoder, reversed(skips[:-1])):
            h = block(torch.cat([up(h), skip], dim=1))
        return self.out(h)
