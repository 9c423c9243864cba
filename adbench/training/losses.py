"""Losses and regularisers shared by the GAN and autoencoder trainings.

=============================  =======================================================
:func:`d_logistic_loss`        non-saturating logistic D loss (Goodfellow et al. 2014)
:func:`g_nonsaturating_loss`   its generator side, softplus(-D(G(z)))
:func:`r1_penalty`             R1, ||grad_x D(x)||^2 on reals (Mescheder et al. 2018)
:func:`path_length_penalty`    StyleGAN2's path-length regulariser (Karras et al. 2020, Eq. 4)
:func:`gradient_penalty`       WGAN-GP, (||grad D(x_hat)||_2 - 1)^2 (Gulrajani et al. 2017)
:func:`wasserstein_losses`     WGAN critic and generator losses
:func:`ssim`                   structural similarity per sample (Wang et al. 2004)
:func:`focal_loss`             -(1 - p_t)^gamma log p_t over classes (Lin et al. 2017)
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
           "gradient_penalty", "wasserstein_losses", "ssim", "focal_loss"]

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


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 2.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM per sample (B,) of x, y (B, C, H, W) (Wang et al. 2004, Eq. 13):
    ((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)), local
    statistics under a ``window`` x ``window`` Gaussian (``sigma``) with zero padding (as
    DRÆM's code), C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = ``data_range`` (2 for [-1, 1])."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim: x {tuple(x.shape)} and y {tuple(y.shape)} must be one (B, C, H, W)")
    c = x.shape[1]
    w = _gaussian_window(window, sigma, x.device, x.dtype).expand(c, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, padding=window // 2, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x.square()
    syy = blur(y * y) - mu_y.square()
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x.square() + mu_y.square() + c1)
                                                     * (sxx + syy + c2))
    return s.flatten(1).mean(dim=1)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017, Eq. 4 without alpha, as DRÆM uses it), mean over pixels:
    logits (B, K, H, W) class scores, target (B, H, W) integer classes in [0, K); p_t is the
    softmax probability of the target class. gamma = 0 gives the cross-entropy. Scalar."""
    if logits.ndim != 4 or tuple(target.shape) != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"focal_loss: logits {tuple(logits.shape)} must be (B, K, H, W) and "
                         f"target {tuple(target.shape)} (B, H, W)")
    log_pt = F.log_softmax(logits.float(), dim=1).gather(1, target.long()[:, None])[:, 0]
    return (-(1 - log_pt.exp()).pow(gamma) * log_pt).mean()
