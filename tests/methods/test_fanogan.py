"""f-AnoGAN: network shapes, the WGAN-GP penalty against finite differences, the frozen
encoder stage, resume of both stages, state round trip, blob localisation, the contract
suite and an end-to-end run (native localisation included)."""
from __future__ import annotations

import json

import pytest
import torch
from payloads import assert_same_payload

from adbench import Context
from adbench.methods.fanogan import plugin
from adbench.methods.fanogan.detector import FAnoGAN
from adbench.methods.fanogan.networks import build_encoder, build_gan, network_config
from adbench.methods.fanogan.training import (ENCODER_CHECKPOINT, GAN_CHECKPOINT, IzifEncoderTask,
                                              WGANGPTask, critic_loss, train_encoder, train_gan)
from adbench.nn.convnets import ConvEncoder
from adbench.testing import synthetic_slices
from adbench.training import Step
from adbench.training.streams import RandomStreams

pytestmark = pytest.mark.usefixtures("one_thread")

SMOKE = plugin.PRESETS["smoke"]
TIMING = {"sec_per_iter", "images_per_s"}
# tiny networks, short trainings: checkpoints every 4 iterations, log records every 2, so an
# interruption at 6 (GAN) or 7 (encoder) falls after a log record that follows the checkpoint
TINY = {**SMOKE, "latent_dim": 8, "base": 2, "channel_max": 4, "batch_size": 2,
        "gan_iterations": 12, "encoder_iterations": 8, "checkpoint_interval": 4,
        "log_interval": 2, "sample_interval": 6}


class Interrupted(RuntimeError):
    pass


def _log(path):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in path.read_text().splitlines()]


def _folders(workdir):
    """(GAN folder, encoder folder of the final GAN) of the one work folder under workdir."""
    (work,) = workdir.glob("fanogan-*")
    return work / "wgan-gp", max(work.glob("izif-gan*"))


# -- networks -------------------------------------------------------------------------------
@pytest.mark.parametrize("widths", [(16, 4, 8), (128, 64, 512)], ids=["tiny", "paper"])
def test_every_network_has_the_expected_shapes_at_160x128(widths):
    latent, base, cmax = widths
    cfg = network_config((160, 128), latent, base, cmax)
    G, D = build_gan(cfg, seed=0)
    E = build_encoder(cfg, seed=0)
    with torch.no_grad():
        x = G.eval()(torch.randn(2, latent, generator=torch.Generator().manual_seed(0)))
        assert x.shape == (2, 1, 160, 128) and x.min() >= -1 and x.max() <= 1
        assert D(x).shape == (2, 1)
        assert D.features(x).shape == (2, cmax, 5, 4)      # the critic features f(x), 5 x 4 grid
        assert E.eval()(x).shape == (2, latent)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())   # WGAN-GP critic
    with pytest.raises(ValueError, match="divisible"):
        network_config((150, 128), latent, base, cmax)


