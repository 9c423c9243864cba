"""Optimisation-based W+ inversion of a frozen StyleGAN2 generator (paper §2.1, Eqs. 1-2).

    s(X) = argmin_s  L_percept(X, G(s, b)) + λ_mse / N · ||X - G(s, b)||²₂        (Eq. 1)

with the noise b fixed to zero (``noise_mode="none"``), s ∈ W+ of shape (L, 512) started at
the generator's mean w, Adam with learning rate 0.01 for 2,000 steps and λ_mse = 10 (§3.1).
The repository codes and the test codes go through this one function, so they come from the
identical procedure.

Batching: one parameter tensor (B, L, D) holds the codes of a whole batch, and the per-sample
losses are *summed*. The gradient of the sum with respect to sample i's code is the gradient
of sample i's own loss (the generator and VGG16 treat samples independently: no batch
statistics), and Adam's update is element-wise, so every sample follows exactly the
trajectory it would follow alone; only the floating-point reduction order differs.
(A mean would scale every gradient by 1/B, which Adam mostly normalises away but not through
its epsilon.)

Start: the mean w (the paper), or given codes ``init`` (N, L, D), e.g. an encoder's
(:mod:`.encoder`); the same start must be used for the repository and the test slices.

Stopping rule (``tol > 0``, off in the paper): after ``t >= window`` steps a sample stops when
its loss improved by less than ``tol`` relative over the last ``window`` steps,

    ℓ_{t-window} - ℓ_t  <=  tol · |ℓ_{t-window}|,

and keeps the code whose loss is ℓ_t. Its rows are masked out of every later update (the
value is restored after each Adam step, so it stays exactly), and its decision depends on its
own losses only: batching still never changes a result. The number of updates each sample
received is returned with ``return_steps``; the loop ends when every sample has stopped.
"""
from __future__ import annotations

import contextlib
import time

import torch

__all__ = ["invert", "step_stats", "PRECISIONS"]

PRECISIONS = ("fp32", "bf16")


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _sample_losses(G, loss_fn, ws: torch.Tensor, target: torch.Tensor, feats: list | None,
                   mse_weight: float, perceptual_weight: float = 1.0) -> torch.Tensor:
    """Per-sample Eq. 1 loss (B,) for codes ``ws`` (B, L, D) against ``target`` (B, 1, H, W).

    ``loss_fn`` None drops the perceptual term (MSE-only inversion, a cheap CPU setting)."""
    img = G.synthesis(ws, noise_mode="none")
    mse = (img.float() - target).pow(2).flatten(1).mean(dim=1)     # (1/N)||X - X̄||²
    if loss_fn is None:
        return mse_weight * mse
    return perceptual_weight * loss_fn.from_features(img, feats).float() + mse_weight * mse


def invert(G, images: torch.Tensor, loss_fn, *, steps: int = 2000, lr: float = 0.01,
           mse_weight: float = 10.0, perceptual_weight: float = 1.0,
           batch_size: int | None = None, init_std: float = 0.0,
           generator: torch.Generator | None = None, precision: str = "fp32",
           compile: bool = False, progress: bool = False, return_losses: bool = False,
           init: torch.Tensor | None = None, tol: float = 0.0, window: int = 50,
           return_steps: bool = False):
    """Invert ``images`` into W+ codes of the frozen generator ``G``.

    Args:
        G: a StyleGAN2 ``Generator`` (``G.synthesis(ws, noise_mode)``, ``G.mapping.w_avg``,
            ``G.num_ws``, ``G.w_dim``). Frozen in place: eval mode, requires_grad False.
        images: (N, 1, H, W) targets in [-1, 1] (moved to G's device).
        loss_fn: a ``PerceptualLoss`` (``features(y) -> list``,
            ``from_features(x, feats) -> (B,)``), the Eq. 2 term; frozen in place. None: no
            perceptual term (MSE only; not the paper's setting, for quick CPU runs).
        steps, lr, mse_weight: Adam steps, learning rate and λ_mse of Eq. 1.
        perceptual_weight: factor of L_percept in Eq. 1 (the paper: 1).
        batch_size: images optimised together (None: all N at once).
        init_std: standard deviation of Gaussian noise added to the mean-w start (0: the
            paper's deterministic start at w_avg); drawn from ``generator``.
        precision: "fp32" or "bf16" (autocast of generator and VGG16 forward passes).
        compile: ``torch.compile`` the loss (forward and backward); the Adam step stays eager.
        progress: tqdm bar per batch with image-steps per second.
        return_losses: also return the per-sample losses before every step, (steps, N)
            (a stopped sample repeats its final loss).
        init: start codes (N, L, D) (e.g. an encoder's); None: the mean w (the paper).
        tol, window: the stopping rule (module docstring); tol 0: every sample runs ``steps``.
        return_steps: also return the updates each sample received, (N,) int64.
    Returns:
        codes (N, L, D) float32 on G's device, then the losses when ``return_losses`` and the
        step counts when ``return_steps`` (a tuple when either is asked for).
    """
    if images.ndim != 4 or images.shape[1] != G.img_channels:
        raise ValueError(f"invert: images must be (N, {G.img_channels}, H, W), got {tuple(images.shape)}")
    if tuple(images.shape[2:]) != tuple(G.img_resolution):
        raise ValueError(f"invert: images are {tuple(images.shape[2:])} but the generator makes "
                         f"{tuple(G.img_resolution)} images")
    if precision not in PRECISIONS:
        raise ValueError(f"invert: precision={precision!r}, expected one of {PRECISIONS}")
    if steps < 0:
        raise ValueError(f"invert: steps={steps} must be >= 0")
    if tol < 0 or int(window) < 1:
        raise ValueError(f"invert: tol={tol} must be >= 0 and window={window} >= 1 (stopping rule)")
    if init is not None and tuple(init.shape) != (images.shape[0], G.num_ws, G.w_dim):
        raise ValueError(f"invert: init must be (N, num_ws, w_dim) = "
                         f"{(images.shape[0], G.num_ws, G.w_dim)}, got {tuple(init.shape)}")
    G.eval().requires_grad_(False)
    if loss_fn is not None:
        loss_fn.eval().requires_grad_(False)
    device = G.mapping.w_avg.device
    n = images.shape[0]
    bs = n if batch_size is None else int(batch_size)
    if bs < 1:
        raise ValueError(f"invert: batch_size={batch_size} must be >= 1")
    loss_of = torch.compile(_sample_losses) if compile else _sample_losses

    codes, losses, counts = [], [], []
    for start in range(0, n, bs):
        target = images[start:start + bs].to(device, torch.float32)
        w0 = None if init is None else init[start:start + bs].to(device, torch.float32)
        c, lh, k = _invert_batch(G, target, loss_fn, loss_of, steps=steps, lr=lr,
                                 mse_weight=mse_weight, perceptual_weight=perceptual_weight,
                                 init_std=init_std, generator=generator, precision=precision,
                                 progress=progress, desc=f"inversion {start + len(target)}/{n}",
                                 w0=w0, tol=float(tol), window=int(window))
        codes.append(c)
        losses.append(lh)
        counts.append(k)
    out = torch.cat(codes) if codes else torch.empty(0, G.num_ws, G.w_dim, device=device)
    extra = []
    if return_losses:
        extra.append(torch.cat(losses, dim=1) if losses else torch.empty(steps, 0))
    if return_steps:
        extra.append(torch.cat(counts) if counts else torch.empty(0, dtype=torch.long))
    return (out, *extra) if extra else out


