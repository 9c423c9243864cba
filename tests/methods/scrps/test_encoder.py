"""The inversion's encoder and stopping rule on a tiny 20x16 generator: W+ layout, a better
start than the mean w, the stopping rule, batch independence with both, exact resume, and
the detector end to end with ``inversion_init="encoder"``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from adbench import Context, SliceSet
from adbench.methods.scrps.detector import SCRPS
from adbench.methods.scrps.encoder import (ENCODER_CHECKPOINT, Encoder, encode, encoder_from_state,
                                           encoder_state, train_encoder)
from adbench.methods.scrps.inversion import invert
from adbench.methods.scrps.stylegan2 import Generator

CFG = dict(width=8, max_channels=16, head_channels=4, batch_size=16, lr=2e-3,
           checkpoint_interval=1000, log_interval=1000, sample_interval=1000, num_samples=2)


def _tiny_generator(seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=16, w_dim=16, img_resolution=(20, 16), mapping_layers=2,
                  channels={"5x4": 16, "10x8": 16, "20x16": 8})
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping(torch.randn(256, 16))[:, 0].mean(0))
    return G.eval().requires_grad_(False)


def _samples(G, n, seed, spread=1.0):
    """Images of the generator from W+ codes around w_avg (independent per layer)."""
    g = torch.Generator().manual_seed(seed)
    ws = G.mapping.w_avg[None, None] + spread * torch.randn(n, G.num_ws, G.w_dim, generator=g)
    with torch.no_grad():
        return G.synthesis(ws, noise_mode="none").clamp(-1, 1), ws


def _mse(G, codes, targets):
    with torch.no_grad():
        return (G.synthesis(codes, noise_mode="none") - targets).pow(2).flatten(1).mean(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny convolutions: avoid oversubscribing the shared cores
    G = _tiny_generator()
    healthy, _ = _samples(G, 64, seed=3)
    E = train_encoder(G, healthy, {**CFG, "iterations": 120, "batch_size": 8}, tmp_path_factory.mktemp("enc"),
                      mse_weight=10.0, perceptual_weight=0.0, identity={"test": 1}, seed=0)
    yield G, E
    torch.set_num_threads(threads)


def test_output_shape_and_w_plus_layout():
    torch.manual_seed(0)
    w_avg = torch.randn(512)
    # the paper's layout: 160x128 slices -> 12 x 512 W+ codes, features at 10x8
    E = Encoder((160, 128), 1, 12, 512, width=4, max_channels=8, head_channels=2, w_avg=w_avg)
    x = torch.rand(2, 1, 160, 128) * 2 - 1
    out = E(x)
    assert out.shape == (2, 12, 512) and E.feature_shape == (2, 10, 8)
    assert torch.equal(out, w_avg.expand(2, 12, 512))          # untrained: exactly the mean w
    with torch.no_grad():                                      # head row block l -> W+ layer l
        E.head.bias.copy_(torch.arange(12 * 512, dtype=torch.float32))
    out = E(x)
    for layer in (0, 5, 11):
        assert torch.equal(out[:, layer] - w_avg, torch.arange(layer * 512, (layer + 1) * 512.0).expand(2, 512))
    with pytest.raises(ValueError, match=r"\(B, 1, 160, 128\)"):
        E(torch.zeros(1, 1, 20, 16))
    again = encoder_from_state(encoder_state(E))               # round trip of weights + config
    assert torch.equal(again(x), out)


def test_encoder_start_beats_mean_start(trained):
    G, E = trained
    targets, _ = _samples(G, 8, seed=11)                       # held-out codes
    init = encode(E, targets)
    assert init.shape == (8, G.num_ws, G.w_dim)
    for k in (0, 5):
        enc = invert(G, targets, None, steps=k, lr=0.05, init=init)
        mean = invert(G, targets, None, steps=k, lr=0.05)
        # measured ~0.2 (k = 0) and ~0.3 (k = 5) of the mean start's error
        assert _mse(G, enc, targets).mean() < 0.5 * _mse(G, mean, targets).mean(), k


def test_stopping_rule_stops_a_converged_sample_only():
    torch.manual_seed(0)
    G = _tiny_generator()
    _, ws = _samples(G, 2, seed=5)
    with torch.no_grad():                  # unclamped: ws[0] is an exact optimum (loss 0)
        targets = G.synthesis(ws, noise_mode="none")
    init = torch.stack([ws[0], G.mapping.w_avg.expand(G.num_ws, G.w_dim)])   # 0: at its optimum
    codes, losses, steps = invert(G, targets, None, steps=30, lr=0.05, init=init, tol=1e-3,
                                  window=5, return_losses=True, return_steps=True)
    assert steps.tolist() == [5, 30]       # stopped at the first check / still improving
    assert torch.equal(codes[0], init[0])  # masked: not a single update moved it
    assert torch.all(losses[:, 0] == losses[0, 0])
    free = invert(G, targets[1:], None, steps=30, lr=0.05)     # the rule off
    assert torch.allclose(codes[1], free[0], atol=1e-5)
    # all samples converged: the loop ends early, the losses repeat their final value
    codes, losses, steps = invert(G, targets[:1], None, steps=30, lr=0.05, init=ws[:1], tol=1e-3,
                                  window=5, return_losses=True, return_steps=True)
    assert steps.tolist() == [5] and losses.shape == (30, 1)
    assert torch.all(losses[5:] == losses[5])
    # the first window's updates did run: the code is that of 5 steps with the rule off
    five = invert(G, targets[:1], None, steps=5, lr=0.05, init=ws[:1])
    assert torch.allclose(codes, five, atol=1e-6)


@pytest.mark.parametrize("start,tol", [("mean", 0.0), ("encoder", 0.0), ("encoder", 0.06)])
def test_batch_independence(trained, start, tol):
    G, E = trained
    targets, _ = _samples(G, 3, seed=21)
    init = encode(E, targets) if start == "encoder" else None
    # lr 0.05 improves these losses by 3-20% per 3 steps: tol 0.06 stops some mid-way
    kw = dict(steps=24, lr=0.05, tol=tol, window=3, return_steps=True)
    together, n3 = invert(G, targets, None, batch_size=3, init=init, **kw)
    alone = [invert(G, targets[i:i + 1], None, init=None if init is None else init[i:i + 1], **kw)
             for i in range(3)]
    moved = (together - (G.mapping.w_avg if init is None else init)).abs().max()
    assert moved > 0.05
    # same trajectories up to float reduction order (as test_inversion's batch independence)
    assert (together - torch.cat([c for c, _ in alone])).abs().max() < 2e-3 * float(moved)
    assert n3.tolist() == [int(k) for _, k in alone]
    if tol > 0:
        assert n3.min() < 24            # the rule did stop someone early


def test_encoder_resume_equals_uninterrupted(tmp_path):
    torch.set_num_threads(1)
    G = _tiny_generator()
    healthy, _ = _samples(G, 16, seed=3)
    kw = dict(mse_weight=10.0, perceptual_weight=0.0, seed=4)
    cfg = {**CFG, "batch_size": 4, "checkpoint_interval": 3}
    full = train_encoder(G, healthy, {**cfg, "iterations": 6}, tmp_path / "a", **kw)
    train_encoder(G, healthy, {**cfg, "iterations": 3}, tmp_path / "b", **kw)
    assert (tmp_path / "b" / ENCODER_CHECKPOINT).exists()
    resumed = train_encoder(G, healthy, {**cfg, "iterations": 6}, tmp_path / "b", **kw)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], torch.zeros_like(a["head.weight"]))   # it trained
    with pytest.raises(Exception, match="different settings"):                    # other recipe
        train_encoder(G, healthy, {**cfg, "iterations": 9, "lr": 0.1}, tmp_path / "b", **kw)


def test_detector_with_encoder_init(tmp_path):
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    n = 8
    img = (torch.rand(n, 1, 20, 16, generator=g) * 2 - 1)
    train = SliceSet(images=img, brain=img[:, 0] > -2, lesion=torch.zeros(n, 20, 16, dtype=torch.bool),
                     subjects=[f"s{i // 4}" for i in range(n)], z=np.arange(n) % 4)
    cfg = dict(stylegan="smoke", stylegan_config={"iterations": 2, "batch_size": 4},
               inversion_steps=4, perceptual_weight=0.0, inversion_batch_size=4,
               repository_fraction=1.0, repository_chunk=4, k1=4, k2=2, l1=3, l2=4,
               retrieved_perceptual=False, inversion_init="encoder", inversion_tol=1e-2,
               inversion_window=2,
               encoder_config={**CFG, "iterations": 4, "batch_size": 4})
    det = SCRPS(**cfg).fit(train, Context(seed=0, workdir=tmp_path))
    assert len(list(tmp_path.glob("encoder-*/" + ENCODER_CHECKPOINT))) == 1
    init = encode(det.encoder_, train.images)
    again, steps = invert(det.generator_, train.images, None, steps=4, init=init, batch_size=4,
                          tol=1e-2, window=2, return_steps=True)
    assert torch.allclose(again, det.repository_.codes, atol=1e-6)   # the repository's procedure
    info = det.inversion_info_["repository_steps"]
    assert info["n"] == n and info["max"] <= 4 and info["mean"] == pytest.approx(steps.double().mean().item())
    loaded = SCRPS(**cfg)
    loaded.load_state_dict(det.state_dict())
    assert torch.equal(encode(loaded.encoder_, train.images), init)
    rec, extras = loaded._reconstruct_with_extras(train.images[:2], Context(seed=0))
    assert rec.shape == (2, 1, 20, 16) and extras["inversion_steps"].shape == (2,)
    summary = loaded.inversion_summary()
    assert summary["init"] == "encoder" and summary["repository_steps"] == info
    assert summary["test_steps"]["n"] == 2
    assert summary["test_steps"]["max"] == int(extras["inversion_steps"].max())
