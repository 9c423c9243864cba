"""Per-position multivariate Gaussians and Mahalanobis distances (PaDiM, Defard et al. 2021, §3.2).

At every position (i, j) of the feature grid PaDiM fits N(mu_ij, Sigma_ij) to the training
embeddings x^k_ij (k = 1..N):

    mu_ij    = (1/N) sum_k x^k_ij
    Sigma_ij = 1/(N-1) sum_k (x^k_ij - mu_ij)(x^k_ij - mu_ij)^T + eps I        (PaDiM Eq. 1)

and scores a test embedding by M(x_ij) = sqrt((x_ij - mu_ij)^T Sigma_ij^-1 (x_ij - mu_ij))
(PaDiM Eq. 2). The statistics are accumulated batch by batch in float64 with the pairwise
merge of Chan et al. (no sum-of-squares cancellation), chunked over positions.

Memory for P positions and d channels: the accumulator holds P x d x d float64 (8 bytes) and
the stored inverse covariances P x d x d float32 (4 bytes). At 160x128 input, the VGG16 block3
grid is 40x32, P = 1280: d = 100 → 51 MB stored (102 MB while fitting); d = 550 (the paper's
WideResNet setting) → 1.55 GB stored (3.1 GB while fitting).
"""
from __future__ import annotations

import torch

__all__ = ["GaussianAccumulator", "mahalanobis"]


class GaussianAccumulator:
    """Streaming per-position mean and scatter matrix of (n, P, d) batches.

    ``update(x)`` merges a batch; ``finalize(eps, shrinkage)`` returns (mean (P, d) float32,
    inverse covariance (P, d, d) float32).
    """

    def __init__(self, positions: int, dim: int, device: str | torch.device = "cpu",
                 chunk_positions: int = 256):
        self.n = 0
        self.mean = torch.zeros(positions, dim, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(positions, dim, dim, dtype=torch.float64, device=device)
        self.chunk = int(chunk_positions)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch x (n, P, d) of embeddings."""
        if x.ndim != 3 or tuple(x.shape[1:]) != tuple(self.mean.shape):
            raise ValueError(f"GaussianAccumulator.update expects (n, {self.mean.shape[0]}, "
                             f"{self.mean.shape[1]}), got {tuple(x.shape)}")
        nb = x.shape[0]
        if nb == 0:
            return
        na, n = self.n, self.n + nb
        for s in range(0, x.shape[1], self.chunk):
            xc = x[:, s:s + self.chunk].to(self.mean.device, torch.float64)   # (nb, p, d)
            mb = xc.mean(0)
            c = (xc - mb).permute(1, 2, 0)                                    # (p, d, nb)
            m2b = c @ c.transpose(1, 2)
            delta = mb - self.mean[s:s + self.chunk]
            self.m2[s:s + self.chunk] += m2b + delta[:, :, None] * delta[:, None, :] * (na * nb / n)
            self.mean[s:s + self.chunk] += delta * (nb / n)
        self.n = n

    @torch.no_grad()
    def finalize(self, eps: float = 0.01, shrinkage: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (P, d), Sigma^-1 (P, d, d)), both float32.

        Sigma = (1 - a) S + a (tr(S) / d) I + eps I with S the unbiased sample covariance
        (divided by max(N - 1, 1)) and a = ``shrinkage`` in [0, 1] (0: PaDiM as published).
        """
        if self.n == 0:
            raise ValueError("GaussianAccumulator.finalize: no data was added")
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage!r}")
        p, d = self.mean.shape
        eye = torch.eye(d, dtype=torch.float64, device=self.m2.device)
        inv = torch.empty(p, d, d, dtype=torch.float32, device=self.m2.device)
        for s in range(0, p, self.chunk):
            cov = self.m2[s:s + self.chunk] / max(self.n - 1, 1)
            if shrinkage > 0:
                tr = cov.diagonal(dim1=1, dim2=2).sum(-1) / d
                cov = (1 - shrinkage) * cov + shrinkage * tr[:, None, None] * eye
            cov = cov + eps * eye
            chol = torch.linalg.cholesky(cov)
            # batched cholesky_solve against I is several times faster than cholesky_inverse
            inv[s:s + self.chunk] = torch.cholesky_solve(eye.expand_as(cov).contiguous(),
                                                         chol).float()
        return self.mean.float(), inv


@torch.no_grad()
def mahalanobis(x: torch.Tensor, mean: torch.Tensor, inv_cov: torch.Tensor,
                chunk_positions: int = 256) -> torch.Tensor:
    """Mahalanobis distance (PaDiM Eq. 2) of x (B, P, d) to per-position Gaussians → (B, P).

    mean (P, d), inv_cov (P, d, d); batched as (P, B, d) @ (P, d, d) per position chunk.
    """
    if x.ndim != 3 or tuple(x.shape[1:]) != tuple(mean.shape):
        raise ValueError(f"mahalanobis expects x (B, {mean.shape[0]}, {mean.shape[1]}), got "
                         f"{tuple(x.shape)}")
    out = torch.empty(x.shape[0], x.shape[1], dtype=torch.float32, device=x.device)
    for s in range(0, x.shape[1], chunk_positions):
        delta = (x[:, s:s + chunk_positions].float() - mean[s:s + chunk_positions]).transpose(0, 1)
        y = torch.bmm(delta, inv_cov[s:s + chunk_positions])                 # (p, B, d)
        out[:, s:s + chunk_positions] = (y * delta).sum(-1).transpose(0, 1)
    return out.clamp_min_(0).sqrt_()
