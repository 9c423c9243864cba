"""MemAE: memory addressing (Eq. 4-7), entropy (Eq. 9), networks at 160x128, exact resume,
state round trip, blob reconstruction, the detector contract and a smoke run."""
from __future__ import annotations

import json
import math

import pytest
import torch

from adbench import Context
from adbench.methods.memae import plugin
from adbench.methods.memae.detector import MemAE
from adbench.methods.memae.memory import (
    MemoryModule,
    address,
    addressing_entropy,
    hard_shrink,
    renormalise,
)
from adbench.methods.memae.networks import GridDecoder, GridEncoder, MemAENet
from adbench.methods.memae.training import CHECKPOINT_NAME, MemAETask, train_memae, training_digest
from adbench.testing import synthetic_slices

# one torch thread: several test modules' convolutions oversubscribe 2 shared cores
pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 160, 128
TINY = dict(base_channels=4, channel_max=8, memory_size=24, batch_size=4)


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- memory module ------------------------------------------------------------------------------
def test_addressing_weights_sum_to_one_before_and_after_shrinkage():
    g = torch.Generator().manual_seed(0)
    z, mem = torch.randn(50, 16, generator=g), torch.randn(30, 16, generator=g)
    for kind in ("cosine", "dot"):
        w = address(z, mem, kind)
        assert w.shape == (50, 30) and bool((w > 0).all())
        torch.testing.assert_close(w.sum(1), torch.ones(50), rtol=0, atol=1e-6)
        w_hat = renormalise(hard_shrink(w, 1 / 30))
        torch.testing.assert_close(w_hat.sum(1), torch.ones(50), rtol=0, atol=1e-6)
    # on a grid, through the module: every position's weights sum to 1
    torch.manual_seed(0)
    m = MemoryModule(num_items=30, dim=16)
    assert m.shrink_threshold == pytest.approx(1 / 30)           # default λ = 1/N
    out, att = m(torch.randn(2, 16, 5, 4, generator=g))
    assert out.shape == (2, 16, 5, 4) and att.shape == (2, 30, 5, 4)
    torch.testing.assert_close(att.sum(1), torch.ones(2, 5, 4), rtol=0, atol=1e-6)
    # ẑ is ŵ M at each position (read independently per grid vector)
    torch.testing.assert_close(out[1, :, 3, 2], att[1, :, 3, 2] @ m.memory.detach())


def test_cosine_addressing_is_the_softmax_of_cosine_similarities():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    mem = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cos = torch.tensor([[1.0, 0.0, 1 / math.sqrt(2)], [0.0, 1.0, 1 / math.sqrt(2)]])
    ref = cos.exp() / cos.exp().sum(1, keepdim=True)
    torch.testing.assert_close(address(z, mem, "cosine"), ref)
    dot = z @ mem.t()
    torch.testing.assert_close(address(z, mem, "dot"), dot.exp() / dot.exp().sum(1, keepdim=True))
    with pytest.raises(ValueError, match="addressing 'l2'"):
        address(z, mem, "l2")


def test_hard_shrinkage_zeroes_weights_below_lambda_and_keeps_the_order():
    w = torch.softmax(torch.randn(8, 40, generator=torch.Generator().manual_seed(1)) * 2, dim=1)
    srt = w.sort(dim=1).values
    lam = float((srt[0, 25] + srt[0, 26]) / 2)     # halfway between two weights of row 0
    shrunk = hard_shrink(w, lam)
    below, above = w < lam, w > lam
    assert int(below[0].sum()) == 26 and bool((shrunk[below] == 0).all())
    # survivors keep their value (up to eps / |w - λ|), hence their order
    torch.testing.assert_close(shrunk[above], w[above], rtol=1e-6, atol=0)
    w_hat = renormalise(shrunk)
    for r in range(8):
        keep = above[r]
        assert torch.equal(w_hat[r][keep].argsort(), w[r][keep].argsort())
        torch.testing.assert_close(w_hat[r][keep], w[r][keep] / w[r][keep].sum())
    assert torch.equal(w_hat == 0, ~above)


