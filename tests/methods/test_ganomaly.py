"""GANomaly: network shapes at 160x128, the losses and score by hand, bit-exact resume after an
interruption, state round trip, a blob reconstructed worse than healthy tissue, the contract
suite and an end-to-end run on synth."""
from __future__ import annotations

import json
import math

import pytest
import torch

from adbench import Context
from adbench.methods.ganomaly import plugin
from adbench.methods.ganomaly.detector import GANomaly
from adbench.methods.ganomaly.losses import discriminator_loss, generator_losses, latent_score
from adbench.methods.ganomaly.networks import (build_discriminator, build_generator, discriminate,
                                               network_config)
from adbench.methods.ganomaly.training import CHECKPOINT_NAME, GANomalyTask, train_ganomaly
from adbench.testing import synthetic_slices

pytestmark = pytest.mark.usefixtures("one_thread")

# narrow networks; lr 2e-3 so that 80 iterations of batch 4 learn the ellipses
TRAINED = dict(nz=16, ngf=4, ndf=4, channel_max=32, batch_size=4, iterations=80, lr=2e-3,
               checkpoint_interval=80, log_interval=20, sample_interval=80, num_samples=2)


@pytest.fixture(scope="module")
def fitted(one_thread, tmp_path_factory):
    det = GANomaly(**TRAINED)
    det.fit(synthetic_slices(32, seed=0), Context(seed=0, workdir=tmp_path_factory.mktemp("gan")))
    return det


def test_networks_at_160x128_with_the_authors_widths():
    cfg = network_config((160, 128), nz=100, ngf=64, ndf=64, channel_max=1024)
    G, D = build_generator(cfg, seed=0), build_discriminator(cfg, seed=1)
    x = torch.rand(2, 1, 160, 128) * 2 - 1
    with torch.no_grad():
        z = G.encoder(x)
        x_hat = G.decoder(z)
        z_hat = G.encoder2(x_hat)
        logit, feats = discriminate(D, x)
        assert torch.equal(G(x)[0], x_hat)
    assert z.shape == z_hat.shape == (2, 100)
    assert x_hat.shape == (2, 1, 160, 128) and x_hat.abs().max() <= 1
    assert G.encoder.features(x).shape == (2, 1024, 5, 4)       # 64 doubling over 5 levels
    assert logit.shape == (2,) and feats.shape == (2, 1024, 5, 4)
    torch.testing.assert_close(logit, D(x).flatten())
    # DCGAN init (authors' weights_init): conv weights N(0, 0.02)
    w = G.encoder.body[3].weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.002
    with pytest.raises(ValueError, match="divisible by 2\\^levels = 32"):
        network_config((150, 128), 100, 64, 64, 1024)


def test_generator_losses_by_hand():
    feat_real = torch.zeros(2, 3, 2, 2)
    feat_fake = torch.tensor([1.0, 3.0]).repeat(12).view(2, 3, 2, 2)   # diffs 1, 3: mean square 5
    x = torch.zeros(2, 1, 4, 4)
    x_hat = torch.tensor([0.5, -1.5]).repeat(16).view(2, 1, 4, 4)       # mean |diff| (0.5 + 1.5)/2
    z = torch.tensor([[2.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 4.0]])
    z_hat = torch.zeros(2, 4)                                            # (4 + 1 + 16) / 8
    out = generator_losses(feat_real, feat_fake, x, x_hat, z, z_hat, w_adv=1.0, w_con=50.0,
                           w_enc=1.0)
    assert float(out["adv"]) == 5.0
    assert float(out["con"]) == 1.0
    assert float(out["enc"]) == 21 / 8
    assert float(out["total"]) == 1 * 5.0 + 50 * 1.0 + 1 * 21 / 8
    with pytest.raises(ValueError, match="latents"):
        generator_losses(feat_real, feat_fake, x, x_hat, z, z_hat[:, :3], w_adv=1, w_con=50, w_enc=1)


def test_discriminator_loss_and_latent_score_by_hand():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([-1.0, 0.0])
    bce_real = (math.log(2) + math.log(1 + math.exp(-2))) / 2         # -log sigmoid(l)
    bce_fake = (math.log(1 + math.exp(-1)) + math.log(2)) / 2          # -log (1 - sigmoid(l))
    assert float(discriminator_loss(real, fake)) == pytest.approx((bce_real + bce_fake) / 2, rel=1e-6)
    z, z_hat = torch.tensor([[1.0, -1.0], [3.0, 0.0]]), torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    assert latent_score(z, z_hat).tolist() == [1.0, 2.0]


def test_native_score_maps_and_reconstruction_by_hand(fitted):
    x = synthetic_slices(3, seed=5, blob=True).images
    pred = fitted.predict(x, Context())
    G = fitted.generator_
    assert not G.training
    with torch.no_grad():
        z = G.encoder(x)
        x_hat = G.decoder(z)
        z_hat = G.encoder2(x_hat)
    assert pred.extras["score"].shape == (3,)
    torch.testing.assert_close(pred.extras["score"], (z - z_hat).pow(2).sum(dim=1) / 16)
    torch.testing.assert_close(pred.reconstructions, x_hat)
    torch.testing.assert_close(pred.maps, (x - x_hat).abs()[:, 0])
    torch.testing.assert_close(fitted.reconstruct(x, Context()), x_hat)


