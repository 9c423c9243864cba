"""zscore on cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from adbench import NotFittedError, SliceSet
from adbench.methods.zscore.detector import ZScore


def _slices(images: torch.Tensor) -> SliceSet:
    n, _, h, w = images.shape
    return SliceSet(images=images, brain=torch.ones(n, h, w, dtype=torch.bool),
                    lesion=torch.zeros(n, h, w, dtype=torch.bool), subjects=["a"] * n, z=np.arange(n))


def test_known_mean_and_std():
    # two training slices per position: values m-d and m+d → mean m, sample std d*sqrt(2)
    m = torch.linspace(-0.5, 0.5, 12).reshape(1, 1, 3, 4)
    d = torch.full_like(m, 0.1)
    det = ZScore(eps=0.0).fit(_slices(torch.cat([m - d, m + d])))
    torch.testing.assert_close(det.mean_, m[0, 0])
    torch.testing.assert_close(det.std_, (d * 2 ** 0.5)[0, 0])
    x = m + 0.3
    expected = (0.3 / (0.1 * 2 ** 0.5)) * torch.ones(1, 3, 4)
    torch.testing.assert_close(det.predict(x).maps, expected)


def test_background_scores_zero_and_state_round_trip():
    rng = torch.Generator().manual_seed(0)
    train = torch.rand(6, 1, 8, 8, generator=rng) * 2 - 1
    det = ZScore().fit(_slices(train))
    x = torch.rand(2, 1, 8, 8, generator=rng) * 2 - 1
    x[:, :, :2] = -1.0
    maps = det.predict(x).maps
    assert (maps[:, :2] == 0).all()
    clone = ZScore().load_state_dict(det.state_dict())
    assert torch.equal(clone.predict(x).maps, maps)


def test_not_fitted_and_shape_errors():
    with pytest.raises(NotFittedError, match="fit"):
        ZScore().predict(torch.zeros(1, 1, 4, 4))
    det = ZScore().fit(_slices(torch.zeros(2, 1, 4, 4)))
    with pytest.raises(ValueError, match="4x4"):
        det.predict(torch.zeros(1, 1, 5, 5))
