"""GANomaly's losses (paper §3, Eq. 1-4) and its anomaly score (Eq. 5), as the authors' code
computes them (``lib/model.py``, ``lib/loss.py``: every norm is a mean over elements).

===========================  ==========================================================
:func:`generator_losses`     L_adv, L_con, L_enc and L = w_adv L_adv + w_con L_con + w_enc L_enc
:func:`discriminator_loss`   binary cross-entropy, real vs fake, halved (``backward_d``)
:func:`latent_score`         A(x) = mean_k (G_E(x)_k - E(G(x))_k)^2, per slice (B,)
===========================  ==========================================================
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["generator_losses", "discriminator_loss", "latent_score"]


def generator_losses(feat_real: torch.Tensor, feat_fake: torch.Tensor, x: torch.Tensor,
                     x_hat: torch.Tensor, z: torch.Tensor, z_hat: torch.Tensor, *,
                     w_adv: float, w_con: float, w_enc: float) -> dict[str, torch.Tensor]:
    """Scalars ``adv``, ``con``, ``enc`` and their weighted sum ``total``.

    adv  Eq. 1, feature matching: mean (f(x) - f(x̂))^2 over D's features (B, F, h, w)
    con  Eq. 2, contextual: mean |x - x̂| over the pixels (B, 1, H, W)
    enc  Eq. 3, encoder: mean (G_E(x) - E(x̂))^2 over the latents (B, nz)
    total  Eq. 4 with the authors' weights w_adv = 1, w_con = 50, w_enc = 1
    """
    for name, a, b in (("features", feat_real, feat_fake), ("images", x, x_hat),
                       ("latents", z, z_hat)):
        if a.shape != b.shape:
            raise ValueError(f"GANomaly generator loss: {name} of shapes {tuple(a.shape)} and "
                             f"{tuple(b.shape)} differ")
    adv = (feat_real.float() - feat_fake.float()).square().mean()
    con = (x.float() - x_hat.float()).abs().mean()
    enc = (z.float() - z_hat.float()).square().mean()
    return {"adv": adv, "con": con, "enc": enc,
            "total": w_adv * adv + w_con * con + w_enc * enc}


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """(BCE(D(x), 1) + BCE(D(x̂), 0)) / 2 on logits (B,): the authors' sigmoid + ``BCELoss``,
    computed stably. Scalar."""
    real = F.binary_cross_entropy_with_logits(real_logits.float(), torch.ones_like(real_logits.float()))
    fake = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits.float()))
    return (real + fake) * 0.5


def latent_score(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """Eq. 5 as the authors' ``test()`` computes it: mean over the nz latent dimensions of
    (G_E(x) - E(G(x)))^2, z and ẑ (B, nz) -> (B,). The paper's Eq. 5 is printed with an L1
    norm; the code squares. The code also rescales the scores of a test set to [0, 1], which
    changes no ranking and is left out (scores of different slices stay comparable)."""
    return (z.float() - z_hat.float()).square().mean(dim=1)