def test_entropy_loss_matches_a_hand_computation():
    w = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    expected = (math.log(2) + 0.0 + math.log(4)) / 3          # Σ -w log w, mean over queries
    assert addressing_entropy(w).item() == pytest.approx(expected, abs=1e-6)
    # grid layout (B, N, h, w): the items are dimension 1, the mean is over B·h·w positions
    grid = torch.softmax(torch.randn(2, 6, 3, 2, generator=torch.Generator().manual_seed(2)), 1)
    by_hand = sum(-sum(float(grid[b, i, y, x]) * math.log(float(grid[b, i, y, x]))
                       for i in range(6)) for b in range(2) for y in range(3) for x in range(2)) / 12
    assert addressing_entropy(grid).item() == pytest.approx(by_hand, rel=1e-5)


def test_gradients_reach_the_memory():
    torch.manual_seed(0)
    net = MemAENet(levels=4, base=4, channel_max=8, memory_size=12)
    x = synthetic_slices(2, seed=0).images
    rec, _ = net(x)
    ((rec - x) ** 2).mean().backward()
    g = net.memory.memory.grad
    assert g is not None and bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0
    net.zero_grad()
    addressing_entropy(net(x)[1]).backward()      # the entropy term alone trains M too
    assert float(net.memory.memory.grad.abs().sum()) > 0


# -- networks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("levels, grid", [(4, (10, 8)), (5, (5, 4))])
def test_network_shapes_at_160x128(levels, grid):
    torch.manual_seed(0)
    x = synthetic_slices(3, seed=0).images
    enc = GridEncoder((H, W), 1, levels, base=4, channel_max=8)
    z = enc(x)
    assert z.shape == (3, 8, *grid) and not hasattr(enc, "head")
    mem = MemoryModule(num_items=10, dim=8)
    z_hat, att = mem(z)
    assert z_hat.shape == z.shape and att.shape == (3, 10, *grid)
    dec = GridDecoder((H, W), 1, levels, base=4, channel_max=8)
    rec = dec(z_hat)
    assert rec.shape == (3, 1, H, W) and rec.abs().max() <= 1
    net = MemAENet(levels=levels, base=4, channel_max=8, memory_size=10)
    rec, att = net(x)
    assert rec.shape == (3, 1, H, W) and att.shape == (3, 10, *grid)
    assert MemAENet(**net.config()).config() == net.config()
    with pytest.raises(ValueError, match="GridDecoder: got"):
        dec(z[:, :4])
    with pytest.raises(ValueError, match="ConvEncoder: got"):
        enc(x[:, :, :64])


# -- training -----------------------------------------------------------------------------------
class _Interrupted(Exception):
    pass


def test_resume_after_an_interruption_continues_the_loss_curve_exactly(tmp_path, monkeypatch):
    images = synthetic_slices(10, seed=4).images
    cfg = MemAE(**TINY, iterations=8, checkpoint_interval=3, log_interval=2, sample_interval=4,
                num_samples=2).training_config((H, W))
    full = train_memae(images, cfg, tmp_path / "full", seed=7)

    # a crash in iteration 6: the last checkpoint is at 3 (3 does not divide 5), and the log
    # already holds records 2 and 4, written after it
    loss = MemAETask._loss

    def crash(self, step):
        if step.iteration == 5:
            raise _Interrupted
        return loss(self, step)

    monkeypatch.setattr(MemAETask, "_loss", crash)
    with pytest.raises(_Interrupted):
        train_memae(images, cfg, tmp_path / "split", seed=7)
    assert int(torch.load(tmp_path / "split" / CHECKPOINT_NAME, weights_only=True)["iteration"]) == 3
    assert [r["iteration"] for r in _rows(tmp_path / "split" / "train_log.jsonl")] == [2, 4]
    monkeypatch.setattr(MemAETask, "_loss", loss)
    resumed = train_memae(images, cfg, tmp_path / "split", seed=7)

    timing = ("sec_per_iter", "images_per_s")
    a, b = (_rows(tmp_path / d / "train_log.jsonl") for d in ("full", "split"))
    assert [r["iteration"] for r in a] == [2, 4, 6, 8]
    assert [{k: v for k, v in r.items() if k not in timing} for r in a] == \
           [{k: v for k, v in r.items() if k not in timing} for r in b]
    assert {"loss", "loss_mse", "loss_entropy", "active_items"} <= set(a[0])
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    ca, cb = (torch.load(tmp_path / d / CHECKPOINT_NAME, weights_only=True) for d in ("full", "split"))
    for k, v in ca["net_opt"]["state"].items():
        assert all(torch.equal(t, cb["net_opt"]["state"][k][n]) for n, t in v.items() if torch.is_tensor(t))
    assert (tmp_path / "full" / "samples_000008.png").stat().st_size > 0
    assert not full.training and not resumed.training
    # a finished checkpoint is loaded, not trained again; other settings are refused
    before = (tmp_path / "full" / CHECKPOINT_NAME).stat().st_mtime_ns
    again = train_memae(images, cfg, tmp_path / "full", seed=7)
    assert (tmp_path / "full" / CHECKPOINT_NAME).stat().st_mtime_ns == before
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in full.state_dict().items())
    with pytest.raises(ValueError, match="entropy_weight"):
        train_memae(images, {**cfg, "entropy_weight": 0.1}, tmp_path / "full", seed=7)
    # the folder name follows the recipe, not its length or logging
    assert training_digest({**cfg, "iterations": 99, "log_interval": 1}) == training_digest(cfg)
    assert training_digest({**cfg, "memory_size": 25}) != training_digest(cfg)


