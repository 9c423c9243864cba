"""PatchCore: coreset, kNN, smoothing and the detector against independent truth."""
from __future__ import annotations

import pytest
import torch
from ellipses import H, W, healthy_slices, with_blob

from adbench import Context
from adbench.methods.patchcore.detector import PatchCore
from adbench.methods.patchcore.knn import nearest_distances
from adbench.methods.patchcore.memory_bank import build_memory_bank
from adbench.methods.patchcore.patch_features import keep_mask, locally_aware
from adbench.nn.coreset import coreset_size

# -- coreset ------------------------------------------------------------------------------


# -- kNN, maps, features ------------------------------------------------------------------
def test_nearest_distances_agree_with_cdist():
    g = torch.Generator().manual_seed(4)
    q = torch.randn(333, 40, generator=g) * 3
    bank = torch.randn(1001, 40, generator=g) * 3
    bank[17] = q[5]                                  # an exact match has distance 0
    ref = torch.cdist(q.double(), bank.double(),
                      compute_mode="donot_use_mm_for_euclid_dist").min(1).values.float()
    got = nearest_distances(q, bank, max_elements=20000)   # forces many tiles
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert float(got[5]) == 0.0
    with pytest.raises(ValueError, match="same"):
        nearest_distances(q, bank[:, :3])


def test_faiss_backend_matches_torch_when_installed():
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(5)
    q, bank = torch.randn(50, 8, generator=g), torch.randn(200, 8, generator=g)
    torch.testing.assert_close(nearest_distances(q, bank, backend="faiss"),
                               nearest_distances(q, bank), rtol=1e-4, atol=1e-4)


def test_locally_aware_features_average_neighbourhoods_and_align():
    g = torch.Generator().manual_seed(7)
    f1 = torch.randn(2, 3, 8, 6, generator=g)
    f2 = torch.randn(2, 5, 4, 3, generator=g)
    out = locally_aware([f1, f2], neighbourhood=3)
    assert out.shape == (2, 8, 8, 6)
    torch.testing.assert_close(out[:, :3, 4, 2], f1[:, :, 3:6, 1:4].mean((-1, -2)))
    torch.testing.assert_close(out[:, :3, 0, 0], f1[:, :, :2, :2].mean((-1, -2)))  # pad excluded
    assert locally_aware([f1, f2], embed_dim=4).shape == (2, 4, 8, 6)


def test_keep_mask_dilates_brain_cells():
    brain = torch.zeros(1, 32, 32, dtype=torch.bool)
    brain[0, 12:16, 12:16] = True                    # exactly grid cell (3, 3) at stride 4
    k0 = keep_mask(brain, (8, 8), 0)
    assert k0.sum() == 1 and k0[0, 3, 3]
    assert keep_mask(brain, (8, 8), 1).sum() == 9
    assert keep_mask(brain, (8, 8), None).all()


def test_memory_bank_rows_are_chosen_features_and_both_passes_agree():
    g = torch.Generator().manual_seed(8)
    feats = torch.randn(10, 12, 4, 5, generator=g)
    keep = torch.rand(10, 4, 5, generator=g) > 0.3

    def embed(idx):
        return feats[idx]

    kw = dict(ratio=0.25, projection_dim=6, max_pool=None, max_bank=None, batch_size=3)
    b1, i1 = build_memory_bank(embed, keep, generator=torch.Generator().manual_seed(0), **kw)
    b2, i2 = build_memory_bank(embed, keep, generator=torch.Generator().manual_seed(0),
                               max_cache_bytes=0, **kw)
    assert not i1["pass2"] and i2["pass2"]
    torch.testing.assert_close(b1, b2, rtol=0, atol=0)
    n = int(keep.sum())
    assert b1.shape == (coreset_size(n, 0.25), 12)
    candidates = feats.permute(0, 2, 3, 1)[keep]
    # every bank row is one of the kept training patches
    exact = torch.cdist(b1, candidates, compute_mode="donot_use_mm_for_euclid_dist")
    assert exact.min(1).values.max() == 0
    for reduction in ("random", "greedy"):
        b3, i3 = build_memory_bank(embed, keep, generator=torch.Generator().manual_seed(0),
                                   ratio=0.5, projection_dim=None, max_pool=40, max_bank=10,
                                   batch_size=3, pool_reduction=reduction)
        assert i3["pool_reduced"] and i3["n_pool"] <= 40 + 4 and b3.shape == (10, 12)
        exact = torch.cdist(b3, candidates, compute_mode="donot_use_mm_for_euclid_dist")
        assert exact.min(1).values.max() == 0


