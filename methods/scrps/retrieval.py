"""Coarse-to-fine latent code retrieval, fusion and partial swap (paper §2.2, Eqs. 3-5).

Shapes: test codes ``s_t`` are (B, L, D) and the repository ``M`` is (K, L, D), with L = 12
W+ layers and D = 512 for the paper's 160x128 StyleGAN2. Every similarity is the cosine
similarity of *flattened* layer ranges, as the paper compares ``s[0:L1-1]`` and
``s[L1:L-1]`` as whole vectors.

The repository side is processed in chunks of ``chunk`` codes with a running top-k, so a
repository of 10^6 codes (24 GB in float32) never needs a (B, K) similarity matrix or a
normalised copy of itself on the device: the per-code inverse norms are computed once
(:class:`LatentIndex`) and applied to the raw dot products.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LatentIndex", "build_index", "retrieve", "swap"]

_EPS = 1e-12


@dataclass
class LatentIndex:
    """A repository prepared for retrieval: codes plus per-code inverse norms.

    codes      (K, L, D) the repository M (any device; chunks are moved to the query's).
    l1         the coarse/fine layer split the norms were computed for.
    inv_coarse (K,) 1 / ||M_k[0:L1]||;  inv_fine (K,) 1 / ||M_k[L1:L]||;
    inv_full   (K,) 1 / ||M_k|| (one-stage retrieval).
    """

    codes: torch.Tensor
    l1: int
    inv_coarse: torch.Tensor
    inv_fine: torch.Tensor
    inv_full: torch.Tensor


def build_index(repo: torch.Tensor, l1: int = 6, *, chunk: int = 65536) -> LatentIndex:
    """Normalise once: inverse norms of every repository code's coarse, fine and full parts."""
    _check_codes("repo", repo)
    n_layers = repo.shape[1]
    if not 0 < l1 < n_layers:
        raise ValueError(f"retrieval: l1={l1} must satisfy 0 < l1 < L={n_layers} so both the "
                         f"coarse layers [0, l1) and the fine layers [l1, L) are non-empty")
    sq_c, sq_f = [], []
    for start in range(0, repo.shape[0], chunk):
        part = repo[start:start + chunk].float()
        sq = part.pow(2).sum(dim=2)                     # (k, L) squared norm per layer
        sq_c.append(sq[:, :l1].sum(1))
        sq_f.append(sq[:, l1:].sum(1))
    c, f = torch.cat(sq_c), torch.cat(sq_f)
    return LatentIndex(codes=repo, l1=int(l1), inv_coarse=c.clamp_min(_EPS).rsqrt(),
                       inv_fine=f.clamp_min(_EPS).rsqrt(), inv_full=(c + f).clamp_min(_EPS).rsqrt())


def _check_codes(name: str, t: torch.Tensor) -> None:
    if t.ndim != 3:
        raise ValueError(f"retrieval: {name} must be (N, L, D) latent codes, got shape {tuple(t.shape)}")


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(_EPS)


def _topk_scan(query: torch.Tensor, repo: torch.Tensor, layers: slice, inv_norm: torch.Tensor,
               k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine similarity of unit ``query`` (B, F) against ``repo[:, layers]`` flattened.

    Returns (similarities (B, k) descending, repository indices (B, k))."""
    b = query.shape[0]
    best_s = query.new_full((b, 0), float("-inf"))
    best_i = torch.empty((b, 0), dtype=torch.long, device=query.device)
    for start in range(0, repo.shape[0], chunk):
        part = repo[start:start + chunk, layers].to(query.device, torch.float32).flatten(1)
        sims = (query @ part.T) * inv_norm[start:start + chunk].to(query.device)
        idx = torch.arange(start, start + part.shape[0], device=query.device).expand(b, -1)
        cand_s = torch.cat([best_s, sims], dim=1)
        cand_i = torch.cat([best_i, idx], dim=1)
        kk = min(k, cand_s.shape[1])
        best_s, pos = cand_s.topk(kk, dim=1)
        best_i = cand_i.gather(1, pos)
    return best_s, best_i


def retrieve(test_codes: torch.Tensor, repo: torch.Tensor | LatentIndex, *, k1: int = 100,
             k2: int = 20, l1: int = 6, two_stage: bool = True, chunk: int = 65536,
             return_similarity: bool = False):
    """Retrieve the K2 repository codes most similar to each test code and fuse them.

    Two-stage (paper Eqs. 3-4): cosine similarity on the flattened coarse layers [0, l1)
    keeps the top ``k1`` candidates P; cosine similarity on the fine layers [l1, L) keeps the
    top ``k2`` of P (P'). One-stage (ablation §3.3): top ``k2`` on the whole flattened code.

    Fusion: ŝ = Σ_i w_i s_i with w_i = sim_i / Σ_j sim_j, where sim is the similarity of the
    final stage (fine layers for two-stage, whole code for one-stage). The weights are taken
    literally from the paper; for a row whose similarity sum is not positive (possible only
    for codes pointing away from the whole repository) the weights fall back to uniform.

    ``k1`` and ``k2`` are clipped to the repository size K (and k2 to k1), so small
    repositories work with the paper's defaults; the output widths show the effective K2.

    Args:
        test_codes: (B, L, D) inverted test codes s_t.
        repo: (K, L, D) repository M, or a :class:`LatentIndex` built from it.
    Returns:
        fused (B, L, D) float32 ŝ, indices (B, K2) into the repository (most similar first),
        weights (B, K2) summing to 1; with ``return_similarity`` also the final-stage
        similarities (B, K2).
    """
    _check_codes("test_codes", test_codes)
    if isinstance(repo, LatentIndex):
        index = repo
    else:
        _check_codes("repo", repo)
        # One-stage retrieval ignores l1; any valid split gives the same full-code norms.
        split = l1 if (two_stage or 0 < l1 < repo.shape[1]) else 1
        index = build_index(repo, split, chunk=chunk)
    codes = index.codes
    if tuple(codes.shape[1:]) != tuple(test_codes.shape[1:]):
        raise ValueError(f"retrieval: test codes have layers x dims {tuple(test_codes.shape[1:])} but "
                         f"the repository has {tuple(codes.shape[1:])}; both must come from the "
                         f"same generator")
    if k1 < 1 or k2 < 1:
        raise ValueError(f"retrieval: k1={k1} and k2={k2} must be >= 1")
    n_repo = codes.shape[0]
    if n_repo == 0:
        raise ValueError("retrieval: the repository is empty")
    k1_eff = min(k1, n_repo)
    k2_eff = min(k2, k1_eff) if two_stage else min(k2, n_repo)
    t = test_codes.float()
    dev = t.device

    if two_stage:
        if isinstance(repo, LatentIndex) and repo.l1 != l1:
            raise ValueError(f"retrieval: the LatentIndex was built for l1={repo.l1}, called with l1={l1}")
        q_coarse = _normalise(t[:, :l1].flatten(1))
        _, cand = _topk_scan(q_coarse, codes, slice(0, l1), index.inv_coarse, k1_eff, chunk)
        # Fine stage only touches the K1 candidates: gather them (B, K1, (L-l1)*D).
        fine = codes[cand.to(codes.device)][:, :, l1:]
        fine = fine.to(dev, torch.float32).flatten(2)
        q_fine = _normalise(t[:, l1:].flatten(1))
        sims_all = torch.einsum("bf,bkf->bk", q_fine, fine) * index.inv_fine.to(dev)[cand]
        sims, pos = sims_all.topk(k2_eff, dim=1)
        indices = cand.gather(1, pos)
    else:
        q_full = _normalise(t.flatten(1))
        sims, indices = _topk_scan(q_full, codes, slice(None), index.inv_full, k2_eff, chunk)

    total = sims.sum(dim=1, keepdim=True)
    uniform = torch.full_like(sims, 1.0 / sims.shape[1])
    weights = torch.where(total > 0, sims / total.clamp_min(_EPS), uniform)
    chosen = codes[indices.to(codes.device)].to(dev, torch.float32)
    fused = torch.einsum("bk,bkld->bld", weights, chosen)
    if return_similarity:
        return fused, indices, weights, sims
    return fused, indices, weights


def swap(test_codes: torch.Tensor, fused: torch.Tensor, l2: int) -> torch.Tensor:
    """Partial latent code swap, paper Eq. 5: s̃ = s_t[0:L2] ⊕ ŝ[L2:L].

    Layers [0, l2) come from the test code and layers [l2, L) from the fused code.
    Interpretation of the endpoints (§3.3 "L2 = 0 means not using latent code swap"):
    ``l2 = 0`` takes the whole code from ŝ, i.e. the retrieved normal code is used as it is
    with no partial swap keeping anything of the test code; ``l2 = L`` returns the test code
    (plain inversion, no retrieval effect).

    test_codes, fused: (B, L, D). Returns (B, L, D).
    """
    if test_codes.shape != fused.shape:
        raise ValueError(f"swap: test codes {tuple(test_codes.shape)} and fused codes "
                         f"{tuple(fused.shape)} must have the same shape")
    n_layers = test_codes.shape[1]
    if not 0 <= l2 <= n_layers:
        raise ValueError(f"swap: l2={l2} must be in [0, L={n_layers}]")
    return torch.cat([test_codes[:, :l2], fused[:, l2:].to(test_codes.dtype)], dim=1)
