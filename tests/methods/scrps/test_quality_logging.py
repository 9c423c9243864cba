"""Sample-quality metrics during StyleGAN2 training: logged at their interval, kept on resume,
and without effect on the training itself."""
from __future__ import annotations

import json

import pytest
import torch

from adbench.methods.scrps.stylegan_train import (STYLEGAN_PRESETS, config_digest, quality_reals,
                                                  resolve_config, train_stylegan)

pytestmark = pytest.mark.usefixtures("one_thread")

# tiny sizes, random VGG16 weights asked for by name; 32x32 keeps VGG16's block 5 at 2x2
CFG = dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=8, channel_max=4, batch_size=4,
           iterations=4, r1_interval=2, pl_weight=0.0, ema_kimg=0.002, checkpoint_interval=2,
           log_interval=1, sample_interval=4, num_samples=4, quality_interval=2,
           quality_reals=8, quality_weights="random")
QUALITY = {"kid_vgg", "fid_vgg", "swd", "quality_s"}
TIMING = {"sec_per_iter", "images_per_s", "quality_s"}   # wall-clock fields differ between runs


def _images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(12, 1, 32, 32, generator=g) * 2 - 1


def _log(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def _untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


class Stop(Exception):
    pass


def test_presets_and_digest():
    assert STYLEGAN_PRESETS["smoke"]["quality_interval"] == 0           # smoke metrics unchanged
    for name in ("cpu-quick", "cpu-long", "gpu-quick", "paper"):
        cfg = STYLEGAN_PRESETS[name]
        assert 0 < cfg["quality_interval"] <= cfg["iterations"]
        assert cfg["iterations"] % cfg["quality_interval"] == 0       # a score at the end
    # logging settings: a resume (and SCRPS's training folder) does not depend on them
    base = config_digest(CFG)
    assert config_digest({**CFG, "quality_interval": 0, "quality_reals": 3,
                          "quality_weights": "imagenet"}) == base
    assert config_digest({**CFG, "lr": 0.01}) != base
    with pytest.raises(ValueError, match="quality_interval"):
        resolve_config({"quality_interval": -1})
    imgs = _images()
    picked = quality_reals(imgs, resolve_config(CFG), seed=3)
    assert picked.shape == (8, 1, 32, 32)
    assert torch.equal(picked, quality_reals(imgs, resolve_config(CFG), seed=3))   # fixed by seed
    assert quality_reals(imgs, resolve_config({**CFG, "quality_reals": 50}), 3).shape[0] == 12


def test_missing_quality_weights_fail_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="quality_weights.*quality_interval=0"):
        train_stylegan(_images(), {**CFG, "quality_weights": str(tmp_path / "no-vgg.pth")},
                       tmp_path / "run", seed=0)
    assert not list((tmp_path / "run").glob("*.pt"))                   # no iteration ran


def test_metrics_logged_at_interval_and_resume_keeps_the_curve(tmp_path):
    imgs = _images()
    whole, cut, off = tmp_path / "whole", tmp_path / "cut", tmp_path / "off"
    G = train_stylegan(imgs, CFG, whole, seed=0)
    log = _log(whole)
    assert [r["iteration"] for r in log] == [1, 2, 3, 4]
    for r in log:   # every quality_interval iterations, in that iteration's record
        assert (QUALITY <= set(r)) == (r["iteration"] % 2 == 0)
        assert not QUALITY & set(r) or all(isinstance(r[k], float) for k in QUALITY)
    assert log[3]["swd"] > 0 and log[3]["fid_vgg"] > 0
    png = (whole / "quality.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert sorted(p.name for p in whole.glob("samples_*.png")) == ["samples_000004.png"]

    # interrupted after the record of iteration 3 (its checkpoint is iteration 2's), resumed
    def stop_at_3(msg: str) -> None:
        if msg.startswith("iteration=3 "):
            raise Stop

    with pytest.raises(Stop):
        train_stylegan(imgs, CFG, cut, seed=0, log=stop_at_3)
    assert [r["iteration"] for r in _log(cut)] == [1, 2, 3]
    G_cut = train_stylegan(imgs, {**CFG, "quality_reals": 8}, cut, seed=0)
    resumed = _log(cut)
    assert [r["iteration"] for r in resumed] == [1, 2, 3, 4]           # none lost, none twice
    assert _untimed(resumed) == _untimed(log)                          # same curve, bit for bit
    for a, b in zip(G.state_dict().values(), G_cut.state_dict().values()):
        assert torch.equal(a, b)

    # the metrics draw from no training stream: the losses without them are the same
    train_stylegan(imgs, {**CFG, "quality_interval": 0, "iterations": 2}, off, seed=0)
    plain = _log(off)
    assert not (off / "quality.png").exists() and not QUALITY & set(plain[1])
    assert _untimed(plain) == [{k: v for k, v in r.items() if k not in QUALITY}
                               for r in _untimed(log[:2])]
