"""StyleGAN2 training: losses, R1 against finite differences, lazy-reg correction, EMA, resume."""
from __future__ import annotations

import json
import math

import pytest
import torch

from adbench.methods.scrps.stylegan2 import Discriminator, Generator, tensor_hash
from adbench.methods.scrps.stylegan_train import (CHECKPOINT_NAME, STYLEGAN_PRESETS, blur_images,
                                                  blur_sigma_at, default_stylegan_config,
                                                  resolve_config, rotate_images, train_stylegan)
from adbench.training.losses import r1_penalty

# one torch thread: several test modules' convolutions oversubscribe 2 shared cores
pytestmark = pytest.mark.usefixtures("one_thread")

TINY_CFG = dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=8, channel_max=4, batch_size=4,
                iterations=4, r1_interval=2, pl_weight=1.0, pl_interval=2, style_mixing_prob=0.9,
                ema_kimg=0.002, train_noise_mode="random", rotate_prob=0.5, checkpoint_interval=2,
                log_interval=2, sample_interval=4, num_samples=4)


def ellipses(n: int, h: int = 16, w: int = 8, seed: int = 0) -> torch.Tensor:
    """Bright ellipses on a -1 background, (n, 1, h, w) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    a = 0.5 + 0.4 * torch.rand(n, 1, 1, generator=g)
    b = 0.5 + 0.4 * torch.rand(n, 1, 1, generator=g)
    e = (yy / a) ** 2 + (xx / b) ** 2
    return torch.where(e < 1, 0.8 - e, torch.tensor(-1.0))[:, None]


def test_presets_and_config_validation():
    assert set(STYLEGAN_PRESETS) == {"smoke", "cpu-quick", "cpu-long", "gpu-quick", "paper"}
    # cpu-long is cpu-quick's network (same W+ layout and width), trained longer and differently
    quick, long = STYLEGAN_PRESETS["cpu-quick"], STYLEGAN_PRESETS["cpu-long"]
    arch = ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "channels", "batch_size")
    assert {k: long[k] for k in arch} == {k: quick[k] for k in arch}
    assert {k for k in quick if quick[k] != long[k]} == {
        "iterations", "r1_gamma", "blur_fade_kimg", "ema_kimg", "checkpoint_interval",
        "log_interval", "sample_interval", "quality_interval"}
    assert long["iterations"] > quick["iterations"] and long["r1_gamma"] < quick["r1_gamma"]
    paper = default_stylegan_config()
    assert paper["lr"] == 0.002 and paper["iterations"] == 12000 and paper["rotate_degrees"] == 15
    assert paper["betas"] == [0.0, 0.99] and paper["r1_interval"] == 16 and paper["pl_interval"] == 4
    assert paper["style_mixing_prob"] == 0.9 and paper["train_noise_mode"] == "none"
    for cfg in STYLEGAN_PRESETS.values():
        assert resolve_config(cfg) == cfg
    with pytest.raises(ValueError, match="unknown keys \\['lr_g'\\]"):
        resolve_config({"lr_g": 0.1})
    with pytest.raises(ValueError, match="precision"):
        resolve_config({"precision": "fp16"})


def test_blur_matches_scipy_and_fades_linearly():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.randn(2, 1, 20, 16, dtype=torch.float64)
    assert blur_images(x, 0.0) is x
    sigma = 1.5
    r = int(sigma * 3)
    taps = 2.0 ** (-(torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    taps = (taps / taps.sum()).numpy()
    want = ndimage.correlate1d(ndimage.correlate1d(x.numpy(), taps, axis=3, mode="nearest"),
                               taps, axis=2, mode="nearest")
    torch.testing.assert_close(blur_images(x, sigma), torch.from_numpy(want))
    const = torch.full((1, 1, 10, 8), -1.0)
    torch.testing.assert_close(blur_images(const, 3.0), const)     # background stays background
    cfg = resolve_config({"blur_sigma": 4.0, "blur_fade_kimg": 2.0})
    assert [blur_sigma_at(cfg, n) for n in (0, 500, 1000, 2000, 5000)] == [4.0, 3.0, 2.0, 0.0, 0.0]
    assert blur_sigma_at(default_stylegan_config(), 0) == 0.0     # the paper's recipe: no blur


def test_r1_matches_finite_differences():
    torch.manual_seed(0)
    D = Discriminator((8, 8), channel_base=8, channel_max=4, mbstd_group_size=2).double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    r1 = r1_penalty(D, x)
    # central differences of sum(D(x)) for every pixel, all in one batch: minibatch-std groups
    # are (k, P + k), so row k of each half is one perturbed copy of the 2-image minibatch
    eps = 1e-6
    n = x.numel()
    delta = torch.eye(n, dtype=torch.float64).view(n, *x.shape) * eps       # (n, 2, 1, 8, 8)
    copies = torch.cat([x + delta, x - delta])                             # (2n, 2, 1, 8, 8)
    with torch.no_grad():
        logits = D(torch.cat([copies[:, 0], copies[:, 1]]))                  # (4n,)
    sums = logits[:2 * n] + logits[2 * n:]
    grad = ((sums[:n] - sums[n:]) / (2 * eps)).view_as(x)
    # leaky-ReLU kinks within eps of a pre-activation bound the agreement, hence rtol 1e-3
    torch.testing.assert_close(r1, grad.square().sum(dim=[1, 2, 3]), rtol=1e-3, atol=1e-9)
    # the penalty is differentiable w.r.t. every weight of D (double backward); biases after
    # minibatch-std only move leaky-ReLU kinks, so their gradient is zero almost everywhere
    r1.sum().backward()
    no_grad = [k for k, p in D.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not [k for k in no_grad if k.endswith("weight")], no_grad


def test_rotation_augmentation():
    x = ellipses(3, 16, 16)
    torch.testing.assert_close(rotate_images(x, torch.zeros(3)), x, atol=1e-5, rtol=0)
    # 90 degrees on a square grid samples exactly at pixel centres: a pure index permutation
    r = rotate_images(x, torch.full((3,), 90.0))
    assert any(torch.allclose(r, torch.rot90(x, k, dims=(2, 3)), atol=1e-5) for k in (1, -1))
    # on a non-square slice a centred disc stays a disc (rotation is isotropic in pixels)
    h, w = 40, 32
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    disc = torch.where(yy ** 2 + xx ** 2 < 12 ** 2, 1.0, -1.0)[None, None]
    rot = rotate_images(disc, torch.tensor([30.0]))
    assert float((rot - disc).abs().mean()) < 0.05
    assert float(rot.min()) >= -1.0 - 1e-6


def _run(tmp_path, name, cfg, images):
    G = train_stylegan(images, cfg, tmp_path / name, seed=3)
    ckpt = torch.load(tmp_path / name / CHECKPOINT_NAME, weights_only=True)
    return G, ckpt


def test_resume_equals_uninterrupted(tmp_path):
    images = ellipses(12)
    G_full, full = _run(tmp_path, "full", TINY_CFG, images)
    _, half = _run(tmp_path, "split", {**TINY_CFG, "iterations": 2}, images)
    assert int(half["iteration"]) == 2
    G_split, split = _run(tmp_path, "split", TINY_CFG, images)
    assert int(split["iteration"]) == int(full["iteration"]) == 4
    for key in ("G", "D", "G_ema"):
        for k, v in full[key].items():
            assert torch.equal(v, split[key][k]), (key, k)
    assert tensor_hash(G_full) == tensor_hash(G_split)
    # training really moved the weights, and an already complete checkpoint is returned as is
    assert any(not torch.equal(full["G"][k], half["G"][k]) for k in full["G"])
    before = (tmp_path / "full" / CHECKPOINT_NAME).stat().st_mtime_ns
    G_again = train_stylegan(images, TINY_CFG, tmp_path / "full", seed=3)
    assert (tmp_path / "full" / CHECKPOINT_NAME).stat().st_mtime_ns == before
    assert tensor_hash(G_again) == tensor_hash(G_full) and not G_again.training
    with pytest.raises(ValueError, match="different settings.*r1_gamma"):
        train_stylegan(images, {**TINY_CFG, "r1_gamma": 5.0}, tmp_path / "full", seed=3)


def test_outputs_lazy_correction_and_ema(tmp_path):
    cfg = {**TINY_CFG, "ema_kimg": 0.0, "r1_interval": 16, "pl_interval": 4}
    _, ckpt = _run(tmp_path, "run", cfg, ellipses(8))
    work = tmp_path / "run"
    # lazy regularisation: lr and betas rescaled by c = interval / (interval + 1)
    for opt, interval in (("D_opt", 16), ("G_opt", 4)):
        group = ckpt[opt]["param_groups"][0]
        c = interval / (interval + 1)
        assert math.isclose(group["lr"], 0.002 * c) and math.isclose(group["betas"][1], 0.99 ** c)
    # ema_kimg = 0 means beta = 0: G_ema equals G
    for k, v in ckpt["G"].items():
        torch.testing.assert_close(ckpt["G_ema"][k], v)
    records = [json.loads(line) for line in (work / "train_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [2, 4]
    assert all(math.isfinite(r["loss_D"]) and math.isfinite(r["loss_G"]) for r in records)
    assert "r1" in records[0] and "pl" in records[0]
    assert (work / "samples_000004.png").stat().st_size > 0
    gcfg = json.loads(ckpt["generator_config"])
    assert gcfg["img_resolution"] == [16, 8] and gcfg["w_dim"] == 8


def test_smoke_preset_on_160x128(tmp_path):
    cfg = {**STYLEGAN_PRESETS["smoke"], "iterations": 2, "log_interval": 1}
    G = train_stylegan(ellipses(4, 160, 128), cfg, tmp_path / "smoke")
    assert isinstance(G, Generator) and G.num_ws == 12
    with torch.no_grad():
        img = G.synthesis(G.mapping.w_avg.expand(1, 12, -1), noise_mode="none")
    assert img.shape == (1, 1, 160, 128) and torch.isfinite(img).all()


@pytest.mark.slow
def test_cli_trains_on_synth_smoke_resumes_and_writes_one_generator_file(tmp_path, monkeypatch,
                                                                         capsys):
    from adbench.io import file_sha256
    from adbench.methods.scrps import train as cli
    from adbench.methods.scrps.stylegan2 import load_generator

    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sg"
    args = ["--dataset", "synth", "--preset", "smoke", "--out", str(out), "--no-progress",
            "--set", "iterations=1", "--set", "num_samples=2"]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_ws"] == 12 and summary["n_slices"] > 0
    assert summary["sha256"] == file_sha256(out / "generator.pt")
    G = load_generator(out / "generator.pt")            # weights and config in one file
    ckpt = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert tensor_hash(G) == tensor_hash(_loaded(ckpt["G_ema"], G))
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["stylegan"]["iterations"] == 1 and saved["dataset"] == "synth"
    # a second call with more iterations resumes from the checkpoint
    assert cli.main(args[:-4] + ["--set", "iterations=2", "--set", "num_samples=2"]) == 0
    assert int(torch.load(out / CHECKPOINT_NAME, weights_only=True)["iteration"]) == 2
    capsys.readouterr()
    assert cli.main(args + ["--set", "oops"]) == 2
    assert "--set 'oops'" in capsys.readouterr().err
    assert cli.main(args + ["--set", "runner.batch_size=2"]) == 2


def _loaded(state: dict, like: Generator) -> Generator:
    import copy
    G = copy.deepcopy(like)
    G.load_state_dict(state)
    return G


def test_generator_file_round_trip_and_errors(tmp_path):
    from adbench.errors import DataError
    from adbench.methods.scrps.stylegan2 import load_generator, save_generator

    torch.manual_seed(0)
    G = Generator(img_resolution=(16, 8), z_dim=8, w_dim=8, mapping_layers=2, channel_base=16,
                  channel_max=8)
    save_generator(tmp_path / "g.pt", G)
    H = load_generator(tmp_path / "g.pt")
    assert tensor_hash(H) == tensor_hash(G) and H.config() == G.config() and not H.training
    with pytest.raises(FileNotFoundError, match="no such generator file"):
        load_generator(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="bad.pt: not a readable StyleGAN2 generator file"):
        load_generator(tmp_path / "bad.pt")
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="other.pt.*generator_config_json"):
        load_generator(tmp_path / "other.pt")
