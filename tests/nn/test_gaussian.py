"""Per-position Gaussians and Mahalanobis distances (PaDiM §3.2) against numpy and scipy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from adbench.nn.gaussian import GaussianAccumulator, mahalanobis


def test_streaming_gaussian_matches_numpy_cov():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(23, 5, 4, generator=g, dtype=torch.float64) * 3 + 100  # offset: no cancellation
    acc = GaussianAccumulator(5, 4, chunk_positions=2)
    for part in (x[:7], x[7:8], x[8:]):
        acc.update(part)
    mean, inv = acc.finalize(eps=0.01)
    for p in range(5):
        cov = np.cov(x[:, p].numpy(), rowvar=False) + 0.01 * np.eye(4)
        np.testing.assert_allclose(mean[p].numpy(), x[:, p].mean(0).numpy(), rtol=1e-6)
        np.testing.assert_allclose(inv[p].numpy(), np.linalg.inv(cov), rtol=1e-4, atol=1e-6)
    _, inv_s = acc.finalize(eps=0.01, shrinkage=1.0)     # full shrinkage: scaled identity
    cov0 = np.cov(x[:, 0].numpy(), rowvar=False)
    np.testing.assert_allclose(inv_s[0].numpy(),
                               np.eye(4) / (np.trace(cov0) / 4 + 0.01), rtol=1e-5)



def test_mahalanobis_matches_scipy():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    inv = (a @ a.transpose(1, 2) + torch.eye(6, dtype=torch.float64)).float()
    mean = torch.randn(3, 6, generator=g)
    x = torch.randn(4, 3, 6, generator=g)
    got = mahalanobis(x, mean, inv, chunk_positions=2)
    for b in range(4):
        for p in range(3):
            ref = scipy_mahalanobis(x[b, p].double().numpy(), mean[p].double().numpy(),
                                    inv[p].double().numpy())
            assert got[b, p].item() == pytest.approx(ref, rel=1e-4)
