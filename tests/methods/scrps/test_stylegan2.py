"""StyleGAN2 networks: shapes, W+ layout (architecture §7), demodulation, equalised lr, noise."""
from __future__ import annotations

import json
import math

import pytest
import torch

from adbench.methods.scrps.stylegan2 import (Discriminator, Generator, MinibatchStd, channel_table,
                                             generator_from_config, resolution_levels, tensor_hash)
from adbench.methods.scrps.stylegan2_layers import (EqualConv2d, EqualLinear, blur_filter,
                                                    downsample2d, modulated_conv2d, upsample2d)

# one torch thread: several test modules' convolutions oversubscribe 2 shared cores
pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=16, channel_max=8)


def tiny_generator(res=(160, 128), **kw) -> Generator:
    torch.manual_seed(0)
    return Generator(img_resolution=res, **{**TINY, **kw})


def test_resolution_levels_and_full_width_table():
    levels = resolution_levels((160, 128))
    assert levels == [(5, 4), (10, 8), (20, 16), (40, 32), (80, 64), (160, 128)]
    assert resolution_levels((12, 8)) == [(6, 4), (12, 8)]
    table = channel_table(levels, 4096, 512)
    assert table == {"5x4": 512, "10x8": 512, "20x16": 512, "40x32": 512, "80x64": 256, "160x128": 128}
    with pytest.raises(ValueError, match="img_resolution"):
        resolution_levels((5, 4))
    with pytest.raises(ValueError, match="missing resolutions"):
        channel_table(levels, 64, 16, {"5x4": 8})


def test_generator_output_shapes_and_12_ws():
    G = tiny_generator()
    assert G.num_ws == 12 and G.mapping.w_avg.shape == (16,)
    z = torch.randn(3, 16)
    ws = G.mapping(z)
    assert ws.shape == (3, 12, 16)
    img = G.synthesis(ws, noise_mode="none")
    assert img.shape == (3, 1, 160, 128)
    assert G(z).shape == (3, 1, 160, 128)
    # general base x 2^k: 12x8 = 6x4 * 2 has one conv at 6x4, two at 12x8 and a final ToRGB
    G2 = tiny_generator(res=(12, 8))
    assert G2.num_ws == 4 and G2(torch.randn(2, 16)).shape == (2, 1, 12, 8)
    with pytest.raises(ValueError, match="expected \\(B, 12, 16\\)"):
        G.synthesis(torch.zeros(1, 11, 16))


def test_ws_index_table_matches_architecture():
    """Feed W+ code i = the constant i and read which code each layer's affine receives."""
    G = tiny_generator()
    seen = {}
    for name, mod in G.synthesis.named_modules():
        if name.endswith("affine"):
            mod.register_forward_hook(lambda m, inp, out, name=name: seen.__setitem__(name, inp[0]))
    ws = torch.arange(12.0)[None, :, None].expand(1, 12, 16)
    G.synthesis(ws, noise_mode="none")
    got = {k: int(v[0, 0]) for k, v in seen.items()}
    expected = {"blocks.0.conv1.affine": 0, "blocks.0.torgb.affine": 1}
    for b in range(1, 6):  # 10x8 ... 160x128
        expected[f"blocks.{b}.conv0.affine"] = 2 * b - 1
        expected[f"blocks.{b}.conv1.affine"] = 2 * b
        expected[f"blocks.{b}.torgb.affine"] = 2 * b + 1
    assert got == expected


