"""DRÆM: network shapes at 160x128, the losses against independent truth, the discriminative
head learning a blob, bit-exact resume after an interruption, state round trip, plugin
presets and an end-to-end run on synth."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from adbench import Context
from adbench.methods.draem import plugin
from adbench.methods.draem.detector import DRAEM
from adbench.methods.draem.networks import DiscriminativeNet, ReconstructiveNet
from adbench.methods.draem.training import CHECKPOINT_NAME, DraemTask, lr_factor, train_draem
from adbench.testing import synthetic_slices
from adbench.training.losses import focal_loss, ssim

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(rec_width=4, disc_width=4, batch_size=4, iterations=6, pool_size=8,
            checkpoint_interval=6, log_interval=3, sample_interval=6, num_samples=2)


@pytest.fixture(scope="module")
def fitted(one_thread):
    det = DRAEM(**TINY)
    return det.fit(synthetic_slices(8, seed=0, shape=(64, 32)), Context(seed=0))


def test_networks_at_160x128():
    R, D = ReconstructiveNet(4), DiscriminativeNet(4)
    x = torch.randn(2, 1, 160, 128)
    rec = R(x)
    assert rec.shape == (2, 1, 160, 128)
    assert D(torch.cat([rec, x], dim=1)).shape == (2, 2, 160, 128)
    # the original's widths: 5 encoder levels w..8w, 6 for the U-Net (shown at w = 2)
    assert [b[0].out_channels for b in ReconstructiveNet(2).encoder] == [2, 4, 8, 16, 16]
    assert [b[0].out_channels for b in DiscriminativeNet(2).encoder] == [2, 4, 8, 16, 16, 16]
    assert [b[-3].out_channels for b in ReconstructiveNet(2).decoder] == [8, 4, 2, 2]
    assert [b[-3].out_channels for b in DiscriminativeNet(2).decoder] == [16, 8, 4, 2, 2]
    with pytest.raises(ValueError, match="divisible by 32"):
        R(torch.zeros(1, 1, 160, 120))


def test_focal_and_ssim_against_independent_truth():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 5, 4, generator=g)
    target = torch.randint(0, 2, (2, 5, 4), generator=g)
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), ce, atol=1e-6)
    p_t = torch.softmax(logits, 1).gather(1, target[:, None])[:, 0]
    assert torch.allclose(focal_loss(logits, target, gamma=2.0),
                          (-(1 - p_t) ** 2 * p_t.log()).mean(), atol=1e-6)
    x = torch.rand(2, 1, 12, 10, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    assert torch.allclose(ssim(x.double(), y.double())[1], _ssim_by_loops(x[1, 0], y[1, 0]), atol=1e-9)


def _ssim_by_loops(x, y, size=11, sigma=1.5, L=2.0):
    """Wang et al. Eq. 13 pixel by pixel with an explicit Gaussian window (scipy's) over the
    zero-padded image, averaged: the definition, written independently of the conv version."""
    from scipy.signal.windows import gaussian

    g = gaussian(size, sigma)
    win = np.outer(g, g) / np.outer(g, g).sum()
    r = size // 2
    xp, yp = (np.pad(t.double().numpy(), r) for t in (x, y))
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    vals = []
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            px, py = xp[i:i + size, j:j + size], yp[i:i + size, j:j + size]
            mx, my = (win * px).sum(), (win * py).sum()
            vx, vy = (win * px * px).sum() - mx ** 2, (win * py * py).sum() - my ** 2
            cxy = (win * px * py).sum() - mx * my
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return torch.tensor(float(np.mean(vals)), dtype=torch.float64)


def test_lr_schedule_is_the_originals():
    assert [lr_factor(i, 10) for i in range(10)] == [1.0] * 8 + [0.2, pytest.approx(0.04)]


def test_discriminative_head_learns_a_blob():
    """D on concat(healthy, blobbed) learns to segment the blob: loss falls and the map's
    AUROC on held-out slices is high (the reconstruction input is the healthy slice, as a
    perfectly trained R would give)."""
    shape = (64, 32)
    torch.manual_seed(0)
    D = DiscriminativeNet(4)
    opt = torch.optim.Adam(D.parameters(), lr=1e-2)

    def batch(seed, n):
        healthy, blob = synthetic_slices(n, seed, shape=shape), synthetic_slices(n, seed, blob=True, shape=shape)
        return torch.cat([healthy.images, blob.images], 1), blob.lesion

    losses = []
    for step in range(40):   # AUROC > 0.997 at 40 steps for torch seeds 0-4
        x, m = batch(100 + step, 4)
        loss = focal_loss(D(x), m.long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    x, m = batch(7, 4)
    D.eval()
    with torch.no_grad():
        prob = torch.softmax(D(x), 1)[:, 1]
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    assert roc_auc_score(m.flatten().numpy(), prob.flatten().numpy()) > 0.95


def test_fit_predict_and_state_round_trip(fitted, tmp_path):
    x = synthetic_slices(3, seed=9, blob=True, shape=(64, 32)).images
    pred = fitted.predict(x, Context())
    assert pred.maps.shape == (3, 64, 32) and pred.reconstructions is None
    assert (pred.maps >= 0).all() and (pred.maps <= 1).all()
    # the image score: max of the 21 x 21 mean-filtered map, recomputed here
    smooth = torch.nn.functional.avg_pool2d(pred.maps[:, None], 21, 1, 10, count_include_pad=False)
    assert torch.allclose(pred.extras["score"], smooth.flatten(1).amax(1), atol=1e-6)
    torch.save(fitted.state_dict(), tmp_path / "state.pt")
    loaded = DRAEM(**fitted.get_params()).load_state_dict(
        torch.load(tmp_path / "state.pt", weights_only=True))
    b = loaded.predict(x, Context())
    assert torch.equal(pred.maps, b.maps) and torch.equal(pred.extras["score"], b.extras["score"])
    assert set(loaded.state_dict()) == set(fitted.state_dict())


class _Interrupt(Exception):
    pass


def test_interrupted_training_resumes_bit_for_bit(tmp_path, monkeypatch):
    s = synthetic_slices(8, seed=1, shape=(64, 32))
    det = DRAEM(**{**TINY, "iterations": 8, "checkpoint_interval": 3, "log_interval": 2,
                   "sample_interval": 4, "precision": "fp32"})
    cfg = det.training_config(s.images)
    train_draem(s.images, s.brain, cfg, tmp_path / "full", seed=3)
    original = DraemTask._main

    def interrupted(self, step):
        if step.iteration == 5:
            raise _Interrupt
        return original(self, step)

    monkeypatch.setattr(DraemTask, "_main", interrupted)
    with pytest.raises(_Interrupt):
        train_draem(s.images, s.brain, cfg, tmp_path / "split", seed=3)
    assert int(torch.load(tmp_path / "split" / CHECKPOINT_NAME, weights_only=True)["iteration"]) == 3
    monkeypatch.setattr(DraemTask, "_main", original)
    train_draem(s.images, s.brain, cfg, tmp_path / "split", seed=3)

    def records(name):
        lines = (tmp_path / name / "train_log.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items()
                 if k not in ("sec_per_iter", "images_per_s")} for line in lines]

    full, split = records("full"), records("split")
    assert [r["iteration"] for r in full] == [2, 4, 6, 8] and full == split
    assert full[-1]["lr"] == pytest.approx(1e-4 * (0.2 + 0.04) / 2)   # iterations 6, 7: x0.2, x0.04
    assert 0 < sum(r["anomalous"] for r in full) < len(full)   # p_anomaly 0.5: some, not all
    a = torch.load(tmp_path / "full" / CHECKPOINT_NAME, weights_only=True)
    b = torch.load(tmp_path / "split" / CHECKPOINT_NAME, weights_only=True)
    for key in ("R", "D"):
        for k, v in a[key].items():
            assert torch.equal(v, b[key][k]), (key, k)
    from PIL import Image
    with Image.open(tmp_path / "full" / "samples_000008.png") as im:  # 2 x (aug, rec, mask, map)
        assert im.size == (3 * 32, 3 * 64)                               # 8 tiles, 3 x 3 grid


def test_plugin_presets_and_defaults_are_the_originals():
    spec = plugin.adbench_methods()[0]
    assert spec.name == "draem" and spec.kind == "hybrid"
    assert not DRAEM.reconstructs   # the runner keeps the native map, no A_per
    assert {"smoke", "cpu-quick", "gpu-quick", "paper"} <= set(spec.presets)
    d = spec.default_config
    assert (d["rec_width"], d["disc_width"], d["lr"], d["batch_size"], d["epochs"],
            d["focal_gamma"]) == (128, 64, 1e-4, 8, 700, 2.0)
    assert all(set(p) <= set(d) for p in spec.presets.values())
    assert DRAEM(batch_size=8).n_iterations(100) == 700 * 12
