"""MemAE's networks at 160x128: encoder to a feature grid, memory, mirrored decoder.

=====================  ======================================================================
:class:`GridEncoder`   x (B, 1, H, W) -> z (B, C, H/2^L, W/2^L): :class:`ConvEncoder`'s levels,
                       without its vector head (MemAE reads the memory at every grid position)
:class:`GridDecoder`   ẑ (B, C, h, w) -> x̂ (B, 1, H, W) in [-1, 1], the encoder's mirror
:class:`MemAENet`      x -> (x̂, ŵ): decoder(memory(encoder(x))), Gong et al. 2019, Fig. 2
=====================  ======================================================================

The authors' 2D/3D code (``models/memae_3dconv.py``) downsamples 16x with four stride-2
convolutions to 256 channels (96, 128, 256, 256), BatchNorm + LeakyReLU(0.2) in both halves.
Here a level is the shared DCGAN block (4x4 stride-2 convolution, channels doubling from
``base`` up to ``channel_max``, no norm after the first level); the defaults, four levels up
to 256 channels, give the authors' 16x reduction and item length C = 256: a 10x8 grid of
256-channel vectors at 160x128. Convolutions start from N(0, 0.02), BatchNorm scales from
N(1, 0.02) (the authors' ``utils.weights_init``).
"""
from __future__ import annotations

import torch
from torch import nn

from adbench.nn.convnets import ConvEncoder, check_size, level_channels

from .memory import Addressing, MemoryModule

__all__ = ["GridDecoder", "GridEncoder", "MemAENet", "init_weights"]


class GridEncoder(ConvEncoder):
    """x (B, 1, H, W) -> features (B, C, h, w); ``forward`` is :meth:`ConvEncoder.features`."""

    def __init__(self, size: tuple[int, int] = (160, 128), in_channels: int = 1, levels: int = 4,
                 base: int = 64, channel_max: int = 256):
        super().__init__(size, in_channels, latent_dim=1, levels=levels, base=base,
                         channel_max=channel_max, norm="batch")
        del self.head                     # the vector head of ConvEncoder is not used

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class GridDecoder(nn.Module):
    """ẑ (B, C, h, w) -> x̂ (B, 1, H, W) in [-1, 1]: one 4x4 stride-2 transposed convolution
    per encoder level, BatchNorm + LeakyReLU(0.2) between them (authors' decoder), tanh out."""

    def __init__(self, size: tuple[int, int] = (160, 128), out_channels: int = 1,
                 levels: int = 4, base: int = 64, channel_max: int = 256):
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.grid = check_size(self.size, levels)
        chans = level_channels(levels, base, channel_max)[::-1]      # C, ..., base
        self.in_channels = chans[0]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(0.2, inplace=True)]
        # the last layer keeps a bias (authors' code), so the -1 background costs nothing
        layers += [nn.ConvTranspose2d(chans[-1], out_channels, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or tuple(z.shape[1:]) != (self.in_channels, *self.grid):
            raise ValueError(f"GridDecoder: got {tuple(z.shape)}, expected "
                             f"(B, {self.in_channels}, {self.grid[0]}, {self.grid[1]})")
        return self.body(z)


def init_weights(module: nn.Module) -> None:
    """Authors' ``utils.weights_init``: conv weights N(0, 0.02); BatchNorm N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class MemAENet(nn.Module):
    """x (B, 1, H, W) in [-1, 1] -> (x̂ (B, 1, H, W) in [-1, 1], ŵ (B, N, h, w))."""

    def __init__(self, size: tuple[int, int] = (160, 128),  # (H, W) of the slices
                 levels: int = 4,                            # stride-2 levels (grid = size / 2^levels)
                 base: int = 64,                             # channels after the first level
                 channel_max: int = 256,                     # cap, = item length C of the memory
                 memory_size: int = 2000,                    # N
                 shrink_threshold: float | None = None,      # λ (Eq. 7); None: 1/N
                 addressing: Addressing = "cosine"):         # Eq. 4 cosine, or the code's dot
        super().__init__()
        self._config = dict(size=[int(size[0]), int(size[1])], levels=int(levels),
                            base=int(base), channel_max=int(channel_max),
                            memory_size=int(memory_size), shrink_threshold=shrink_threshold,
                            addressing=addressing)
        self.encoder = GridEncoder(size, 1, levels, base, channel_max)
        self.memory = MemoryModule(memory_size, self.encoder.feature_channels, shrink_threshold,
                                   addressing)
        self.decoder = GridDecoder(size, 1, levels, base, channel_max)
        init_weights(self.encoder)
        init_weights(self.decoder)

    def config(self) -> dict:
        """The constructor arguments as JSON data: ``MemAENet(**net.config())`` rebuilds it."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z_hat, att = self.memory(self.encoder(x))
        return self.decoder(z_hat), att
