"""A_per and the perceptual loss against the lpips package and hand computations."""
from __future__ import annotations

import hashlib
import warnings

import lpips
import pytest
import torch
import torchvision

from adbench.nn.backbones import VGG16_BLOCK_ENDS
from adbench.nn.perceptual import PerceptualLoss, PerceptualScore, lpips_heads_file, unit_normalize
from adbench.nn.weights import resolve_vgg16

# one torch thread: several test modules' convolutions oversubscribe 2 shared cores
pytestmark = pytest.mark.usefixtures("one_thread")

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def noise(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def brain_like(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Textured ellipse on a black (-1) background, like a skull-stripped slice."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    inside = (yy / 0.8) ** 2 + (xx / 0.7) ** 2 < 1
    tex = noise(b, h, w, seed) * 0.3 + 0.2
    return torch.where(inside, tex, torch.full_like(tex, -1.0))


@pytest.fixture(scope="module")
def sd():
    return resolve_vgg16("random", seed=1)[0]


@pytest.fixture(scope="module")
def score():
    return PerceptualScore("random", seed=1)


@pytest.fixture(scope="module")
def losses():
    return {m: PerceptualLoss("random", mode=m, seed=1) for m in ("lpips", "eq2")}


def lpips_reference(state: dict) -> lpips.LPIPS:
    """lpips.LPIPS with an untrained (never downloaded) trunk, loaded with ``state``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lpips.LPIPS(net="vgg", pnet_rand=True, spatial=True, verbose=False)
    for j in range(1, 6):
        sl = getattr(ref.net, f"slice{j}")
        sl.load_state_dict({k: state[k] for k in sl.state_dict()})
    return ref


def test_matches_the_lpips_package(sd, score, losses):
    ref = lpips_reference(sd)
    x, y = noise(2, 48, 40, 0), noise(2, 48, 40, 1)
    with torch.no_grad():
        _, per_layer = ref(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1), retPerLayer=True)
        a = score(x, y)
        ref.spatial = False
        total = ref(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)).flatten()
        loss = losses["lpips"](x, y)
    expect = (per_layer[2] + per_layer[3] + per_layer[4])[:, 0]
    assert a.shape == (2, 48, 40)
    torch.testing.assert_close(a, expect, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(loss, total, rtol=1e-4, atol=1e-7)


def test_a_per_is_zero_for_identical_inputs_and_larger_where_they_differ(score):
    x = brain_like(2, 64, 64, seed=3)
    y = x.clone()
    y[:, :, 24:40, 20:36] = noise(2, 16, 16, seed=9)  # a changed 16x16 region
    with torch.no_grad():
        same = score(x, x)
        a = score(x, y)
    assert torch.equal(same, torch.zeros(2, 64, 64))
    assert torch.isfinite(a).all() and (a >= 0).all()
    region = torch.zeros(64, 64, dtype=torch.bool)
    region[24:40, 20:36] = True
    for i in range(2):
        assert a[i][region].mean() > 2 * a[i][~region].mean()
        assert a[i][region].mean() > a[i][~region].max() / 2


def test_eq2_equals_a_hand_computed_sum(sd, losses):
    with torch.device("meta"):
        tv = torchvision.models.vgg16().features
    tv.load_state_dict(sd, assign=True)
    x, y = noise(2, 16, 16, 4), noise(2, 16, 16, 5)
    expect = torch.zeros(2, dtype=torch.float64)
    hx = (((x + 1) / 2).repeat(1, 3, 1, 1) - MEAN) / STD
    hy = (((y + 1) / 2).repeat(1, 3, 1, 1) - MEAN) / STD
    with torch.no_grad():
        for s, e in zip((0,) + VGG16_BLOCK_ENDS[:-1], VGG16_BLOCK_ENDS):
            hx, hy = tv[s:e](hx), tv[s:e](hy)
            n_pixels = hx.shape[2] * hx.shape[3]  # 256, 64, 16, 4, 1
            for i in range(2):
                expect[i] += ((hx[i].double() - hy[i].double()) ** 2).sum() / n_pixels
        got = losses["eq2"](x, y)
    torch.testing.assert_close(got.double(), expect, rtol=1e-4, atol=0)


def test_unit_normalize_has_finite_gradient_at_zero_where_lpips_has_nan():
    f = torch.zeros(1, 4, 2, 2)
    f[..., 0, 0] = torch.tensor([3.0, 4.0, 0.0, 0.0]).view(4)
    f.requires_grad_(True)
    n = unit_normalize(f)
    torch.testing.assert_close(n[0, :, 0, 0].detach(), torch.tensor([0.6, 0.8, 0.0, 0.0]))
    n.sum().backward()
    assert torch.isfinite(f.grad).all()
    g = f.detach().clone().requires_grad_(True)
    lpips.normalize_tensor(g).sum().backward()
    assert torch.isnan(g.grad).any()  # the known LPIPS problem this module avoids


@pytest.mark.parametrize("mode", ["lpips", "eq2"])
def test_gradients_finite_for_black_images(losses, mode):
    loss_fn = losses[mode]
    target = brain_like(1, 32, 32, seed=6)
    black = torch.full_like(target, -1.0)
    x = black.clone().requires_grad_(True)
    loss = loss_fn(x, target)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(x.grad).all() and x.grad.any()
    x.grad = None
    loss = loss_fn.from_features(x, loss_fn.features(black))
    loss.sum().backward()
    assert torch.equal(loss, torch.zeros(1)) and torch.isfinite(x.grad).all()


def test_all_zero_feature_vectors_keep_values_and_gradients_of_lpips(tmp_path, sd):
    # Block 5's last bias pushed far negative: every block-5 feature vector is exactly zero,
    # as happens over black background with real weights. The normalisation's own gradient
    # there is NaN in lpips (test above); ours is finite and otherwise equal to lpips.
    dead = dict(sd, **{"28.bias": torch.full((512,), -1e4)})
    path = tmp_path / "dead_block5.pth"
    torch.save(dead, path)
    x = brain_like(1, 32, 32, seed=7).requires_grad_(True)
    y = brain_like(1, 32, 32, seed=8)
    ref = lpips_reference(dead)
    ref.spatial = False
    expect = ref(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)).flatten()
    expect.sum().backward()
    expect_grad, x.grad = x.grad.clone(), None
    loss_fn = PerceptualLoss(str(path), mode="lpips")
    got = loss_fn(x, y)
    got.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    torch.testing.assert_close(got, expect.detach(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(x.grad, expect_grad, rtol=1e-3, atol=1e-6 * expect_grad.abs().max())
    target = loss_fn.features(y)
    assert target[-1].abs().max() == 0  # the trap is really set: block 5 is all zeros
    x.grad = None
    PerceptualScore(str(path))(x, y).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_samples_are_independent(score, losses):
    a, b, c = noise(1, 32, 32, 10), noise(1, 32, 32, 11), brain_like(1, 32, 32, 12)
    t = noise(2, 32, 32, 13)
    for mode, fn in losses.items():
        grads, values = [], []
        for other in (b, c):
            x = torch.cat([a, other]).requires_grad_(True)
            v = fn(x, t)
            v.sum().backward()
            grads.append(x.grad[0].clone())
            values.append(v[0].detach())
        alone = fn(a, t[:1])
        torch.testing.assert_close(values[0], values[1], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(values[0], alone[0].detach(), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-9)
    with torch.no_grad():
        torch.testing.assert_close(score(torch.cat([a, b]), t)[0], score(a, t[:1])[0],
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["lpips", "eq2"])
def test_from_features_equals_forward(losses, mode):
    fn = losses[mode]
    x, y = noise(2, 32, 32, 14), noise(2, 32, 32, 15)
    with torch.no_grad():
        target = fn.features(y)
        assert [t.shape[1] for t in target] == [64, 128, 256, 512, 512]
        torch.testing.assert_close(fn.from_features(x, target), fn(x, y), rtol=1e-5, atol=1e-7)
        assert torch.equal(fn(y, y), torch.zeros(2))
        with pytest.raises(ValueError, match="features\\(y\\)"):
            fn.from_features(x[:1], target)


def test_provenance_and_argument_errors(score, losses):
    heads = lpips_heads_file()
    info = score.weights_info
    assert info["source"] == "random" and info["backbone"] == "vgg16"
    assert info["lpips_heads"]["sha256"] == hashlib.sha256(heads.read_bytes()).hexdigest()
    assert "lpips_heads" not in losses["eq2"].weights_info
    assert not any(p.requires_grad for p in score.parameters())
    with pytest.raises(ValueError, match="'lpips' or 'eq2'"):
        PerceptualLoss("random", mode="l2")
    with pytest.raises(ValueError, match="differ"):
        score(noise(1, 16, 16, 0), noise(1, 16, 8, 0))


def test_autocast_bf16_stays_finite_and_close(losses):
    fn = losses["lpips"]
    x = brain_like(1, 32, 32, seed=16).requires_grad_(True)
    y = brain_like(1, 32, 32, seed=17)
    ref = fn(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fn(x, y)
    assert low.dtype == torch.float32  # normalisation and heads run in float32
    low.sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(low, ref.detach(), rtol=0.1, atol=0)
