"""Approximate greedy coreset subsampling (PatchCore, Roth et al. CVPR 2022, §3.2, Alg. 1).

The minimax facility-location coreset is approximated by the greedy k-center rule

    m_i = argmax_{m in M \\ M_C} min_{n in M_C} || psi(m) - psi(n) ||_2          (PatchCore Eq. 4)

where psi is a Johnson-Lindenstrauss random projection (:func:`random_projection`) that makes
each distance cheaper while preserving the geometry up to a small distortion.

Cost: k iterations, each one fused row-vector x (d+1, N) product over the N projected points
(O(N d)), so O(N k d) time and O(N d) memory; no N x N matrix is ever formed. The points are
kept transposed because a row vector times a (d, N) matrix streams memory contiguously
(about 3x faster on CPU than (N, d) @ (d,)). The loop never synchronises with the host, so on
a GPU it is bound by memory bandwidth only.
"""
from __future__ import annotations

import math

import torch

__all__ = ["coreset_size", "random_projection", "project", "greedy_coreset"]


def coreset_size(n: int, ratio: float) -> int:
    """ceil(ratio * n), at least 1 when n > 0."""
    if not 0 < ratio <= 1:
        raise ValueError(f"coreset ratio must be in (0, 1], got {ratio!r}")
    return 0 if n == 0 else max(1, math.ceil(ratio * n))


def random_projection(in_dim: int, out_dim: int, generator: torch.Generator,
                      device: str | torch.device = "cpu") -> torch.Tensor:
    """(in_dim, out_dim) Gaussian JL matrix with entries N(0, 1/out_dim).

    E||x R||^2 = ||x||^2, so projected distances estimate the original ones. Drawn on the CPU
    from ``generator`` (the same matrix on every device), then moved to ``device``.
    """
    r = torch.randn(in_dim, out_dim, generator=generator, dtype=torch.float32)
    return r.div_(math.sqrt(out_dim)).to(device)


def project(x: torch.Tensor, matrix: torch.Tensor | None, chunk_size: int = 65536) -> torch.Tensor:
    """x (N, D) @ matrix (D, d) in row chunks of ``chunk_size`` → (N, d) float32.

    ``matrix=None`` returns ``x`` as float32 (no projection).
    """
    if matrix is None:
        return x.float()
    out = torch.empty(x.shape[0], matrix.shape[1], dtype=torch.float32, device=matrix.device)
    for s in range(0, x.shape[0], chunk_size):
        out[s:s + chunk_size] = x[s:s + chunk_size].to(matrix.device, torch.float32) @ matrix
    return out


@torch.no_grad()
def greedy_coreset(x: torch.Tensor, k: int, *, start: int = 0) -> torch.Tensor:
    """Indices of k points of ``x`` (N, d) picked by greedy farthest-point selection.

    start    index of the first point (PatchCore draws it at random; pass a seeded draw).
    returns  (k,) int64 on x's device, in selection order; all distinct. k >= N returns
             every index 0..N-1.

    Each step adds the point whose distance to the already selected set is largest
    (ties → lowest index) and updates every point's distance to the set with one fused
    ``|x|^2 - 2 x.c + |c|^2`` pass. Distances are squared Euclidean (argmax is unchanged).
    """
    if x.ndim != 2:
        raise ValueError(f"greedy_coreset expects (N, d) points, got {tuple(x.shape)}")
    n = x.shape[0]
    if k >= n:
        return torch.arange(n, device=x.device)
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=x.device)
    if not 0 <= start < n:
        raise ValueError(f"greedy_coreset: start index {start} outside 0..{n - 1}")
    d = x.shape[1]
    # Augmented (d+1, N) matrix [x^T; 1]: with c' = [-2c; |c|^2], one addmm on |x|^2 gives
    # |x - c|^2 for every point. Three full passes per step (addmm, minimum, argmax): on a
    # loaded CPU each pass is a parallel region that may wait for a time slice, so fewer wins.
    xt = torch.ones(d + 1, n, dtype=torch.float32, device=x.device)
    xt[:d] = x.float().t()
    sq = xt[:d].pow(2).sum(0, keepdim=True)              # (1, N)
    min_d = torch.full((n,), float("inf"), device=x.device)
    selected = torch.empty(k, dtype=torch.long, device=x.device)
    idx = torch.tensor(start, device=x.device)
    buf = torch.empty(1, n, device=x.device)
    for i in range(k):
        selected[i] = idx
        c = xt[:d].index_select(1, idx.view(1))          # (d, 1)
        cp = torch.cat([c * -2.0, c.pow(2).sum(0, keepdim=True)]).t()   # (1, d+1)
        torch.addmm(sq, cp, xt, out=buf)
        torch.minimum(min_d, buf[0], out=min_d)
        # a selected point can never be chosen again, even among exact duplicates
        min_d.index_fill_(0, idx.view(1), -1.0)
        idx = torch.argmax(min_d)
    return selected