# -- detector -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    """A small MemAE trained for 60 iterations on 24 healthy synthetic slices (train MSE
    ~0.02 from ~0.5; lr 3e-3 so that so short a run learns the anatomy)."""
    det = MemAE(**{**TINY, "base_channels": 8, "channel_max": 16, "batch_size": 8}, lr=3e-3,
                iterations=60, log_interval=20, predict_batch_size=5)
    return det.fit(synthetic_slices(24, seed=10), Context(seed=1))


def test_state_round_trip_gives_identical_reconstructions_and_native_maps(fitted, tmp_path):
    x = synthetic_slices(4, seed=11, blob=True).images
    ctx = Context()
    before = fitted.predict(x, ctx)
    torch.save(fitted.state_dict(), tmp_path / "state.pt")
    loaded = MemAE(**fitted.get_params()).load_state_dict(
        torch.load(tmp_path / "state.pt", weights_only=True))
    after = loaded.predict(x, ctx)
    assert torch.equal(before.reconstructions, after.reconstructions)
    assert torch.equal(before.maps, after.maps)
    assert torch.equal(before.extras["score"], after.extras["score"])
    # the native map is the squared residual, the score its image mean
    torch.testing.assert_close(before.maps, (x - before.reconstructions)[:, 0] ** 2)
    torch.testing.assert_close(before.extras["score"], before.maps.mean(dim=(1, 2)))
    assert not loaded.network_.training
    assert set(loaded.state_dict()) == set(fitted.state_dict())


def test_healthy_slices_reconstruct_better_than_a_bright_blob(fitted):
    healthy = synthetic_slices(6, seed=12)
    blob = synthetic_slices(6, seed=12, blob=True)     # same slices, plus a disc of value 1
    ctx = Context()
    err_h = (healthy.images - fitted.reconstruct(healthy.images, ctx)).abs()[:, 0]
    err_b = (blob.images - fitted.reconstruct(blob.images, ctx)).abs()[:, 0]
    for i in range(6):
        inside = blob.lesion[i]
        assert inside.sum() > 100
        assert err_b[i][inside].mean() > err_h[i][inside].mean() + 0.3, i
    # training did learn the healthy anatomy: far better than the untrained network
    untrained = MemAE(**fitted.get_params())
    with torch.random.fork_rng():
        torch.manual_seed(1)
        untrained.network_ = MemAENet(**fitted.network_.config()).eval()
    untrained.fitted_ = True
    err_0 = (healthy.images - untrained.reconstruct(healthy.images, ctx)).abs()[:, 0]
    assert err_h.mean() < 0.6 * err_0.mean()


def test_plugin_defaults_are_the_constructor_and_presets_valid():
    spec = plugin.adbench_methods()[0]
    assert spec.name == "memae" and spec.kind == "reconstruction"
    assert spec.default_config == MemAE().get_params()
    assert spec.default_config["memory_size"] == 2000 and spec.default_config["lr"] == 1e-4
    assert spec.default_config["entropy_weight"] == 0.0002
    assert {"smoke", "cpu-quick", "gpu-quick", "paper"} <= set(spec.presets)
    for name, preset in spec.presets.items():
        assert set(preset) <= set(spec.default_config), name
    with pytest.raises(ValueError, match="size"):
        train_memae(torch.zeros(2, 1, 64, 64), MemAE().training_config((H, W)), "unused")