@torch.enable_grad()      # an optimisation: works under a caller's no_grad as well
def _invert_batch(G, target, loss_fn, loss_of, *, steps, lr, mse_weight, perceptual_weight,
                  init_std, generator, precision, progress, desc, w0=None, tol=0.0, window=50):
    device = target.device
    b = target.shape[0]
    feats = None
    if loss_fn is not None:
        with torch.no_grad(), _autocast(device, precision):
            feats = loss_fn.features(target)      # target features once, not per step
    start = (G.mapping.w_avg.detach().float()[None, None].expand(b, G.num_ws, G.w_dim).clone()
             if w0 is None else w0.detach().float().clone())
    if init_std > 0:
        noise = torch.randn(start.shape, generator=generator, device="cpu" if generator is None
                            else generator.device)
        start = start + init_std * noise.to(device)
    ws = torch.nn.Parameter(start)
    # fused: one kernel per step on CUDA (same element-wise update as the default).
    opt = torch.optim.Adam([ws], lr=lr, betas=(0.9, 0.999), fused=device.type == "cuda")
    history: list[torch.Tensor] = []   # kept on the device: no host sync per step

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=desc, unit="step", leave=False)
    stopping = tol > 0
    active = torch.ones(b, dtype=torch.bool, device=device)
    counts = torch.zeros(b, dtype=torch.long, device=device)
    t0 = time.perf_counter()
    for step in range(steps):
        with _autocast(device, precision):
            per_sample = loss_of(G, loss_fn, ws, target, feats, mse_weight, perceptual_weight)
        history.append(per_sample.detach().float())
        if stopping and step >= window:
            # ℓ_t against ℓ_{t-window}; a stopped sample never restarts
            before, now = history[step - window], history[step]
            active &= (before - now) > tol * before.abs()     # a zero loss stops too
            if not bool(active.any()):      # one host sync per step, only with the rule on
                break
        opt.zero_grad(set_to_none=True)
        # Sum, not mean: each sample's gradient is that of its own loss (module docstring).
        per_sample.sum().backward()
        if stopping:
            keep = ws.detach().clone()
            opt.step()
            with torch.no_grad():           # stopped rows keep their values exactly
                ws.copy_(torch.where(active[:, None, None], ws, keep))
        else:
            opt.step()
        counts += active.long()
        if bar is not None:
            bar.update(1)
            if step % 10 == 0 or step == steps - 1:
                rate = b * (step + 1) / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{history[-1].mean().item():.4f}", img_steps_per_s=f"{rate:.1f}")
    if bar is not None:
        bar.close()
    if history and len(history) < steps:      # all stopped: repeat the final losses
        history += [history[-1]] * (steps - len(history))
    hist = torch.stack(history).cpu() if history else torch.empty(0, b)
    return ws.detach().float(), hist, counts.cpu()


def step_stats(counts: torch.Tensor | None) -> dict | None:
    """Summary of per-sample update counts (N,): {"n", "mean", "min", "max"}; None for none
    (e.g. every repository chunk was resumed from disk, so no count is known)."""
    if counts is None or counts.numel() == 0:
        return None
    c = counts.double()
    return {"n": int(c.numel()), "mean": float(c.mean()), "min": int(c.min()), "max": int(c.max())}
