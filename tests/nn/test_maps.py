"""Patch grid to anomaly map: the Gaussian smoothing against scipy."""
from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch

from adbench.nn.maps import gaussian_blur, grid_to_map


def test_gaussian_blur_matches_scipy_mirror():
    g = torch.Generator().manual_seed(6)
    m = torch.rand(2, 40, 36, generator=g, dtype=torch.float64)
    got = gaussian_blur(m, 4.0).numpy()
    ref = np.stack([scipy.ndimage.gaussian_filter(a, 4.0, mode="mirror", truncate=4.0)
                    for a in m.numpy()])
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    up = grid_to_map(torch.ones(1, 10, 8), (40, 32), sigma=4.0)
    torch.testing.assert_close(up, torch.ones(1, 40, 32))