# -- the detector -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    train = healthy_slices(6, seed=0)
    det = PatchCore(weights="random", batch_size=4, coreset_ratio=0.25, max_bank_size=None)
    det.fit(train, Context(seed=3))
    return det


def test_patchcore_finds_a_bright_blob(fitted):
    x, blob = with_blob(healthy_slices(2, seed=1).images)
    pred = fitted.predict(x)
    assert pred.maps.shape == (2, H, W)
    am = int(pred.maps[0].argmax())
    assert blob.view(-1)[am], "map maximum is outside the blob"
    assert pred.extras["score"][0] > pred.extras["score"][1]
    assert fitted.weights_info_["source"] == "random"
    assert fitted.memory_bank_.shape[1] == 256 + 512 + 512


def test_patchcore_state_round_trip_gives_identical_maps(fitted, tmp_path):
    from adbench.io import load_tensors, save_tensors

    x = healthy_slices(2, seed=2).images
    save_tensors(tmp_path / "state.pt", fitted.state_dict())
    det2 = PatchCore(**fitted.get_params()).load_state_dict(load_tensors(tmp_path / "state.pt"))
    torch.testing.assert_close(det2.predict(x).maps, fitted.predict(x).maps, rtol=0, atol=0)
    bad = fitted.state_dict()
    bad["extractor.seed"] = torch.tensor(99)      # other random weights → refuse, not wrong maps
    with pytest.raises(ValueError, match="not the ones this state was fitted with"):
        PatchCore(**fitted.get_params()).load_state_dict(bad)


def test_patchcore_plugin_is_registered_with_its_presets():
    from adbench.plugins import get_registry

    spec = get_registry().method("patchcore")
    assert spec.kind == "feature" and {"smoke", "default", "paper"} <= set(spec.presets)
    assert set(spec.default_config) == set(PatchCore._param_names())


# -- a timm backbone ----------------------------------------------------------------------
TIMM = {"backbone": "timm/resnet18", "layers": ("layer2", "layer3"), "batch_size": 4,
        "coreset_ratio": 0.25, "max_bank_size": None}


@pytest.fixture(scope="module")
def timm_fitted():
    pytest.importorskip("timm")
    return PatchCore(weights="random", **TIMM).fit(healthy_slices(6, seed=0), Context(seed=3))


def test_patchcore_on_a_timm_backbone_fits_predicts_and_round_trips(timm_fitted, tmp_path):
    from adbench.io import load_tensors, save_tensors, tensor_json

    det = timm_fitted
    x = healthy_slices(2, seed=2).images
    pred = det.predict(x)
    assert pred.maps.shape == (2, H, W) and torch.isfinite(pred.maps).all()
    assert det.grid_ == (8, 8) and det.memory_bank_.shape[1] == 128 + 256
    assert det.weights_info_["backbone"] == "timm/resnet18"
    state = det.state_dict()
    assert tensor_json(state["extractor.backbone"]) == "timm/resnet18"
    save_tensors(tmp_path / "state.pt", state)
    det2 = PatchCore(**det.get_params()).load_state_dict(load_tensors(tmp_path / "state.pt"))
    torch.testing.assert_close(det2.predict(x).maps, pred.maps, rtol=0, atol=0)
    assert set(det2.state_dict()) == set(state)
    other = {**det.get_params(), "backbone": "timm/resnet34"}
    with pytest.raises(ValueError, match="fitted with backbone 'timm/resnet18'"):
        PatchCore(**other).load_state_dict(state)


def test_patchcore_timm_weights_file_gives_the_random_runs_maps(timm_fitted, tmp_path):
    import timm
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):   # the random run's weights: seed = ctx.seed
        torch.manual_seed(3)
        save_file(timm.create_model("resnet18").state_dict(), str(tmp_path / "r18.safetensors"))
    det = PatchCore(weights=str(tmp_path / "r18.safetensors"), **TIMM)
    det.fit(healthy_slices(6, seed=0), Context(seed=3))
    x = healthy_slices(2, seed=2).images
    torch.testing.assert_close(det.predict(x).maps, timm_fitted.predict(x).maps, rtol=0, atol=0)
    assert det.weights_info_["source"] == "path" and len(det.weights_info_["sha256"]) == 64
