"""W+ inversion (Eq. 1) on a tiny generator: batch independence, loss decrease, contract."""
from __future__ import annotations

import pytest
import torch

from adbench.methods.scrps.inversion import invert
from adbench.methods.scrps.stylegan2 import Generator
from adbench.nn.perceptual import PerceptualLoss


def _tiny_generator(seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=16, w_dim=16, img_resolution=(20, 16), mapping_layers=2,
                  channels={"5x4": 16, "10x8": 16, "20x16": 8})
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping(torch.randn(256, 16))[:, 0].mean(0))
    return G.eval()


@pytest.fixture(scope="module")
def setup():
    # Tiny convolutions: one thread avoids oversubscription on the shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    G = _tiny_generator()
    loss_fn = PerceptualLoss(weights="random", mode="lpips")
    g = torch.Generator().manual_seed(1)
    # Reachable targets: images the generator makes from codes near w_avg.
    ws = G.mapping.w_avg[None, None] + 0.7 * torch.randn(4, G.num_ws, G.w_dim, generator=g)
    with torch.no_grad():
        targets = G.synthesis(ws, noise_mode="none").clamp(-1, 1)
    yield G, loss_fn, targets
    torch.set_num_threads(threads)


def test_batch_independence(setup):
    G, loss_fn, targets = setup
    targets = targets[:3]
    together = invert(G, targets, loss_fn, steps=8, batch_size=3)
    alone = torch.cat([invert(G, targets[i:i + 1], loss_fn, steps=8) for i in range(3)])
    pairs = invert(G, targets, loss_fn, steps=8, batch_size=2)    # batches of 2 and 1
    assert together.shape == (3, G.num_ws, G.w_dim)
    start = G.mapping.w_avg[None, None].expand_as(together)
    moved = (together - start).abs().max()
    assert moved > 0.05                                           # the codes did move
    # Identical trajectories up to float reduction order (which Adam's sign-like first steps
    # can amplify to ~1e-5 for near-zero gradients): far below the motion of the codes.
    assert (together - alone).abs().max() < 2e-3 * float(moved)
    assert (together - pairs).abs().max() < 2e-3 * float(moved)


def test_loss_decreases_on_average(setup):
    G, loss_fn, targets = setup
    codes, losses = invert(G, targets, loss_fn, steps=24, lr=0.05, return_losses=True)
    assert losses.shape == (24, 4)
    curve = losses.mean(dim=1)
    windows = curve.view(6, 4).mean(dim=1)                        # smoothed: mean of 4 steps
    assert torch.all(windows[1:] <= windows[:-1] + 1e-6), windows
    assert curve[-1] < 0.7 * curve[0]
    # The returned codes are the optimised ones: their loss matches the last step's level.
    with torch.no_grad():
        img = G.synthesis(codes, noise_mode="none")
        final = loss_fn(img, targets) + 10.0 * (img - targets).pow(2).flatten(1).mean(1)
    assert final.mean() <= curve[-1] + 1e-4


def test_mse_only_inversion_matches_its_oracle(setup):
    """loss_fn=None: Eq. 1 without the perceptual term; the recorded losses are exactly
    mse_weight x the mean squared error of the images the codes generate at each step."""
    G, _, targets = setup
    codes, losses = invert(G, targets[:2], None, steps=12, lr=0.05, mse_weight=3.0, return_losses=True)
    assert losses[-1].mean() < losses[0].mean()
    with torch.no_grad():
        img = G.synthesis(codes, noise_mode="none")
    final = 3.0 * (img - targets[:2]).pow(2).flatten(1).mean(1)
    assert torch.all(final <= losses[0] + 1e-6)
    with torch.no_grad():
        start = G.synthesis(G.mapping.w_avg[None, None].expand(2, G.num_ws, G.w_dim), noise_mode="none")
    assert torch.allclose(losses[0], 3.0 * (start - targets[:2]).pow(2).flatten(1).mean(1), atol=1e-6)


def test_start_is_w_avg_and_generator_frozen(setup):
    G, loss_fn, targets = setup
    same = invert(G, targets[:2], loss_fn, steps=0)
    assert torch.equal(same, G.mapping.w_avg[None, None].expand(2, G.num_ws, G.w_dim))
    assert not any(p.requires_grad for p in G.parameters()) and not G.training
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = invert(G, targets[:1], loss_fn, steps=0, init_std=0.1, generator=g1)
    b = invert(G, targets[:1], loss_fn, steps=0, init_std=0.1, generator=g2)
    assert torch.equal(a, b) and not torch.equal(a, same[:1])


def test_invert_rejects_wrong_size(setup):
    G, loss_fn, _ = setup
    with pytest.raises(ValueError, match="generator makes"):
        invert(G, torch.zeros(1, 1, 24, 16), loss_fn, steps=1)
    with pytest.raises(ValueError, match="precision"):
        invert(G, torch.zeros(1, 1, 20, 16), loss_fn, steps=1, precision="fp16")
