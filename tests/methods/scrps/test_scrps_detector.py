"""The SCRPS detector end to end on tiny 20x16 slices: fit, repository provenance, retrieval +
swap endpoints, extras, resume from the workdir and exact state-dict round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from adbench import Context, SliceSet
from adbench.methods.scrps.detector import SCRPS
from adbench.methods.scrps.inversion import invert
from adbench.methods.scrps.plugin import PRESETS
from adbench.methods.scrps.stylegan_train import STYLEGAN_PRESETS
from adbench.plugins import get_registry
from adbench.methods.scrps.retrieval import retrieve
from adbench.methods.scrps.stylegan_train import config_digest

H, W = 20, 16


def _slices(n, seed):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    r = torch.rand(n, 1, 1, generator=g) * 0.3 + 0.5
    img = (((yy / r) ** 2 + (xx / r) ** 2) < 1).float() * (0.6 + 0.3 * torch.rand(n, 1, 1, generator=g))
    img = img * 2 - 1 + 0.05 * torch.randn(n, H, W, generator=g)
    return SliceSet(images=img[:, None].clamp(-1, 1), brain=img > -0.5,
                    lesion=torch.zeros(n, H, W, dtype=torch.bool),
                    subjects=[f"sub-{i // 4}" for i in range(n)], z=np.arange(n) % 4)


CONFIG = dict(stylegan="smoke", stylegan_config={"iterations": 2, "batch_size": 4},
              inversion_steps=3, perceptual_blocks=[1], inversion_batch_size=8,
              repository_fraction=0.5, repository_chunk=4, k1=4, k2=2, l1=3, l2=4,
              weights="random", retrieved_perceptual=True)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny convolutions: avoid oversubscribing the shared cores
    work = tmp_path_factory.mktemp("scrps")
    train = _slices(12, 0)
    det = SCRPS(**CONFIG).fit(train, Context(seed=0, workdir=work))
    yield det, train, work
    torch.set_num_threads(threads)


def test_plugin_defaults_match_constructor_and_paper():
    import typing
    DEFAULT_CONFIG = get_registry().method("scrps").default_config   # derived from the signature
    hint = typing.get_type_hints(SCRPS.__init__)["stylegan"]
    assert set(typing.get_args(hint)) == set(STYLEGAN_PRESETS)     # the config check knows them all
    assert (DEFAULT_CONFIG["inversion_steps"], DEFAULT_CONFIG["inversion_lr"], DEFAULT_CONFIG["mse_weight"],
            DEFAULT_CONFIG["k1"], DEFAULT_CONFIG["k2"], DEFAULT_CONFIG["l1"], DEFAULT_CONFIG["l2"],
            DEFAULT_CONFIG["repository_fraction"]) == (2000, 0.01, 10.0, 100, 20, 6, 9, 0.05)
    assert all(set(p) <= set(DEFAULT_CONFIG) for p in PRESETS.values())


def test_repository_codes_come_from_the_test_procedure(fitted):
    det, train, work = fitted
    repo = det.repository_
    assert len(repo) == 6 and repo.codes.shape == (6, det.generator_.num_ws, det.generator_.w_dim)
    assert repo.subjects == [train.subjects[i] for i in repo.index]
    assert np.array_equal(repo.z, train.z[repo.index])
    again = invert(det.generator_, train.images[torch.as_tensor(repo.index)], det._module("loss", "cpu"),
                   steps=3, batch_size=8)
    assert torch.allclose(again, repo.codes, atol=1e-6)
    assert (work / "repository" / "selection.json").exists()
    digest = config_digest(det.stylegan_settings())
    assert (work / f"stylegan-{digest}" / "stylegan2-checkpoint.pt").exists()
    # the folder names the recipe: a longer run shares it, a different recipe does not
    assert config_digest({**det.stylegan_settings(), "iterations": 10 ** 6}) == digest
    assert config_digest({**det.stylegan_settings(), "r1_gamma": 123.0}) != digest
    assert det.weights_info_["source"] == "random"


def test_predict_swap_endpoints_and_extras(fitted):
    det, train, _ = fitted
    x = _slices(3, 1).images
    ctx = Context(seed=0)
    pred = det.predict(x, ctx)
    assert pred.maps.shape == (3, H, W) and pred.reconstructions.shape == x.shape
    assert torch.equal(pred.maps, (x - pred.reconstructions).pow(2)[:, 0])
    assert pred.reconstructions.abs().max() <= 1
    assert set(pred.extras) == {"retrieval_similarity", "retrieved_perceptual"}
    sim = pred.extras["retrieval_similarity"]
    assert sim.shape == (3,) and torch.all(sim.abs() <= 1 + 1e-6)
    assert pred.extras["retrieved_perceptual"].shape == (3,)
    assert torch.all(pred.extras["retrieved_perceptual"] >= 0)

    G = det.generator_
    codes = invert(G, x, det._module("loss", "cpu"), steps=3, batch_size=8)
    fused, _, _ = retrieve(codes, det.repository_.codes, k1=4, k2=2, l1=3)
    with torch.no_grad():
        plain = G.synthesis(codes, noise_mode="none").clamp(-1, 1)
        retrieved = G.synthesis(fused, noise_mode="none").clamp(-1, 1)
        swapped = G.synthesis(torch.cat([codes[:, :4], fused[:, 4:]], 1), noise_mode="none").clamp(-1, 1)
    assert torch.allclose(pred.reconstructions, swapped, atol=1e-5)
    det.l2 = G.num_ws       # keep every test layer: plain inversion
    assert torch.allclose(det.reconstruct(x, ctx), plain, atol=1e-5)
    det.l2 = 0              # take every layer from the fused code
    assert torch.allclose(det.reconstruct(x, ctx), retrieved, atol=1e-5)
    det.l2 = CONFIG["l2"]


def test_state_round_trip_and_resume(fitted, tmp_path):
    det, train, work = fitted
    x = _slices(2, 2).images
    state = det.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    torch.save(state, tmp_path / "s.pt")
    loaded = SCRPS(**det.get_params()).load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    a, b = det.predict(x, Context()), loaded.predict(x, Context())
    assert torch.equal(a.maps, b.maps) and torch.equal(a.reconstructions, b.reconstructions)
    assert torch.equal(loaded.repository_.codes, det.repository_.codes)
    assert loaded.repository_.subjects == det.repository_.subjects
    # Fitting again on the same workdir reuses the finished StyleGAN2 and repository chunks.
    again = SCRPS(**CONFIG).fit(train, Context(seed=0, workdir=work))
    assert torch.equal(again.repository_.codes, det.repository_.codes)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="stylegan='nope'"):
        SCRPS(stylegan="nope").stylegan_settings()
    with pytest.raises(ValueError, match="k2=30"):
        SCRPS(stylegan="smoke", k1=10, k2=30).fit(_slices(4, 0))


def test_layer_settings_checked_against_the_generator(fitted):
    det, _, _ = fitted
    x = _slices(1, 3).images
    for key, value, msg in (("l1", det.generator_.num_ws, "l1="), ("l2", det.generator_.num_ws + 1, "l2=")):
        old = getattr(det, key)
        setattr(det, key, value)
        try:
            with pytest.raises(ValueError, match=msg):
                det.predict(x, Context())
        finally:
            setattr(det, key, old)