def test_blob_is_reconstructed_worse_than_healthy_tissue(fitted):
    healthy, blob = synthetic_slices(6, seed=7), synthetic_slices(6, seed=7, blob=True)
    mask = blob.lesion
    assert torch.equal(healthy.images[:, 0][~mask], blob.images[:, 0][~mask])   # same slices
    rec_h = fitted.reconstruct(healthy.images, Context())
    rec_b = fitted.reconstruct(blob.images, Context())
    err_h = (healthy.images - rec_h).abs()[:, 0]
    err_b = (blob.images - rec_b).abs()[:, 0]
    # it learnt the healthy slices: the background (-1), all wrong at the start, is right now
    assert float(err_h[~healthy.brain].mean()) < 0.2
    for i in range(6):
        inside_h, inside_b = float(err_h[i][mask[i]].mean()), float(err_b[i][mask[i]].mean())
        assert inside_b > inside_h + 0.4, (i, inside_h, inside_b)


def test_state_round_trip_through_torch_save(fitted, tmp_path):
    x = synthetic_slices(3, seed=9, blob=True).images
    torch.save(fitted.state_dict(), tmp_path / "state.pt")
    loaded = GANomaly(**fitted.get_params()).load_state_dict(
        torch.load(tmp_path / "state.pt", weights_only=True))
    a, b = fitted.predict(x, Context()), loaded.predict(x, Context())
    assert torch.equal(a.maps, b.maps) and torch.equal(a.reconstructions, b.reconstructions)
    assert torch.equal(a.extras["score"], b.extras["score"])
    assert set(loaded.state_dict()) == set(fitted.state_dict())


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("threshold", [1e-5, 1e9], ids=["authors", "reinit-every-iteration"])
def test_interrupted_training_resumes_bit_for_bit(tmp_path, monkeypatch, threshold):
    images = synthetic_slices(8, seed=1, shape=(64, 32)).images
    det = GANomaly(nz=8, ngf=4, ndf=4, channel_max=16, batch_size=4, iterations=8,
                   d_reinit_threshold=threshold, precision="fp32", checkpoint_interval=3,
                   log_interval=2, sample_interval=4, num_samples=2)
    cfg = det.training_config(images)
    train_ganomaly(images, cfg, tmp_path / "full", seed=3)

    original = GANomalyTask._d_main

    def interrupted(self, step):
        if step.iteration == 5:        # after the checkpoint at 3 and the log record at 4
            raise _Interrupt
        return original(self, step)

    monkeypatch.setattr(GANomalyTask, "_d_main", interrupted)
    with pytest.raises(_Interrupt):
        train_ganomaly(images, cfg, tmp_path / "split", seed=3)
    ckpt = torch.load(tmp_path / "split" / CHECKPOINT_NAME, weights_only=True)
    assert int(ckpt["iteration"]) == 3 and "loss_G" in ckpt["log_pending"]
    monkeypatch.setattr(GANomalyTask, "_d_main", original)
    train_ganomaly(images, cfg, tmp_path / "split", seed=3)

    def records(name):
        lines = (tmp_path / name / "train_log.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items()
                 if k not in ("sec_per_iter", "images_per_s")} for line in lines]

    full, split = records("full"), records("split")
    assert [r["iteration"] for r in full] == [2, 4, 6, 8]
    assert full == split
    reinit = [r["d_reinit"] for r in full]
    assert reinit == ([0.0] * 4 if threshold < 1 else [0.5, 1.0, 1.0, 1.0])
    a = torch.load(tmp_path / "full" / CHECKPOINT_NAME, weights_only=True)
    b = torch.load(tmp_path / "split" / CHECKPOINT_NAME, weights_only=True)
    assert int(a["iteration"]) == int(b["iteration"]) == 8
    for key in ("G", "D"):
        assert a[key].keys() == b[key].keys()
        for k, v in a[key].items():
            assert torch.equal(v, b[key][k]), (key, k)
    for key in ("G_opt", "D_opt"):
        for pid, s in a[key]["state"].items():
            for name in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(s[name], b[key]["state"][pid][name]), (key, pid, name)
    assert torch.equal(a["rng_reinit"], b["rng_reinit"]) and torch.equal(a["rng_data"], b["rng_data"])
    assert any(not torch.equal(v, ckpt["G"][k]) for k, v in a["G"].items())   # it trained
    from PIL import Image
    with Image.open(tmp_path / "full" / "samples_000008.png") as im:      # 2 (slice, rec) pairs
        assert im.size == (2 * 32, 2 * 64)


def test_plugin_presets_and_defaults_are_the_authors():
    spec = plugin.adbench_methods()[0]
    assert spec.name == "ganomaly" and spec.kind == "reconstruction"
    assert {"smoke", "cpu-quick", "gpu-quick", "paper"} <= set(spec.presets)
    assert spec.presets["paper"] == {}
    d = spec.default_config
    assert (d["nz"], d["ngf"], d["ndf"], d["w_adv"], d["w_con"], d["w_enc"], d["lr"], d["beta1"],
            d["beta2"], d["batch_size"], d["epochs"], d["d_reinit_threshold"]) == \
        (100, 64, 64, 1.0, 50.0, 1.0, 2e-4, 0.5, 0.999, 64, 15, 1e-5)
    assert all(set(p) <= set(d) for p in spec.presets.values())
    assert GANomaly(batch_size=64).n_iterations(1000) == 15 * 15     # 15 epochs, last batch dropped
    assert GANomaly(iterations=7).n_iterations(1000) == 7
