"""Losses and regularisers shared by the GAN and autoencoder trainings.

=============================  =======================================================
:func:`d_logistic_loss`        non-saturating logistic D loss (Goodfellow et al. 2014)
:func:`g_nonsaturating_loss`   its generator side, softplus(-D(G(z)))
:func:`r1_penalty`             R1, ||grad_x D(x)||^2 on reals (Mescheder et al. 2018)
:func:`path_length_penalty`    StyleGAN2's path-length regulariser (Karras et al. 2020, Eq. 4)
:func:`gradient_penalty`       WGAN-GP, (||grad D(x_hat)||_2 - 1)^2 (Gulrajani et al. 2017)
:func:`wasserstein_losses`     WGAN critic and generator losses
=============================  =======================================================

Each returns per-sample values (B,) or a scalar mean as its docstring says; the caller
weights them (lazy regularisation multiplies by the interval).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .distributed import all_reduce_mean

__all__ = ["d_logistic_loss", "g_nonsaturating_loss", "r1_penalty", "path_length_penalty",
           "gradient_penalty", "wasserstein_losses"]

Critic = Callable[[torch.Tensor], torch.Tensor]


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """softplus(D(G(z))) + softplus(-D(x)), each a mean over the batch (scalar)."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """softplus(-D(G(z))), mean over the batch (scalar)."""
    return F.softplus(-fake_logits).mean()


def _input_grad(D: Critic, x: torch.Tensor) -> torch.Tensor:
    """d sum(D(x)) / dx with the graph kept, so a penalty on it trains D (double backward)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return grad if grad.dtype == torch.float64 else grad.float()


def r1_penalty(D: Critic, real: torch.Tensor) -> torch.Tensor:
    """R1 = ||grad_x D(x)||^2 per real image: real (B, C, H, W) -> (B,).

    ``D`` is the discriminator or any differentiable function of the image ending in it
    (StyleGAN2 training passes D after its early input blur, as StyleGAN3 does).
    """
    return _input_grad(D, real).square().sum(dim=[1, 2, 3])


def gradient_penalty(D: Critic, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: (||grad D(x_hat)||_2 - 1)^2 per sample (B,), x_hat = e x + (1 - e) x_fake,
    e ~ U(0, 1) per sample drawn from ``generator`` (Gulrajani et al. 2017, Alg. 1)."""
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake "
                         f"{tuple(fake.shape)} must have one shape")
    e = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device,
                   generator=generator, dtype=real.dtype)
    x_hat = e * real.detach() + (1 - e) * fake.detach()
    grad = _input_grad(D, x_hat)
    return (grad.flatten(1).norm(dim=1) - 1).square()


def wasserstein_losses(real_scores: torch.Tensor, fake_scores: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(critic loss E[D(G(z))] - E[D(x)], generator loss -E[D(G(z))]), scalars."""
    return fake_scores.mean() - real_scores.mean(), -fake_scores.mean()


def path_length_penalty(synthesis: Callable[[torch.Tensor], torch.Tensor], ws: torch.Tensor,
                        pl_mean: torch.Tensor, generator: torch.Generator | None, decay: float,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2 Eq. 4: (||J_w^T y||_2 - a)^2 per sample with y ~ N(0, I) / sqrt(HW).

    synthesis  ws (B, L, w_dim) -> images (B, C, H, W);
    pl_mean    the running mean a (scalar), updated with ``decay`` from the mean over the
               batch and over ranks.
    Returns (penalty (B,), new running mean).
    """
    if not ws.requires_grad:  # otherwise keep the graph so the penalty also reaches the mapping
        ws = ws.detach().requires_grad_(True)
    img = synthesis(ws)
    h, w = img.shape[2:]
    y = torch.randn(img.shape, device=img.device, generator=generator) / math.sqrt(h * w)
    (grad,) = torch.autograd.grad((img.float() * y).sum(), ws, create_graph=True)
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
    new_mean = pl_mean.lerp(all_reduce_mean(lengths.detach().mean()), decay)
    return (lengths - new_mean).square(), new_mean
