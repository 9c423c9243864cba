"""Greedy k-centre coreset and its random projection (PatchCore §3.2)."""
from __future__ import annotations

import torch

from adbench.nn.coreset import coreset_size, greedy_coreset, project, random_projection


def test_greedy_coreset_picks_known_farthest_points():
    g = torch.Generator().manual_seed(0)
    cluster = 0.01 * torch.randn(50, 6, generator=g)
    far = torch.zeros(4, 6)
    for i, r in enumerate((4.0, 10.0, 6.0, 8.0)):   # orthogonal directions, known radii
        far[i, i] = r
    x = torch.cat([cluster, far])
    sel = greedy_coreset(x, 5, start=0).tolist()
    # farthest first: radius 10, then 8, 6, 4 (orthogonal, so the set never covers the next)
    assert sel == [0, 51, 53, 52, 50]



def test_greedy_coreset_equals_naive_greedy_and_never_repeats():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 16, generator=g, dtype=torch.float64)
    k = 40
    naive = [7]
    d = ((x - x[7]) ** 2).sum(1)
    for _ in range(k - 1):
        i = int(torch.argmax(d))
        naive.append(i)
        d = torch.minimum(d, ((x - x[i]) ** 2).sum(1))
    assert greedy_coreset(x, k, start=7).tolist() == naive
    dup = torch.zeros(10, 3)
    dup[0, 0] = 1.0
    sel = greedy_coreset(dup, 6, start=0)
    assert len(set(sel.tolist())) == 6 and sel[1] != 0
    assert greedy_coreset(x, 500).tolist() == list(range(300))
    assert coreset_size(1000, 0.1) == 100 and coreset_size(5, 0.1) == 1



def test_random_projection_preserves_distances_roughly():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 1280, generator=g)
    p = project(x, random_projection(1280, 128, torch.Generator().manual_seed(3)), chunk_size=64)
    d0 = torch.pdist(x)
    d1 = torch.pdist(p)
    ratio = d1 / d0
    assert abs(float(ratio.mean()) - 1.0) < 0.05 and float(ratio.std()) < 0.1