def test_modules_are_built_from_the_seed_without_touching_global_rng():
    cfg = network_config((160, 128), 8, 2, 4)
    state = torch.random.get_rng_state()
    (G1, D1), (G2, D2) = build_gan(cfg, 3), build_gan(cfg, 3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert_same_payload(G1.state_dict(), G2.state_dict())
    assert_same_payload(D1.state_dict(), D2.state_dict())
    E = build_encoder(cfg, 3)
    assert not torch.equal(E.body[0].weight, D1.body[0].weight)   # same shape, other init


# -- WGAN-GP --------------------------------------------------------------------------------
def test_gradient_penalty_of_the_critic_loss_matches_central_finite_differences():
    """critic_loss on a tiny layer-norm critic, double precision, 1 x 8 x 8 images: its
    penalty equals (||∇_x D(x̂)|| - 1)² with the gradient from central differences at the
    same x̂ = e x + (1 - e) x~ (e ~ U(0, 1) per sample from the generator given)."""
    with torch.random.fork_rng(devices=[]):   # conv init from a fixed seed, whatever ran before
        torch.manual_seed(0)
        D = ConvEncoder(size=(8, 8), in_channels=1, latent_dim=1, levels=2, base=3, channel_max=4,
                        norm="layer")
    with torch.no_grad():   # non-trivial layer-norm affines
        for m in D.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(1))
                m.bias.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(2))
    D = D.double()
    g = torch.Generator().manual_seed(3)
    real = torch.rand(4, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    fake = torch.rand(4, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    loss, parts = critic_loss(D, real, fake, 10.0, torch.Generator().manual_seed(7))
    with torch.no_grad():
        e = torch.rand(4, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
        x_hat = e * real + (1 - e) * fake
        h, n = 1e-6, 64
        eye = torch.eye(n, dtype=torch.float64).view(n, 1, 8, 8) * h
        # D is per sample (layer norm, no batch statistics): the 2n perturbed copies of one
        # x̂ go through it in one batch
        grads = torch.stack([(D(x + eye) - D(x - eye)).flatten() / (2 * h) for x in x_hat])
        gp_fd = (grads.norm(dim=1) - 1) ** 2
        w = D(fake).mean() - D(real).mean()
    assert gp_fd.mean() > 1e-3                      # not a trivially small penalty
    assert torch.allclose(parts["gp"].detach(), gp_fd, rtol=1e-6, atol=0)
    assert torch.allclose(loss.detach(), w + 10.0 * gp_fd.mean(), rtol=1e-6, atol=0)
    assert torch.allclose(parts["wasserstein"], -w, rtol=1e-12, atol=0)
    (grad_w,) = torch.autograd.grad(parts["gp"].sum(), D.body[0].weight)   # it trains D
    assert grad_w.abs().sum() > 0


def test_critic_phase_is_the_critic_loss_with_its_own_streams():
    """Dmain = critic_loss(D, x, G(z), λ, gp stream), z ~ N(0, I) from the latent stream."""
    cfg = FAnoGAN(**TINY).training_config(8)
    task = WGANGPTask(cfg, network_config((160, 128), 8, 2, 4), torch.zeros(1, 1, 160, 128),
                      seed=1, device=torch.device("cpu"))
    real = synthetic_slices(2, seed=2).images
    names = ("data",) + WGANGPTask.streams
    streams = RandomStreams(names, seed=5, rank=0, device="cpu")
    replay = RandomStreams(names, seed=5, rank=0, device="cpu")
    tracked = {}
    loss = task._d_main(Step(iteration=0, nimg=0, real=real, streams=streams,
                             track=lambda k, v: tracked.setdefault(k, v.detach())))
    with torch.no_grad():
        fake = task.G(torch.randn(2, 8, generator=replay["latent"]))
    expected, parts = critic_loss(task.D, real, fake, cfg["gp_weight"], replay["gp"])
    assert torch.equal(loss.detach(), expected.detach())
    assert torch.equal(tracked["gp"], parts["gp"].mean().detach())
    assert set(tracked) == {"loss_D", "wasserstein", "gp"}


def test_generator_steps_every_n_critic_iterations():
    task = WGANGPTask(FAnoGAN(**TINY).training_config(8), network_config((160, 128), 8, 2, 4),
                      torch.zeros(1, 1, 160, 128), seed=0, device=torch.device("cpu"))
    (d, g) = task.phases()
    assert (d.name, d.interval, d.modules) == ("Dmain", 1, (task.D,))
    assert (g.name, g.interval, g.modules) == ("Gmain", 5, (task.G,))   # n_critic
    assert task.opt_D.defaults["lr"] == 1e-4
    assert task.opt_D.defaults["betas"] == (0.0, 0.9)


# -- the encoder stage ----------------------------------------------------------------------
def test_encoder_stage_trains_e_and_leaves_g_and_d_bit_identical(tmp_path):
    images = synthetic_slices(8, seed=0).images
    cfg = {**FAnoGAN(**TINY).training_config(8), "gan_iterations": 6, "encoder_iterations": 4}
    net = network_config((160, 128), 8, 2, 4)
    (tmp_path / "g").mkdir()
    (tmp_path / "e").mkdir()
    gan, out = train_gan(images, cfg, net, tmp_path / "g", seed=0)
    g_before = {k: v.clone() for k, v in gan.G.state_dict().items()}   # BN statistics included
    d_before = {k: v.clone() for k, v in gan.D.state_dict().items()}
    e_init = build_encoder(net, seed=0).state_dict()
    enc, _ = train_encoder(images, cfg, net, gan.G, gan.D, tmp_path / "e",
                           gan_iteration=out["iteration"], seed=0)
    assert_same_payload(gan.G.state_dict(), g_before, "G")
    assert_same_payload(gan.D.state_dict(), d_before, "D")
    assert not gan.G.training and not gan.D.training
    assert not any(p.requires_grad for p in [*gan.G.parameters(), *gan.D.parameters()])
    assert any(not torch.equal(v, e_init[k]) for k, v in enc.E.state_dict().items())
    rec = _log(tmp_path / "e" / "train_log.jsonl")
    assert {"loss_E", "residual", "feature_residual"} <= set(rec[-1])
    assert rec[-1]["loss_E"] == pytest.approx(rec[-1]["residual"] + rec[-1]["feature_residual"])
    assert sorted(p.name for p in (tmp_path / "e").glob("samples_*.png")) == ["samples_000004.png"]


# -- resume ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A 12 + 8 iteration fit in one go, the reference of the resume tests."""
    work = tmp_path_factory.mktemp("fanogan-full")
    det = FAnoGAN(**TINY).fit(synthetic_slices(8, seed=0), Context(seed=4, workdir=work))
    return det, work


def _crash_at(monkeypatch, cls, method, at):
    original = getattr(cls, method)

    def crashing(self, step):
        if step.iteration == at:
            raise Interrupted(f"stopped at iteration {at}")
        return original(self, step)
    monkeypatch.setattr(cls, method, crashing)


def _assert_same_training(work_a, work_b):
    for a, b in zip(_folders(work_a), _folders(work_b)):
        assert a.name == b.name
        assert _log(a / "train_log.jsonl") == _log(b / "train_log.jsonl")
        ckpt = GAN_CHECKPOINT if a.name == "wgan-gp" else ENCODER_CHECKPOINT
        assert_same_payload(torch.load(a / ckpt, weights_only=True),
                            torch.load(b / ckpt, weights_only=True), a.name)


@pytest.mark.parametrize("stage", ["gan", "encoder"])
def test_interrupted_stage_resumes_and_continues_the_loss_curve_bit_for_bit(
        stage, uninterrupted, tmp_path, monkeypatch):
    ref, ref_work = uninterrupted
    train = synthetic_slices(8, seed=0)
    cls, method, at, last = ((WGANGPTask, "_d_main", 6, 4) if stage == "gan"
                             else (IzifEncoderTask, "_e_main", 7, 4))
    with monkeypatch.context() as m:
        _crash_at(m, cls, method, at)
        with pytest.raises(Interrupted):
            FAnoGAN(**TINY).fit(train, Context(seed=4, workdir=tmp_path))
    folder = next(tmp_path.glob("fanogan-*/wgan-gp") if stage == "gan"
                  else tmp_path.glob("fanogan-*/izif-gan*"))
    ckpt = GAN_CHECKPOINT if stage == "gan" else ENCODER_CHECKPOINT
    assert int(torch.load(folder / ckpt, weights_only=True)["iteration"]) == last
    # records written after that checkpoint are dropped on resume and written again
    assert [r["iteration"] for r in _log(folder / "train_log.jsonl")][-1] > last
    det = FAnoGAN(**TINY).fit(train, Context(seed=4, workdir=tmp_path))
    _assert_same_training(ref_work, tmp_path)
    assert_same_payload(det.state_dict(), ref.state_dict())


def test_a_finished_gan_training_extended_to_2n_equals_the_2n_run(uninterrupted, tmp_path):
    ref, ref_work = uninterrupted
    train = synthetic_slices(8, seed=0)
    FAnoGAN(**{**TINY, "gan_iterations": 6}).fit(train, Context(seed=4, workdir=tmp_path))
    det = FAnoGAN(**TINY).fit(train, Context(seed=4, workdir=tmp_path))
    # one work folder (the length is not part of its name); a fresh encoder for the longer GAN
    assert sorted(p.name for p in next(tmp_path.glob("fanogan-*")).iterdir()) == [
        "izif-gan0000006", "izif-gan0000012", "wgan-gp"]
    _assert_same_training(ref_work, tmp_path)
    assert_same_payload(det.state_dict(), ref.state_dict())


# -- the detector ---------------------------------------------------------------------------
def test_state_round_trip_gives_identical_reconstructions_maps_and_scores(uninterrupted, tmp_path):
    det, _ = uninterrupted
    torch.save(det.state_dict(), tmp_path / "state.pt")
    fresh = FAnoGAN(**TINY).load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    x = synthetic_slices(3, seed=9, blob=True).images
    a, b = det.predict(x), fresh.predict(x)
    assert torch.equal(a.maps, b.maps) and torch.equal(a.reconstructions, b.reconstructions)
    assert set(a.extras) == {"score", "score_residual", "score_feature"}
    for k in a.extras:
        assert torch.equal(a.extras[k], b.extras[k]), k
    assert not fresh.encoder_.training and not fresh.generator_.training


def test_native_map_and_score_follow_eq_8_9(uninterrupted):
    """map = (x - G(E(x)))², score = A_R + κ A_D, recomputed from the networks directly."""
    det, _ = uninterrupted
    x = synthetic_slices(5, seed=11, blob=True).images
    pred = FAnoGAN(**{**TINY, "predict_batch_size": 2}).load_state_dict(det.state_dict()).predict(x)
    with torch.no_grad():
        rec = det.generator_(det.encoder_(x))
        f_x, f_r = det.critic_.features(x), det.critic_.features(rec)
    a_r = ((x - rec) ** 2).mean(dim=(1, 2, 3))
    a_d = ((f_x - f_r) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(pred.maps, ((x - rec) ** 2)[:, 0], rtol=1e-5, atol=1e-7)
    assert torch.allclose(pred.extras["score_residual"], a_r, rtol=1e-5)
    assert torch.allclose(pred.extras["score_feature"], a_d, rtol=1e-5)
    assert torch.allclose(pred.extras["score"], a_r + det.kappa * a_d, rtol=1e-5)
    assert pred.extras["score"].shape == (5,)


def test_reconstructs_healthy_tissue_better_than_a_bright_blob(tmp_path):
    healthy, blob = synthetic_slices(6, seed=21), synthetic_slices(6, seed=21, blob=True)
    assert torch.equal(healthy.images[~blob.lesion[:, None]], blob.images[~blob.lesion[:, None]])
    cfg = {**TINY, "base": 4, "channel_max": 8, "latent_dim": 16, "batch_size": 8,
           "gan_iterations": 20, "encoder_iterations": 20, "encoder_optimizer": "adam",
           "encoder_lr": 1e-3, "checkpoint_interval": 100, "sample_interval": 100}
    det = FAnoGAN(**cfg).fit(synthetic_slices(32, seed=20), Context(seed=0, workdir=tmp_path))
    err_h = (healthy.images - det.reconstruct(healthy.images, Context())).abs()[:, 0]
    err_b = (blob.images - det.reconstruct(blob.images, Context())).abs()[:, 0]
    for i in range(6):
        m = blob.lesion[i]
        assert m.sum() > 50
        assert err_b[i][m].mean() > err_h[i][m].mean() + 0.4, i   # seeds 0-3: margins >= 0.75


def test_presets_are_valid_configs_and_paper_is_the_signature():
    from adbench.params import check_config
    spec = plugin.adbench_methods()[0]
    for name, preset in spec.presets.items():
        check_config(FAnoGAN, {**spec.default_config, **preset}, f"preset {name}")
    d = spec.default_config
    assert (d["latent_dim"], d["base"], d["channel_max"], d["batch_size"], d["n_critic"],
            d["gp_weight"], d["lr"], d["betas"], d["kappa"], d["encoder_lr"],
            d["encoder_iterations"], d["gan_epochs"]) == (128, 64, 512, 64, 5, 10.0, 1e-4,
                                                          [0.0, 0.9], 1.0, 5e-5, 50000, 7.0)
    assert spec.presets["paper"] == {}
    assert FAnoGAN().training_config(6400)["gan_iterations"] == 700   # 7 epochs of 100 batches
