"""Retrieval (paper Eqs. 3-4 + fusion) and partial swap (Eq. 5) against hand-made codes and a
brute-force oracle built on sklearn's cosine similarity."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import cosine_similarity

from adbench.methods.scrps.retrieval import build_index, retrieve, swap


def _code(coarse, fine):
    """A (L=4, D=2) code: layers 0-1 are the coarse part, layers 2-3 the fine part."""
    return torch.tensor([coarse[:2], coarse[2:], fine[:2], fine[2:]], dtype=torch.float32)


def test_hand_made_two_stage_neighbours_and_weights():
    # Coarse parts: 0, 1, 2 point along e1 (cos 1, 0.8, 0.6 with the query), 3 is orthogonal.
    # Fine parts among the coarse top-3: code 2 matches the query fine part exactly (cos 1),
    # code 0 has cos 0.5, code 1 has cos 0; code 3 would be a perfect fine match but is
    # excluded by the coarse stage.
    q = _code([1, 0, 0, 0], [1, 0, 0, 0])
    repo = torch.stack([
        _code([2, 0, 0, 0], [0.5, np.sqrt(0.75), 0, 0]),
        _code([0.8, 0.6, 0, 0], [0, 1, 0, 0]),
        _code([0.6, 0.8, 0, 0], [3, 0, 0, 0]),
        _code([0, 0, 1, 0], [1, 0, 0, 0]),
    ])
    fused, idx, w, sims = retrieve(q[None], repo, k1=3, k2=2, l1=2, return_similarity=True)
    assert idx.tolist() == [[2, 0]]
    assert torch.allclose(sims, torch.tensor([[1.0, 0.5]]), atol=1e-6)
    assert torch.allclose(w, torch.tensor([[1 / 1.5, 0.5 / 1.5]]), atol=1e-6)
    expect = (1 / 1.5) * repo[2] + (0.5 / 1.5) * repo[0]
    assert torch.allclose(fused[0], expect, atol=1e-6)
    # One-stage on the whole code: code 3 (coarse orthogonal, fine perfect) has cos 0.5, code 2
    # has (0.6*1 + 3*1) / (||q|| ||s||) = 3.6 / (sqrt2 * sqrt10) ≈ 0.805.
    _, idx1, _ = retrieve(q[None], repo, k2=1, two_stage=False)
    assert idx1.tolist() == [[2]]


def _oracle(test, repo, k1, k2, l1, two_stage):
    """Brute force with sklearn: full (B, K) similarity matrices, no chunking."""
    t, r = test.numpy().astype(np.float64), repo.numpy().astype(np.float64)
    b = t.shape[0]
    out_idx, out_sim = [], []
    for i in range(b):
        if two_stage:
            sc = cosine_similarity(t[i:i + 1, :l1].reshape(1, -1), r[:, :l1].reshape(len(r), -1))[0]
            cand = np.argsort(-sc, kind="stable")[:k1]
            sf = cosine_similarity(t[i:i + 1, l1:].reshape(1, -1), r[cand, l1:].reshape(len(cand), -1))[0]
            order = np.argsort(-sf, kind="stable")[:k2]
            out_idx.append(cand[order])
            out_sim.append(sf[order])
        else:
            s = cosine_similarity(t[i:i + 1].reshape(1, -1), r.reshape(len(r), -1))[0]
            order = np.argsort(-s, kind="stable")[:k2]
            out_idx.append(order)
            out_sim.append(s[order])
    idx, sim = np.stack(out_idx), np.stack(out_sim)
    w = sim / sim.sum(1, keepdims=True)
    fused = np.einsum("bk,bkld->bld", w, r[idx])
    return idx, w, fused


@pytest.mark.parametrize("two_stage", [True, False])
@pytest.mark.parametrize("chunk", [7, 100000])
def test_matches_brute_force_oracle(two_stage, chunk):
    g = torch.Generator().manual_seed(0)
    # Codes near a common mean, as W+ codes are near w_avg: similarities positive and distinct.
    repo = torch.randn(203, 12, 16, generator=g) * 0.5 + 1.0
    test = torch.randn(5, 12, 16, generator=g) * 0.5 + 1.0
    fused, idx, w = retrieve(test, repo, k1=30, k2=6, l1=6, two_stage=two_stage, chunk=chunk)
    o_idx, o_w, o_fused = _oracle(test, repo, 30, 6, 6, two_stage)
    assert idx.tolist() == o_idx.tolist()
    np.testing.assert_allclose(w.numpy(), o_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.numpy(), o_fused, rtol=1e-5, atol=1e-5)
    assert torch.allclose(w.sum(1), torch.ones(5))


def test_prebuilt_index_is_equivalent_and_k_is_clipped():
    g = torch.Generator().manual_seed(1)
    repo = torch.randn(9, 12, 8, generator=g) + 2.0
    test = torch.randn(3, 12, 8, generator=g) + 2.0
    index = build_index(repo, 6, chunk=4)
    a = retrieve(test, index, k1=100, k2=20, l1=6, chunk=4)
    b = retrieve(test, repo, k1=100, k2=20, l1=6)
    assert a[1].shape == (3, 9)          # k1, k2 clipped to K = 9
    assert torch.equal(a[1], b[1])
    assert torch.allclose(a[0], b[0], atol=1e-6)
    # With K1 = K the coarse stage keeps everything, so two-stage = ranking on fine layers only.
    o_idx, _, _ = _oracle(test, repo, 9, 9, 6, True)
    assert a[1].tolist() == o_idx.tolist()


def test_retrieve_errors_name_the_parameter():
    repo = torch.randn(4, 12, 8)
    with pytest.raises(ValueError, match="l1=12"):
        retrieve(torch.randn(1, 12, 8), repo, l1=12)
    with pytest.raises(ValueError, match="same generator"):
        retrieve(torch.randn(1, 10, 8), repo)


@pytest.mark.parametrize("l2", range(0, 13))
def test_swap_keeps_exactly_the_intended_layers(l2):
    test = torch.arange(2 * 12 * 3, dtype=torch.float32).reshape(2, 12, 3)
    fused = -test - 1000
    out = swap(test, fused, l2)
    for layer in range(12):
        src = test if layer < l2 else fused
        assert torch.equal(out[:, layer], src[:, layer])


def test_swap_rejects_out_of_range():
    with pytest.raises(ValueError, match="l2=13"):
        swap(torch.zeros(1, 12, 2), torch.zeros(1, 12, 2), 13)