def _effective_weight(x_shape, weight, styles, **kw):
    """Recover the per-sample kernel of modulated_conv2d by probing with unit impulses."""
    b, i, h, w = x_shape
    o, _, k, _ = weight.shape
    out = torch.zeros(b, o, i, k, k, dtype=torch.float64)
    for ci in range(i):
        x = torch.zeros(x_shape, dtype=torch.float64)
        x[:, ci, h // 2, w // 2] = 1.0
        y = modulated_conv2d(x, weight, styles, **kw)
        r = k // 2
        out[:, :, ci] = y[:, :, h // 2 - r:h // 2 + r + 1, w // 2 - r:w // 2 + r + 1]
    return out


@pytest.mark.parametrize("fused", [True, False])
def test_demodulated_weights_have_unit_norm(fused):
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    styles = torch.randn(2, 3, generator=g, dtype=torch.float64) * 3
    eff = _effective_weight((2, 3, 9, 9), weight, styles, demodulate=True, fused=fused)
    norms = eff.square().sum(dim=[2, 3, 4])
    torch.testing.assert_close(norms, torch.ones(2, 5, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    # without demodulation the kernel is just w * s (Eq. 1)
    eff = _effective_weight((2, 3, 9, 9), weight, styles, demodulate=False, fused=fused)
    expect = (weight[None] * styles[:, None, :, None, None]).flip([3, 4])
    torch.testing.assert_close(eff, expect)


@pytest.mark.parametrize("up", [False, True])
def test_fused_and_unfused_modulation_agree(up):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 5, 4, generator=g, dtype=torch.float64)
    w = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64)
    s = torch.randn(3, 4, generator=g, dtype=torch.float64)
    a = modulated_conv2d(x, w, s, up=up, fused=True, resample_filter=blur_filter().double())
    b = modulated_conv2d(x, w, s, up=up, fused=False, resample_filter=blur_filter().double())
    assert a.shape == (3, 6, 10, 8) if up else (3, 6, 5, 4)
    torch.testing.assert_close(a, b)


def test_fir_resampling_shapes_and_dc_gain():
    f = blur_filter()
    assert math.isclose(float(f.sum()), 1.0, rel_tol=1e-6)
    x = torch.full((1, 2, 10, 8), 3.0)
    up = upsample2d(x, f)
    down = downsample2d(x, f)
    assert up.shape == (1, 2, 20, 16) and down.shape == (1, 2, 5, 4)
    # a constant signal stays constant away from the zero-padded border
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 3.0))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 3.0))


def test_equalised_learning_rate_scaling():
    torch.manual_seed(3)
    for lr_mul in (1.0, 0.01):
        layer = EqualLinear(256, 64, lr_mul=lr_mul)
        # stored N(0, 1/lr_mul^2), applied times lr_mul / sqrt(fan_in)
        assert abs(float(layer.weight.detach().std()) * lr_mul - 1.0) < 0.05
        x = torch.randn(8, 256)
        torch.testing.assert_close(layer(x), x @ (layer.weight * lr_mul / 16.0).t() + layer.bias * lr_mul)
    # unit-variance inputs give unit-variance outputs whatever the fan-in
    with torch.no_grad():
        for fan_in in (16, 1024):
            y = EqualLinear(fan_in, 512)(torch.randn(256, fan_in))
            assert abs(float(y.std()) - 1.0) < 0.1
        y = EqualConv2d(32, 16, 3)(torch.randn(8, 32, 16, 16))[..., 1:-1, 1:-1]
        assert abs(float(y.std()) - 1.0) < 0.1
    # the stored weight's gradient carries the runtime scale lr_mul / sqrt(fan_in) = 0.5 / 2
    layer = EqualLinear(4, 1, bias=False, lr_mul=0.5)
    x = torch.ones(1, 4)
    layer(x).sum().backward()
    torch.testing.assert_close(layer.weight.grad, torch.full((1, 4), 0.5 / 2.0))


def test_zero_noise_is_deterministic_and_noise_modes_differ():
    G = tiny_generator()
    with torch.no_grad():
        for mod in G.modules():
            if hasattr(mod, "noise_strength"):
                mod.noise_strength.fill_(0.5)
    ws = G.mapping(torch.randn(2, 16))
    with torch.no_grad():
        a = G.synthesis(ws, noise_mode="none")
        b = G.synthesis(ws, noise_mode="none")
        r1 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(0))
        r2 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(0))
        r3 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1))
        c = G.synthesis(ws, noise_mode="const")
        for mod in G.modules():
            if hasattr(mod, "noise_strength"):
                mod.noise_strength.zero_()
        zero_strength = G.synthesis(ws, noise_mode="random")
    assert torch.equal(a, b)
    assert torch.equal(r1, r2) and not torch.allclose(r1, r3) and not torch.allclose(a, c)
    torch.testing.assert_close(a, zero_strength)  # "none" == noise b fixed to zero (§3.1)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="zero")


