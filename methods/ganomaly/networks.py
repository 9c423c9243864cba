"""The networks of GANomaly: an encoder-decoder-encoder generator and a discriminator.

=====================  ===================================================================
generator G            x (B, 1, H, W) -> (x̂ (B, 1, H, W) in [-1, 1], z (B, nz), ẑ (B, nz))
  G_E ``encoder``      x -> z, DCGAN encoder (the authors' ``NetG.encoder1``)
  G_D ``decoder``      z -> x̂, DCGAN decoder with tanh output (``NetG.decoder``)
  E   ``encoder2``     x̂ -> ẑ, a second DCGAN encoder of the same shape (``NetG.encoder2``)
discriminator D        x -> logit (B,) and features f(x) (B, F, h, w): a DCGAN encoder with
                       one output (``NetD``: its ``features`` are every layer but the last
                       convolution, the feature-matching layer of L_adv)
=====================  ===================================================================

Every network is an :mod:`adbench.nn.convnets` network at the slice's own size: five
stride-2 levels take 160 x 128 to a 5 x 4 grid, which one 5 x 4 "valid" convolution maps to
the latent vector, as the authors' final 4 x 4 convolution does at their square sizes; no
padding to 256 x 256. Channels double per level from ``ngf``/``ndf`` (64) up to
``channel_max``; the authors' pyramid doubles without a cap (64 ... 1024 over five levels).
Batch norm everywhere but after the first convolution, as in the authors' ``Encoder`` and
``Decoder``; weights initialised by :func:`dcgan_init_` (the authors' ``weights_init``).
"""
from __future__ import annotations

import torch
from torch import nn

from adbench.nn.convnets import ConvDecoder, ConvEncoder, check_size

__all__ = ["LEVELS", "network_config", "GANomalyGenerator", "build_generator",
           "build_discriminator", "discriminate", "dcgan_init_"]

#: stride-2 levels of every network: 160 x 128 -> 5 x 4 (the most 160 x 128 takes)
LEVELS = 5


def network_config(size: tuple[int, int], nz: int, ngf: int, ndf: int, channel_max: int) -> dict:
    """Everything needed to rebuild G and D (saved as JSON beside their weights)."""
    check_size(size, LEVELS)
    return {"size": [int(size[0]), int(size[1])], "nz": int(nz), "ngf": int(ngf),
            "ndf": int(ndf), "channel_max": int(channel_max), "levels": LEVELS}


@torch.no_grad()
def dcgan_init_(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """The authors' ``weights_init`` in place: every (transposed) convolution's weight
    ~ N(0, 0.02), every batch norm's weight ~ N(1, 0.02) and bias 0 (running statistics are
    kept, as theirs are). Draws come from ``generator`` (None: the global RNG, which the
    builders below fork and seed)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.weight.normal_(0.0, 0.02, generator=generator)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.normal_(1.0, 0.02, generator=generator)
            m.bias.zero_()
    return module


def _common(cfg: dict) -> dict:
    return dict(size=tuple(cfg["size"]), levels=int(cfg["levels"]),
                channel_max=int(cfg["channel_max"]), norm="batch")


class GANomalyGenerator(nn.Module):
    """G = (G_E, G_D, E) of paper Fig. 2: x -> z = G_E(x) -> x̂ = G_D(z) -> ẑ = E(x̂)."""

    def __init__(self, cfg: dict):                      # a :func:`network_config`
        super().__init__()
        self.cfg = dict(cfg)
        nz, ngf = int(cfg["nz"]), int(cfg["ngf"])
        self.encoder = ConvEncoder(in_channels=1, latent_dim=nz, base=ngf, **_common(cfg))
        self.decoder = ConvDecoder(out_channels=1, latent_dim=nz, base=ngf, **_common(cfg))
        self.encoder2 = ConvEncoder(in_channels=1, latent_dim=nz, base=ngf, **_common(cfg))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, 1, H, W) -> (x̂ (B, 1, H, W), z (B, nz), ẑ (B, nz))."""
        z = self.encoder(x)
        x_hat = self.decoder(z)
        if x_hat.shape != x.shape:
            raise RuntimeError(f"GANomaly: G_D(G_E(x)) has shape {tuple(x_hat.shape)}, "
                               f"expected {tuple(x.shape)}")
        return x_hat, z, self.encoder2(x_hat)


def build_generator(cfg: dict, seed: int) -> GANomalyGenerator:
    """G initialised from ``seed`` alone: module constructors and :func:`dcgan_init_` draw from
    the global RNG, so it is forked and reseeded here and left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return dcgan_init_(GANomalyGenerator(cfg))


def build_discriminator(cfg: dict, seed: int) -> ConvEncoder:
    """D (one logit, ``ndf`` channels after the first level) from ``seed`` (global RNG left as
    it was). The caller passes a seed other than G's, so D's first convolution is not a copy
    of G_E's (same shape at ngf = ndf)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return dcgan_init_(ConvEncoder(in_channels=1, latent_dim=1, base=int(cfg["ndf"]),
                                       **_common(cfg)))


def discriminate(D: ConvEncoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, 1, H, W) -> (logit (B,), features f(x) (B, F, h, w)) in one pass (``NetD.forward``
    without its sigmoid: the loss takes logits)."""
    feats = D.features(x)
    return D.head(feats).flatten(), feats
