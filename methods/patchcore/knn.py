"""Exact nearest-neighbour distance of query patches to the memory bank (PatchCore Eq. 6).

s*(p) = min_{m in M} || p - m ||_2 for every test patch p. Computed in tiles of
(query chunk) x (bank chunk) so memory stays bounded by ``max_elements`` floats whatever
the bank size; each tile is one GEMM (|q|^2 - 2 q.m + |m|^2) that finds the nearest row, whose
distance is then recomputed directly (exact even for near-duplicates). With ``backend="faiss"`` an
exact ``faiss.IndexFlatL2`` search is used instead (only when faiss is installed).
"""
from __future__ import annotations

import torch

__all__ = ["nearest_distances", "KNN_BACKENDS"]

KNN_BACKENDS = ("torch", "faiss", "auto")


def _faiss():
    try:
        import faiss  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return faiss


@torch.no_grad()
def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, *, backend: str = "torch",
                      max_elements: int = 1 << 24) -> torch.Tensor:
    """Euclidean distance of each query (Q, D) to its nearest bank row (M, D) → (Q,) float32.

    backend       "torch" (tiled GEMM on the queries' device), "faiss" (exact flat L2 index,
                  CPU; error when faiss is not installed) or "auto" (faiss when importable).
    max_elements  upper bound on the size of one distance tile (default 16M floats = 64 MB).
    """
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"nearest_distances expects queries (Q, D) and bank (M, D) with the same "
                         f"D, got {tuple(queries.shape)} and {tuple(bank.shape)}")
    if bank.shape[0] == 0:
        raise ValueError("nearest_distances: the memory bank is empty")
    if backend not in KNN_BACKENDS:
        raise ValueError(f"knn backend {backend!r} is not one of {KNN_BACKENDS}")
    faiss = _faiss() if backend in ("faiss", "auto") else None
    if backend == "faiss" and faiss is None:
        raise ImportError("knn backend 'faiss' was asked for but faiss is not installed: "
                          "`pip install faiss-cpu` (or faiss-gpu), or use knn='torch'")
    if faiss is not None:
        index = faiss.IndexFlatL2(bank.shape[1])
        index.add(bank.detach().float().cpu().contiguous().numpy())
        d2, _ = index.search(queries.detach().float().cpu().contiguous().numpy(), 1)
        return torch.from_numpy(d2[:, 0]).clamp_min_(0).sqrt_().to(queries.device)

    q = queries.float()
    m = bank.to(q.device, torch.float32)
    m_sq = m.pow(2).sum(1)
    nq, nm = q.shape[0], m.shape[0]
    bank_chunk = max(1, min(nm, max_elements // max(1, min(nq, 4096))))
    query_chunk = max(1, min(nq, max_elements // bank_chunk))
    out = torch.empty(nq, dtype=torch.float32, device=q.device)
    for qs in range(0, nq, query_chunk):
        qc = q[qs:qs + query_chunk]
        best = torch.full((qc.shape[0],), float("inf"), device=q.device)
        arg = torch.zeros(qc.shape[0], dtype=torch.long, device=q.device)
        for ms in range(0, nm, bank_chunk):
            # |q|^2 is constant per row, so it is left out of the argmin
            d2 = torch.addmm(m_sq[None, ms:ms + bank_chunk], qc, m[ms:ms + bank_chunk].t(),
                             beta=1.0, alpha=-2.0)
            val, ind = d2.min(1)
            better = val < best
            best = torch.where(better, val, best)
            arg = torch.where(better, ind + ms, arg)
        # The GEMM form cancels catastrophically for near-identical vectors (an exact match
        # would score ~1e-2, not 0): recompute the winner's distance directly.
        out[qs:qs + query_chunk] = (qc - m[arg]).norm(dim=1)
    return out
