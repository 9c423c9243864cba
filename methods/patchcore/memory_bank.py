"""Memory bank construction for PatchCore with bounded memory (PatchCore §3.2).

The bank is the greedy coreset of all training patches. At OpenBHB scale (hundreds of
volumes x ~100 slices x 40x32 patches x 1280 channels) the full patch set would take
~100-200 GB, so the build streams:

pass 1  features are extracted batch by batch; the kept patches (see
        ``patch_features.keep_mask``) are JL-projected to ``projection_dim`` and appended to a
        pool of projected vectors with their (slice, position) ids. When the number of
        patches N exceeds ``max_pool``, each batch is first reduced to a share
        q = max_pool / N of its patches, so the pool never exceeds ~max_pool vectors:
        ``pool_reduction="random"`` (default) keeps a seeded uniform sample; "greedy" runs
        a per-batch greedy coreset (the composable "merge-reduce" form of k-center), which
        covers rare patches better but costs ~q·N sequential greedy steps — hours on a CPU
        at OpenBHB scale, so it is for GPUs.
select  one global greedy coreset on the pool picks M = min(ceil(ratio * N), max_bank, pool)
        patches, on the device.
pass 2  the full-dimensional vectors of the M chosen patches are gathered. While the kept
        full-dimensional pool fits in ``max_cache_bytes`` they are kept from pass 1;
        otherwise only the slices owning chosen patches are embedded again.

Peak host memory, whatever N:  max_pool * (4 d + 8)  +  max_cache_bytes  +  M * D * 4  +  one
batch of features. With the "paper" preset (max_pool 2*10^6, d 128, cache 1 GiB,
M <= 2*10^5, D 1280) that is 1.04 + 1.07 + 1.02 = 3.1 GB; with the defaults (max_pool
2*10^5, M <= 2*10^4) 0.1 + 1.07 + 0.1 GB (the cache then holds the whole pool, one pass).
"""
from __future__ import annotations

from typing import Callable

import torch

from adbench.data.sampling import index_batches
from adbench.nn.coreset import coreset_size, greedy_coreset, project, random_projection

__all__ = ["build_memory_bank"]


def _randint(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=generator).item())


@torch.no_grad()
def build_memory_bank(embed: Callable[[torch.Tensor], torch.Tensor], keep: torch.Tensor, *,
                      ratio: float, projection_dim: int | None, max_pool: int | None,
                      max_bank: int | None, batch_size: int, generator: torch.Generator,
                      device: str | torch.device = "cpu", max_cache_bytes: int = 1 << 30,
                      progress: bool = False, pool_reduction: str = "random",
                      ) -> tuple[torch.Tensor, dict]:
    """Greedy-coreset memory bank of the kept patches of N_s slices.

    embed      callable(slice indices (b,) int64) → patch features (b, D, h, w) on ``device``.
    keep       (N_s, h, w) bool: which patches of each slice are candidates.
    ratio      coreset fraction of the candidate count; max_bank caps it (None: no cap).
    projection_dim  JL dimension d for the distance computations (None: no projection).
    max_pool   bound on the pool of projected candidates (None: no bound).
    pool_reduction  "random" or "greedy": how a batch is reduced when the pool is bounded.
    returns    (bank (M, D) float32 on the CPU, rows ordered by (slice, position);
                info dict with n_patches, n_pool, n_bank, pool_reduced, pass2).
    """
    if pool_reduction not in ("random", "greedy"):
        raise ValueError(f"PatchCore pool_reduction={pool_reduction!r}: expected 'random' or 'greedy'")
    n_slices, h, w = keep.shape
    hw = h * w
    n_total = int(keep.sum())
    if n_total == 0:
        raise ValueError("PatchCore: no training patch is inside the brain (all brain masks empty?)")
    target = coreset_size(n_total, ratio)
    if max_bank is not None:
        target = min(target, int(max_bank))
    share = 1.0 if max_pool is None or n_total <= max_pool else max_pool / n_total
    pos = torch.arange(hw).view(h, w)

    proj = None
    pool_p, pool_ids, cache = [], [], []
    cache_bytes = 0
    batches = index_batches(n_slices, batch_size)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, total=-(-n_slices // batch_size), desc="PatchCore features")
    for idx in batches:
        kb = keep[idx]
        if not kb.any():
            continue
        f = embed(idx)
        if proj is None and projection_dim is not None and projection_dim < f.shape[1]:
            proj = random_projection(f.shape[1], int(projection_dim), generator, device)
        vec = f.permute(0, 2, 3, 1)[kb.to(f.device)]                    # (n_b, D)
        ids = (idx.view(-1, 1, 1) * hw + pos)[kb]                       # (n_b,)
        p = project(vec, proj)
        if share < 1.0:
            k = coreset_size(len(p), share)
            if pool_reduction == "greedy":
                sel = greedy_coreset(p, k, start=_randint(len(p), generator))
            else:
                sel = torch.randperm(len(p), generator=generator)[:k].sort().values.to(p.device)
            p, vec, ids = p[sel], vec[sel], ids[sel.cpu()]
        pool_p.append(p.cpu())
        pool_ids.append(ids)
        if cache is not None and cache_bytes + vec.numel() * 4 <= max_cache_bytes:
            cache.append(vec.float().cpu())
            cache_bytes += vec.numel() * 4
        else:
            cache = None  # over budget: the chosen vectors are gathered in a second pass

    pool = torch.cat(pool_p)
    ids = torch.cat(pool_ids)
    del pool_p, pool_ids
    m = min(target, len(pool))
    sel = greedy_coreset(pool.to(device), m, start=_randint(len(pool), generator)).cpu()
    del pool
    order = torch.argsort(ids[sel])
    sel = sel[order]
    chosen = ids[sel]                                                   # sorted ids
    info = {"n_patches": n_total, "n_pool": int(len(ids)), "n_bank": int(m),
            "pool_reduced": share < 1.0, "pass2": cache is None}
    if cache is not None:
        return torch.cat(cache)[sel].contiguous(), info

    bank = None
    slices = torch.unique(chosen // hw)
    for b in index_batches(len(slices), batch_size):
        sb = slices[b]
        lo = int(torch.searchsorted(chosen, sb[0] * hw))
        hi = int(torch.searchsorted(chosen, (sb[-1] + 1) * hw))
        cid = chosen[lo:hi]
        f = embed(sb).flatten(2)                                        # (b, D, hw)
        if bank is None:
            bank = torch.empty(m, f.shape[1], dtype=torch.float32)
        local = torch.searchsorted(sb, cid // hw).to(f.device)
        bank[lo:hi] = f[local, :, (cid % hw).to(f.device)].float().cpu()
    return bank, info
