"""The three networks of f-AnoGAN and the residuals both its encoder loss and its score use.

=====================  ================================================================
generator G            z (B, latent_dim) -> x (B, 1, H, W) in [-1, 1]; DCGAN decoder with
                       batch norm (the authors' generator normalises over the batch too)
critic D               x -> (B, 1) score; DCGAN encoder with layer norm, since a WGAN-GP
                       critic must not normalise over the batch (Gulrajani et al. 2017 §4);
                       ``D.features(x)`` (B, F, h, w) is f-AnoGAN's feature map f(x)
encoder E              x -> z (B, latent_dim), linear output (the authors' izi_f encoder,
                       ``Z_REG_TYPE = None``), batch norm as in their code
=====================  ================================================================

All three are :mod:`adbench.nn.convnets` networks at the slice's own size (160 x 128 ends on a
5 x 4 grid after 5 levels), never padded to a square. The authors' code uses residual blocks
at 64 x 64 (``wgangp_64x64.py``); the DCGAN blocks are shared with GANomaly and MemAE here.
"""
from __future__ import annotations

import torch
from torch import nn

from adbench.nn.convnets import ConvDecoder, ConvEncoder, check_size

__all__ = ["ENCODER_SEED_OFFSET", "LEVELS", "build_encoder", "build_gan", "izif_residuals",
           "network_config"]

#: stride-2 levels of every network: 160 x 128 -> 5 x 4 (the most 160 x 128 takes)
LEVELS = 5
#: E is built from seed + this, so its first convolution is not a copy of D's (same shape)
ENCODER_SEED_OFFSET = 1


def network_config(size: tuple[int, int], latent_dim: int, base: int, channel_max: int) -> dict:
    """Everything needed to rebuild G, D and E (saved as JSON beside their weights)."""
    check_size(size, LEVELS)
    return {"size": [int(size[0]), int(size[1])], "latent_dim": int(latent_dim),
            "levels": LEVELS, "base": int(base), "channel_max": int(channel_max)}


def _common(cfg: dict) -> dict:
    return {"size": tuple(cfg["size"]), "levels": int(cfg["levels"]), "base": int(cfg["base"]),
            "channel_max": int(cfg["channel_max"])}


def build_gan(cfg: dict, seed: int) -> tuple[ConvDecoder, ConvEncoder]:
    """(G, D) initialised from ``seed`` alone: module constructors draw from the global RNG,
    so it is forked and reseeded here and left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        G = ConvDecoder(out_channels=1, latent_dim=int(cfg["latent_dim"]), norm="batch",
                        **_common(cfg))
        D = ConvEncoder(in_channels=1, latent_dim=1, norm="layer", **_common(cfg))
    return G, D


def build_encoder(cfg: dict, seed: int) -> ConvEncoder:
    """E initialised from ``seed + ENCODER_SEED_OFFSET`` (global RNG left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) + ENCODER_SEED_OFFSET)
        return ConvEncoder(in_channels=1, latent_dim=int(cfg["latent_dim"]), norm="batch",
                           **_common(cfg))


def izif_residuals(G: nn.Module, D: ConvEncoder, E: nn.Module, x: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, 1, H, W) -> (G(E(x)) (B, 1, H, W), A_R (B,), A_D (B,)).

    A_R(x) = 1/n ||x - G(E(x))||^2 over the n pixels, A_D(x) = 1/n_d ||f(x) - f(G(E(x)))||^2
    over the n_d critic features (Schlegl et al. 2019, Eq. 7 and Eq. 8/9; the authors'
    ``MSE(..., axis=1)``). f(x) carries no gradient: D is frozen, x a constant.
    """
    rec = G(E(x))
    if rec.shape != x.shape:
        raise RuntimeError(f"f-AnoGAN: G(E(x)) has shape {tuple(rec.shape)}, expected "
                           f"{tuple(x.shape)}")
    with torch.no_grad():
        f_x = D.features(x)
    f_rec = D.features(rec)
    a_r = (x - rec).square().flatten(1).mean(dim=1)
    a_d = (f_x - f_rec).square().flatten(1).mean(dim=1)
    return rec, a_r, a_d
