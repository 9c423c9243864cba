"""RealNet: AFS and RRS against brute-force oracles, network shapes at 160x128, a fitted
detector (exact channel counts, maps, image score, state round trip), the SDAS folder source,
bit-exact resume after an interruption, the presets, and an end-to-end run on synth."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adbench import Context
from adbench.errors import ConfigError
from adbench.methods.realnet import plugin
from adbench.methods.realnet.anomalies import SDAS_FACTOR, AnomalySource
from adbench.methods.realnet.detector import RealNet
from adbench.methods.realnet.networks import FeatureUNet, RealNetModel
from adbench.methods.realnet.selection import channel_errors, select_channels, select_residuals
from adbench.methods.realnet.training import CHECKPOINT_NAME, RealNetTask, train_realnet
from adbench.nn.synthesis import SynthesisConfig, sample_seeds
from adbench.testing import synthetic_slices

pytestmark = pytest.mark.usefixtures("one_thread")

SMOKE = {**plugin.PRESETS["smoke"], "weights": "random"}
# VGG16 blocks 3-5 at 160 x 128: (channels, h, w)
VGG = {"block3": (256, 40, 32), "block4": (512, 20, 16), "block5": (512, 10, 8)}


def test_afs_errors_and_selection_by_hand():
    g = torch.Generator().manual_seed(0)
    b, h, w = 2, 4, 4
    masks = torch.zeros(b, 1, 8, 8)
    masks[0, 0, :4, :4] = 1                      # top-left quarter of sample 0
    normal = torch.randn(b, 3, h, w, generator=g)
    label = F.interpolate(masks, size=(h, w), mode="nearest")
    delta = torch.stack([label[:, 0],                                   # separates exactly
                         torch.rand(b, h, w, generator=g),              # noise
                         1 - label[:, 0]], dim=1)                       # inverted
    anomalous = normal + delta.sqrt()            # so (anomalous - normal)^2 == delta
    got = channel_errors(anomalous, normal, masks)
    r = delta.double().transpose(0, 1).reshape(3, -1).numpy()
    lab = label.double().transpose(0, 1).reshape(1, -1).numpy()
    want = [np.mean(((rc - rc.min()) / (rc.max() - rc.min() + 1e-4) - lab) ** 2) for rc in r]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-9)
    assert got[0] < got[1] < got[2]
    assert select_channels(got, 1).tolist() == [0]
    assert select_channels(got, 2).tolist() == [0, 1]
    # a NaN error ranks as the largest finite one (kept last); the result is sorted and has
    # exactly k entries
    e = torch.tensor([0.6, float("nan"), 0.1, 0.3, 0.2], dtype=torch.float64)
    assert select_channels(e, 3).tolist() == [2, 3, 4]
    assert select_channels(e, 5).tolist() == [0, 1, 2, 3, 4]


def test_rrs_keeps_top_channels_by_max_and_mean():
    g = torch.Generator().manual_seed(1)
    residual = torch.rand(3, 10, 5, 4, generator=g)
    ranked = torch.randn(3, 10, 5, 4, generator=g)
    out = select_residuals(residual, ranked, ("max", "mean"), (3, 2))
    assert out.shape == (3, 5, 5, 4)
    for i in range(3):
        r = ranked[i].flatten(1).numpy()
        by_max = np.argsort(-r.max(1), kind="stable")[:3]
        by_mean = np.argsort(-r.mean(1), kind="stable")[:2]
        want = residual[i][torch.as_tensor(np.concatenate([by_max, by_mean]))]
        assert torch.equal(out[i], want)
    with pytest.raises(ValueError, match="mode"):
        select_residuals(residual, ranked, ("median",), (2,))


def test_networks_at_160x128_keep_the_configured_channels():
    cfg = {"layers": list(VGG), "channels": [c for c, _, _ in VGG.values()],
           "afs_channels": [6, 4, 8], "hidden_ratio": 0.5, "channel_mult": [1, 2, 4],
           "num_res_blocks": 1, "attention_mult": [2, 4], "rrs_modes": ["max", "mean"],
           "rrs_channels": [5, 3], "residual_layers": 1}
    torch.manual_seed(0)
    model = RealNetModel(cfg).eval()
    feats = {n: torch.randn(2, c, h, w) for n, (c, h, w) in VGG.items()}
    model.set_indices({"block3": torch.tensor([0, 3, 9, 10, 50, 255]),
                       "block4": torch.tensor([1, 2, 3, 511]),
                       "block5": torch.arange(8) * 7})
    with torch.no_grad():
        selected, recon, logits = model(feats, (160, 128))
    for n, k in zip(VGG, cfg["afs_channels"]):
        assert selected[n].shape == recon[n].shape == (2, k, *VGG[n][1:])
        assert torch.equal(selected[n], feats[n][:, model.indices()[n]])
        assert torch.equal(recon[n], torch.zeros_like(recon[n]))   # zero-initialised output
    assert logits.shape == (2, 2, 160, 128) and torch.isfinite(logits).all()
    assert sorted(k for k in model.state_dict() if k.startswith("index_")) == \
        ["index_block3", "index_block4", "index_block5"]
    unet = FeatureUNet(8, channel_mult=(1, 2, 4), num_res_blocks=2, attention_mult=(1, 2, 4))
    assert unet(torch.randn(1, 8, 5, 4)).shape == (1, 8, 5, 4)     # odd grids: 5x4 -> 3x2 -> 2x1
    with pytest.raises(ValueError, match="afs_channels"):
        RealNetModel({**cfg, "afs_channels": [257, 4, 8]})
    with pytest.raises(ValueError, match="rrs_channels"):
        RealNetModel({**cfg, "rrs_channels": [16, 3]})


@pytest.fixture(scope="module")
def fitted(one_thread, tmp_path_factory):
    det = RealNet(**SMOKE)
    det.fit(synthetic_slices(8, seed=0), Context(seed=0, workdir=tmp_path_factory.mktemp("rn")))
    return det


def test_fitted_selection_maps_and_score(fitted):
    idx = fitted.model_.indices()
    for (name, (c, _, _)), k in zip(VGG.items(), SMOKE["afs_channels"]):
        assert idx[name].numel() == k and idx[name].unique().numel() == k
        assert torch.equal(idx[name], idx[name].sort().values) and 0 <= idx[name].min() < c
    x = synthetic_slices(3, seed=5, blob=True).images
    pred = fitted.predict(x, Context())
    assert pred.maps.shape == (3, 160, 128) and pred.reconstructions is None
    assert float(pred.maps.min()) >= 0 and float(pred.maps.max()) <= 1
    # image score: max over every 16 x 16 window of the map's mean (integral image, float64)
    m = pred.maps.double().numpy()
    ii = np.pad(m.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    win = (ii[:, 16:, 16:] - ii[:, :-16, 16:] - ii[:, 16:, :-16] + ii[:, :-16, :-16]) / 256
    np.testing.assert_allclose(pred.extras["score"].numpy(), win.reshape(3, -1).max(1), rtol=1e-5)
    assert fitted.weights_info_["source"] == "random"


def test_state_round_trip_through_torch_save(fitted, tmp_path):
    x = synthetic_slices(2, seed=9, blob=True).images
    torch.save(fitted.state_dict(), tmp_path / "state.pt")
    loaded = RealNet(**fitted.get_params()).load_state_dict(
        torch.load(tmp_path / "state.pt", weights_only=True))
    a, b = fitted.predict(x, Context()), loaded.predict(x, Context())
    assert torch.equal(a.maps, b.maps) and torch.equal(a.extras["score"], b.extras["score"])
    for n, t in fitted.model_.indices().items():
        assert torch.equal(loaded.model_.indices()[n], t)
    assert set(loaded.state_dict()) == set(fitted.state_dict())


def _sdas_folder(root, shape=(40, 30)):
    from PIL import Image

    root.mkdir()
    Image.fromarray(np.full(shape, 255, np.uint8)).save(root / "a.png")            # value 1
    ramp = np.tile(np.linspace(0, 255, shape[1]).astype(np.uint8), (shape[0], 1))
    Image.fromarray(ramp).save(root / "sub_b.png")
    return root


def test_folder_source_blends_sdas_images_with_exact_masks(tmp_path):
    folder = _sdas_folder(tmp_path / "sdas")
    s = synthetic_slices(6, seed=3)
    brain = s.brain[:, None]
    cfg = SynthesisConfig.from_dict({"p_anomaly": 1.0})
    src = AnomalySource("folder", cfg, folder=str(folder))
    seeds = sample_seeds(7, n=6)
    aug, masks = src(s.images, brain, seeds)
    assert torch.equal(masks.bool(), aug != s.images)          # exact: where the slice changed
    assert not (masks.bool() & ~brain).any() and (masks.flatten(1).sum(1) >= 16).all()
    # where the constant-white file (value 1) was blended, aug = f * 1 + (1 - f) * x, one f
    white = 0
    for i in range(6):
        m = masks[i, 0].bool() & (s.images[i, 0] < 0.9)
        f = (aug[i, 0][m] - s.images[i, 0][m]) / (1 - s.images[i, 0][m])
        if float(f.max() - f.min()) < 1e-4:                     # this sample drew "a.png"
            assert SDAS_FACTOR[0] - 1e-6 <= float(f.mean()) <= SDAS_FACTOR[1] + 1e-6
            white += 1
    assert 0 < white < 6                                        # both files were drawn
    # a sample depends only on its own seed, slice and mask: reversed batch, same samples
    rev = torch.arange(5, -1, -1)
    aug_r, masks_r = src(s.images[rev], brain[rev], seeds[rev])
    assert torch.equal(aug_r, aug[rev]) and torch.equal(masks_r, masks[rev])
    # p_anomaly 0: nothing changes
    none = AnomalySource("folder", SynthesisConfig.from_dict({"p_anomaly": 0.0}), folder=str(folder))
    a0, m0 = none(s.images, brain, seeds)
    assert torch.equal(a0, s.images) and not m0.any()
    (tmp_path / "empty").mkdir()
    for bad in (None, str(tmp_path / "missing"), str(tmp_path / "empty")):
        with pytest.raises(ConfigError, match="anomaly_folder"):
            AnomalySource("folder", cfg, folder=bad).check((160, 128))


class _Interrupt(Exception):
    pass


def test_interrupted_training_resumes_bit_for_bit(tmp_path, monkeypatch):
    """The folder source (SDAS stand-in) through the loop: 8 iterations equal 5 + resume."""
    folder = _sdas_folder(tmp_path / "sdas")
    s = synthetic_slices(6, seed=1, shape=(64, 32))
    images, brain = s.images, s.brain[:, None]
    det = RealNet(**{**SMOKE, "iterations": 8, "checkpoint_interval": 3, "log_interval": 2,
                     "sample_interval": 4, "num_samples": 2, "precision": "fp32",
                     "anomaly_source": "folder", "anomaly_folder": str(folder)})
    det._ext, det.extractor_seed_ = None, 0
    ext = det._extractor("cpu")
    net_cfg = det.network_config(ext.channels)
    source = det.make_source(images)
    idx = {n: torch.arange(k) * 3 for n, k in zip(net_cfg["layers"], net_cfg["afs_channels"])}
    cfg = det.training_config(images, net_cfg, "fixed")

    def model():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            m = RealNetModel(net_cfg)
        m.set_indices(idx)
        return m

    full = train_realnet(model(), ext, source, images, brain, cfg, tmp_path / "full", seed=3)
    original = RealNetTask._main

    def interrupted(self, step):
        if step.iteration == 5:          # after the checkpoint at 3 and the log record at 4
            raise _Interrupt
        return original(self, step)

    monkeypatch.setattr(RealNetTask, "_main", interrupted)
    with pytest.raises(_Interrupt):
        train_realnet(model(), ext, source, images, brain, cfg, tmp_path / "split", seed=3)
    ckpt = torch.load(tmp_path / "split" / CHECKPOINT_NAME, weights_only=True)
    assert int(ckpt["iteration"]) == 3 and "loss_seg" in ckpt["log_pending"]
    monkeypatch.setattr(RealNetTask, "_main", original)
    split = train_realnet(model(), ext, source, images, brain, cfg, tmp_path / "split", seed=3)

    def records(name):
        lines = (tmp_path / name / "train_log.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items()
                 if k not in ("sec_per_iter", "images_per_s")} for line in lines]

    assert [r["iteration"] for r in records("full")] == [2, 4, 6, 8]
    assert records("full") == records("split")
    assert all(math.isfinite(r["loss_seg"]) and r["loss_rec"] >= 0 for r in records("full"))
    a, b = full.state_dict(), split.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(v, ckpt["model"][k]) for k, v in a.items())   # it trained
    assert torch.equal(a["index_block3"], idx["block3"])                      # AFS kept
    from PIL import Image
    with Image.open(tmp_path / "full" / "samples_000008.png") as im:   # 2 x (x, aug, mask, map)
        assert im.size == (3 * 32, 3 * 64)                               # 8 tiles, near-square


def test_plugin_presets_and_defaults_are_the_originals():
    spec = plugin.adbench_methods()[0]
    assert spec.name == "realnet" and spec.kind == "hybrid"
    assert {"smoke", "cpu-quick", "gpu-quick", "paper"} <= set(spec.presets)
    assert spec.presets["paper"] == {}
    d = spec.default_config
    assert (d["backbone"], d["layers"], d["afs_batches"], d["hidden_ratio"], d["channel_mult"],
            d["num_res_blocks"], d["attention_mult"], d["rrs_modes"], d["rrs_channels"],
            d["lr"], d["beta1"], d["beta2"], d["batch_size"], d["epochs"], d["score_pool"]) == \
        ("vgg16", ["block3", "block4", "block5"], 64, 0.5, [1, 2, 4], 2, [2, 4],
         ["max", "mean"], [256, 256], 1e-4, 0.9, 0.999, 16, 1000, 16)
    assert d["anomaly_source"] == "shared" and d["weights"] == "imagenet"
    assert all(set(p) <= set(d) for p in spec.presets.values())
    with pytest.raises(ConfigError, match="afs_channels"):
        RealNet(afs_channels=(8, 8)).network_config({"block3": 256, "block4": 512, "block5": 512})
    # cross-key checks a run can make before any folder exists
    with pytest.raises(ConfigError, match="synthesis: unknown key"):
        RealNet.validate_config({"synthesis": {"p_anomally": 0.5}})
    with pytest.raises(ConfigError, match="anomaly_folder is not set"):
        RealNet.validate_config({"anomaly_source": "folder"})
    with pytest.raises(ConfigError, match="rrs_modes"):
        RealNet.validate_config({"rrs_channels": [4]})
    RealNet.validate_config({**SMOKE})