@pytest.mark.parametrize("threads", [1, 2])
def test_gradients_reach_every_ws_code(threads):
    # every level needs >= 2 channels: with a single channel, demodulation divides the style
    # out of the conv almost exactly, and the code's gradient is rounding noise (0.0 with one
    # thread, 1e-5 with two), so the test would say nothing about the W+ wiring
    cfg = {**TINY, "channel_base": 64}
    assert min(channel_table(resolution_levels((160, 128)), 64, TINY["channel_max"]).values()) >= 2
    n = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        G = tiny_generator(**cfg)
        ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(1)))
        ws = ws.detach().clone().requires_grad_(True)
        G.synthesis(ws, noise_mode="none").square().sum().backward()
    finally:
        torch.set_num_threads(n)
    per_code = ws.grad.abs().sum(dim=(0, 2))
    # each code drives its own layer: its gradient is a real fraction of the largest one,
    # far above float32 rounding (measured: the smallest is 0.08 of the largest)
    assert per_code.shape == (12,) and bool((per_code > 1e-3 * per_code.max()).all()), per_code


def test_mapping_truncation_and_w_avg():
    G = tiny_generator()
    z = torch.randn(4, 16)
    with torch.no_grad():
        w = G.mapping(z, update_w_avg=True)
        expected_avg = w[:, 0].mean(0) * (1 - 0.995)
        torch.testing.assert_close(G.mapping.w_avg, expected_avg)
        torch.testing.assert_close(G.mapping(z, truncation_psi=0.0), G.mapping.w_avg.expand(4, 12, 16))
        assert torch.equal(w[:, 0], w[:, 11])  # broadcast to all W+ codes


def test_discriminator_accepts_160x128():
    torch.manual_seed(0)
    D = Discriminator((160, 128), channel_base=16, channel_max=8)
    assert D(torch.randn(4, 1, 160, 128)).shape == (4,)
    assert D(torch.randn(3, 1, 160, 128)).shape == (3,)  # group size falls back to a divisor
    with pytest.raises(ValueError, match="expected \\(B, 1, 160, 128\\)"):
        D(torch.randn(2, 1, 128, 128))


def test_minibatch_std_matches_numpy():
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    y = MinibatchStd(group_size=2)(x)
    xn = x.numpy().reshape(2, 2, 3, 2, 2)
    std = xn.std(axis=0).mean(axis=(1, 2, 3))     # per group member position
    assert y.shape == (4, 4, 2, 2)
    torch.testing.assert_close(y[:, 3, 0, 0], torch.tensor([std[0], std[1], std[0], std[1]]),
                               rtol=1e-6, atol=1e-6)


def test_config_round_trip_and_state_dict():
    G = tiny_generator()
    cfg = json.loads(json.dumps(G.config()))
    G2 = generator_from_config(cfg)
    G2.load_state_dict(G.state_dict())
    assert tensor_hash(G2) == tensor_hash(G)
    ws = G.mapping(torch.randn(2, 16))
    torch.testing.assert_close(G2.synthesis(ws, "none"), G.synthesis(ws, "none"))
    assert G2.num_ws == 12 and G2.channels == G.channels


def test_bf16_autocast_close_to_fp32():
    G = tiny_generator()
    D = Discriminator((160, 128), channel_base=16, channel_max=8)
    z = torch.randn(2, 16)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            img = G(z, noise_mode="none")
            logits = D(img)
        ref = G(z, noise_mode="none")
    assert torch.isfinite(logits).all() and logits.dtype == torch.float32
    corr = torch.corrcoef(torch.stack([img.float().flatten(), ref.flatten()]))[0, 1]
    assert float(corr) > 0.99
