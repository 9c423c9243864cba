"""adbench.training.losses against closed forms, hand-computed Jacobians and double backward."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adbench.training.losses import (
    d_logistic_loss,
    g_nonsaturating_loss,
    gradient_penalty,
    path_length_penalty,
    r1_penalty,
    wasserstein_losses,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_logistic_losses_closed_form_and_bce():
    zeros = torch.zeros(5, dtype=torch.float64)
    torch.testing.assert_close(d_logistic_loss(zeros, zeros), torch.tensor(2 * math.log(2), dtype=torch.float64))
    torch.testing.assert_close(g_nonsaturating_loss(zeros), torch.tensor(math.log(2), dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    real = torch.randn(7, generator=g, dtype=torch.float64) * 3
    fake = torch.randn(7, generator=g, dtype=torch.float64) * 3
    bce = F.binary_cross_entropy_with_logits
    want_d = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
    torch.testing.assert_close(d_logistic_loss(real, fake), want_d)
    torch.testing.assert_close(g_nonsaturating_loss(fake), bce(fake, torch.ones_like(fake)))
    # the means are over the batch: batches of different sizes are allowed
    torch.testing.assert_close(d_logistic_loss(real[:3], fake),
                               bce(real[:3], torch.ones(3, dtype=torch.float64)) + want_d
                               - bce(real, torch.ones_like(real)))
    # numerically stable at saturated logits: ~0 when D is right, ~|logit| when it is wrong,
    # finite gradients either way
    big = torch.full((3,), 100.0, requires_grad=True)
    assert float(d_logistic_loss(big, -big).detach()) < 1e-40
    torch.testing.assert_close(d_logistic_loss(-big, big), torch.tensor(200.0))
    loss = g_nonsaturating_loss(-big)
    torch.testing.assert_close(loss, torch.tensor(100.0))
    loss.backward()
    torch.testing.assert_close(big.grad, torch.full((3,), 1 / 3))


def test_wasserstein_losses_closed_form():
    real = torch.tensor([1.0, 2.0, 6.0])
    fake = torch.tensor([-1.0, 0.5])
    critic, gen = wasserstein_losses(real, fake)
    torch.testing.assert_close(critic, torch.tensor(-0.25 - 3.0))
    torch.testing.assert_close(gen, torch.tensor(0.25))


def _linear_critic(w: torch.Tensor):
    return lambda x: x.flatten(1) @ w


def test_gradient_penalty_on_linear_critic_is_constant_and_double_differentiable():
    g = torch.Generator().manual_seed(1)
    w = (torch.randn(2 * 3 * 4, generator=g, dtype=torch.float64) * 0.4).requires_grad_(True)
    real = torch.randn(5, 2, 3, 4, generator=g, dtype=torch.float64)
    fake = torch.randn(5, 2, 3, 4, generator=g, dtype=torch.float64)
    norm = w.detach().norm()
    want = ((norm - 1) ** 2).expand(5)
    for seed in (0, 1, 2):                 # whatever the interpolation weights
        gp = gradient_penalty(_linear_critic(w), real, fake, torch.Generator().manual_seed(seed))
        assert gp.shape == (5,)
        torch.testing.assert_close(gp, want)
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||, per sample (double backward through D)
    gp.sum().backward()
    torch.testing.assert_close(w.grad, 5 * 2 * (norm - 1) * w.detach() / norm)
    with pytest.raises(ValueError, match=r"real \(5, 2, 3, 4\) and fake \(4, 2, 3, 4\)"):
        gradient_penalty(_linear_critic(w), real, fake[:4])


def test_gradient_penalty_interpolates_with_the_given_generator():
    # quadratic critic D(x) = 0.5 sum(c x^2): grad = c * x_hat, x_hat = e real + (1 - e) fake
    g = torch.Generator().manual_seed(2)
    c = torch.rand(1, 3, 2, 2, generator=g, dtype=torch.float64) + 0.5
    real = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    fake = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    e = torch.rand(4, 1, 1, 1, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    x_hat = e * real + (1 - e) * fake
    want = ((c * x_hat).flatten(1).norm(dim=1) - 1) ** 2
    gp = gradient_penalty(lambda x: 0.5 * (c * x * x).sum(dim=[1, 2, 3]), real, fake,
                          torch.Generator().manual_seed(9))
    torch.testing.assert_close(gp, want)
    # real and fake are detached: the penalty trains the critic only, never the generator
    fake_leaf = fake.clone().requires_grad_(True)
    gradient_penalty(lambda x: 0.5 * (c * x * x).sum(dim=[1, 2, 3]), real, fake_leaf,
                     torch.Generator().manual_seed(9)).sum().backward()
    assert fake_leaf.grad is None


def test_r1_on_quadratic_critic_and_its_weight_gradient():
    # D(x) = 0.5 x^T Q x per sample: grad_x = S x with S = (Q + Q^T) / 2
    g = torch.Generator().manual_seed(3)
    n = 2 * 2 * 3
    Q = torch.randn(n, n, generator=g, dtype=torch.float64).requires_grad_(True)
    x = torch.randn(4, 2, 2, 3, generator=g, dtype=torch.float64)

    def D(img):
        v = img.flatten(1)
        return 0.5 * ((v @ Q) * v).sum(dim=1)

    r1 = r1_penalty(D, x)
    S = (Q.detach() + Q.detach().T) / 2
    v = x.flatten(1)
    Sx = v @ S                                      # (B, n), S symmetric
    assert r1.shape == (4,)
    torch.testing.assert_close(r1, Sx.square().sum(dim=1))
    # d/dQ sum_b ||S x_b||^2 = sum_b (S x_b) x_b^T + x_b (S x_b)^T
    r1.sum().backward()
    torch.testing.assert_close(Q.grad, Sx.T @ v + v.T @ Sx)
    # float32 inputs give a float32 penalty; x itself is not modified or made a leaf with grad
    x32 = x.float()
    Q32 = Q.detach().float()
    out = r1_penalty(lambda img: 0.5 * ((img.flatten(1) @ Q32) * img.flatten(1)).sum(1), x32)
    assert out.dtype == torch.float32 and not x32.requires_grad
    torch.testing.assert_close(out, r1.detach().float(), rtol=1e-4, atol=1e-4)


def _linear_synthesis(A: torch.Tensor, shape: tuple[int, int, int]):
    """ws (B, L, w) -> img (B, C, H, W) = A @ vec(ws): Jacobian A for every sample."""
    return lambda ws: (ws.flatten(1) @ A.T).view(ws.shape[0], *shape)


def test_path_length_penalty_on_linear_synthesis():
    B, L, wd, C, H, W = 3, 2, 4, 1, 4, 2
    g = torch.Generator().manual_seed(4)
    A = torch.randn(C * H * W, L * wd, generator=g).requires_grad_(True)
    ws = torch.randn(B, L, wd, generator=g)
    pl_mean = torch.tensor(0.7)
    decay = 0.25
    pen, new_mean = path_length_penalty(_linear_synthesis(A, (C, H, W)), ws, pl_mean,
                                        torch.Generator().manual_seed(11), decay)
    # by hand: y ~ N(0, I) / sqrt(HW) from the same seed, J^T y = A^T y per sample
    y = torch.randn((B, C, H, W), generator=torch.Generator().manual_seed(11)) / math.sqrt(H * W)
    grad = (y.flatten(1) @ A).view(B, L, wd)        # (B, L, w), differentiable in A
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
    want_mean = pl_mean + decay * (lengths.detach().mean() - pl_mean)
    torch.testing.assert_close(new_mean, want_mean)
    torch.testing.assert_close(pen, (lengths - want_mean).square())
    assert pl_mean.item() == torch.tensor(0.7).item()                   # the old mean is not modified in place
    # the running mean moves by ``decay``: 0 keeps it, 1 jumps to the batch mean
    keep = path_length_penalty(_linear_synthesis(A, (C, H, W)), ws, pl_mean,
                               torch.Generator().manual_seed(11), 0.0)[1]
    jump = path_length_penalty(_linear_synthesis(A, (C, H, W)), ws, pl_mean,
                               torch.Generator().manual_seed(11), 1.0)[1]
    torch.testing.assert_close(keep, pl_mean)
    torch.testing.assert_close(jump, lengths.detach().mean())
    # the penalty reaches the synthesis weights (double backward), as the hand formula does
    (gA,) = torch.autograd.grad(pen.sum(), A)
    (want_gA,) = torch.autograd.grad((lengths - want_mean).square().sum(), A)
    torch.testing.assert_close(gA, want_gA)


def test_path_length_penalty_keeps_the_graph_to_the_mapping():
    # ws = M z: with a linear synthesis the penalty does not depend on M, but with
    # img = A @ ws^2 (elementwise) it does, and its gradient must reach M
    g = torch.Generator().manual_seed(5)
    B, L, wd, H, W = 2, 1, 3, 2, 2
    M = torch.randn(wd, wd, generator=g).requires_grad_(True)
    A = torch.randn(H * W, L * wd, generator=g)
    z = torch.randn(B, L, wd, generator=g)
    ws = z @ M
    pen, _ = path_length_penalty(lambda w: ((w ** 2).flatten(1) @ A.T).view(B, 1, H, W), ws,
                                 torch.tensor(0.0), torch.Generator().manual_seed(0), 0.5)
    pen.sum().backward()
    assert M.grad is not None and bool(M.grad.abs().sum() > 0)
    # and against the hand formula: J^T y = 2 ws * (A^T y)
    y = torch.randn((B, 1, H, W), generator=torch.Generator().manual_seed(0)) / math.sqrt(H * W)
    M2 = M.detach().clone().requires_grad_(True)
    ws2 = z @ M2
    grad = 2 * ws2 * (y.flatten(1) @ A).view(B, L, wd)
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
    mean = 0.5 * lengths.detach().mean()
    ((lengths - mean).square().sum()).backward()
    torch.testing.assert_close(M.grad, M2.grad)
