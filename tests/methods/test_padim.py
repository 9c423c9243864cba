"""PaDiM: streaming Gaussians, Mahalanobis maps against scipy, state and localisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ellipses import H, W, healthy_slices, with_blob
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from adbench import Context
from adbench.methods.padim.detector import PaDiM


@pytest.fixture(scope="module")
def fitted():
    train = healthy_slices(8, seed=0)
    det = PaDiM(weights="random", batch_size=3, n_features=20)
    det.fit(train, Context(seed=5))
    return det, train


def test_padim_map_agrees_with_scipy_mahalanobis_oracle(fitted):
    """Independent path: features from the extractor, np.cov per position, scipy distance."""
    from adbench.nn.backbones import FeatureExtractor

    det, train = fitted
    ext = FeatureExtractor(weights="random", seed=5)
    idx = det.channel_index_
    expected = torch.randperm(1280, generator=torch.Generator().manual_seed(5))[:20].sort().values
    assert torch.equal(idx, expected)          # drawn once at fit from ctx.generator(0)
    with torch.no_grad():
        tr = ext.aligned(train.images)[:, idx].double().numpy()       # (N, d, h, w)
        x = healthy_slices(2, seed=3).images
        te = ext.aligned(x)[:, idx].double().numpy()
    grid = det.distance_grid(x, Context())
    assert grid.shape == (2, *tr.shape[-2:])
    rng = np.random.default_rng(0)
    for _ in range(6):
        i, j = rng.integers(tr.shape[2]), rng.integers(tr.shape[3])
        cov = np.cov(tr[:, :, i, j], rowvar=False) + 0.01 * np.eye(20)
        vi = np.linalg.inv(cov)
        for b in range(2):
            ref = scipy_mahalanobis(te[b, :, i, j], tr[:, :, i, j].mean(0), vi)
            assert grid[b, i, j].item() == pytest.approx(ref, rel=2e-3, abs=1e-3)


def test_padim_finds_a_bright_blob(fitted):
    det, _ = fitted
    x, blob = with_blob(healthy_slices(2, seed=1).images)
    pred = det.predict(x)
    assert pred.maps.shape == (2, H, W)
    assert blob.view(-1)[int(pred.maps[0].argmax())], "map maximum is outside the blob"
    assert pred.extras["score"][0] > pred.extras["score"][1]
    assert det.weights_info_["source"] == "random"


def test_padim_state_round_trip_gives_identical_maps(fitted, tmp_path):
    from adbench.io import load_tensors, save_tensors

    det, _ = fitted
    x = healthy_slices(2, seed=2).images
    save_tensors(tmp_path / "state.pt", det.state_dict())
    det2 = PaDiM(**det.get_params()).load_state_dict(load_tensors(tmp_path / "state.pt"))
    torch.testing.assert_close(det2.predict(x).maps, det.predict(x).maps, rtol=0, atol=0)
    assert torch.equal(det2.channel_index_, det.channel_index_)


def test_padim_rejects_bad_n_features_and_is_registered():
    train = healthy_slices(2, seed=0)
    with pytest.raises(ValueError, match="n_features=5000"):
        PaDiM(weights="random", n_features=5000).fit(train)
    from adbench.plugins import get_registry

    spec = get_registry().method("padim")
    assert spec.kind == "feature" and {"smoke", "default", "paper"} <= set(spec.presets)
    assert set(spec.default_config) == set(PaDiM._param_names())


# -- a timm backbone ----------------------------------------------------------------------
TIMM = {"backbone": "timm/resnet18", "layers": ("layer2", "layer3"), "batch_size": 3,
        "n_features": 20}


@pytest.fixture(scope="module")
def timm_fitted():
    pytest.importorskip("timm")
    train = healthy_slices(6, seed=0)
    return PaDiM(weights="random", **TIMM).fit(train, Context(seed=4))


def test_padim_on_a_timm_backbone_fits_predicts_and_round_trips(timm_fitted, tmp_path):
    from adbench.io import load_tensors, save_tensors, tensor_json

    det = timm_fitted
    x, _ = with_blob(healthy_slices(2, seed=1).images)
    pred = det.predict(x)
    assert pred.maps.shape == (2, H, W) and torch.isfinite(pred.maps).all()
    assert det.grid_ == (8, 8) and det.mean_.shape == (64, 20)       # layer2 of 64x64: 8x8
    assert int(det.channel_index_.max()) < 128 + 256
    assert det.weights_info_ == {"backbone": "timm/resnet18", "source": "random", "path": None,
                                 "sha256": None, "seed": 4}
    state = det.state_dict()
    assert tensor_json(state["extractor.backbone"]) == "timm/resnet18"
    save_tensors(tmp_path / "state.pt", state)
    det2 = PaDiM(**det.get_params()).load_state_dict(load_tensors(tmp_path / "state.pt"))
    torch.testing.assert_close(det2.predict(x).maps, pred.maps, rtol=0, atol=0)
    with pytest.raises(ValueError, match="fitted with backbone 'timm/resnet18'.*'resnet18'"):
        PaDiM(**{**det.get_params(), "backbone": "resnet18"}).load_state_dict(state)


def test_padim_timm_weights_file_gives_the_random_runs_maps(timm_fitted, tmp_path):
    import timm

    with torch.random.fork_rng(devices=[]):   # the random run's weights: seed = ctx.seed
        torch.manual_seed(4)
        torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    det = PaDiM(weights=str(tmp_path / "r18.pth"), **TIMM).fit(healthy_slices(6, seed=0),
                                                               Context(seed=4))
    assert det.weights_info_["source"] == "path"
    x = healthy_slices(2, seed=2).images
    torch.testing.assert_close(det.predict(x).maps, timm_fitted.predict(x).maps, rtol=0, atol=0)
