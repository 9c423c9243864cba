"""MediCLIP: the map and losses by hand, finite maps of the slice shape with random weights,
weights from a file equal to the weights saved there, the refusal of pretrained mode without a
checkpoint (before any run folder), exact state round trip, the contract suite with explicit
random weights, and an end-to-end smoke run on synth (slow)."""
from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from adbench import Context
from adbench.cli import main
from adbench.errors import WeightsError
from adbench.methods.mediclip import plugin
from adbench.methods.mediclip.detector import MediCLIP
from adbench.methods.mediclip.model import anomaly_probability, build_clip, clip_input, patch_tokens
from adbench.methods.mediclip.prompts import ABNORMAL_STATES, NORMAL_STATES
from adbench.methods.mediclip.training import dice_loss, focal_loss
from adbench.methods.mediclip.weights import ENV_VAR, resolve_clip_file
from adbench.testing import check_detector, synthetic_slices

pytestmark = pytest.mark.usefixtures("one_thread")

SMOKE = {**plugin.PRESETS["smoke"], "clip_weights": "random"}


@pytest.fixture(autouse=True)
def _no_clip_cache(monkeypatch, tmp_path_factory):
    """open_clip's caches (HF hub, ~/.cache/clip) and ADBENCH_CLIP_WEIGHTS point nowhere."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    return home


@pytest.fixture(scope="module")
def fitted(one_thread, tmp_path_factory):
    det = MediCLIP(**SMOKE)
    det.fit(synthetic_slices(8, seed=0), Context(seed=3, workdir=tmp_path_factory.mktemp("mc")))
    return det


def test_anomaly_probability_and_losses_by_hand():
    # unit features equal to the abnormal text column: logits (normal 0, abnormal 1) everywhere
    text = torch.eye(2)                                   # (C=2, states=2)
    feats = [torch.tensor([0.0, 1.0]).expand(1, 3, 2, 2)] * 2
    p = anomaly_probability(feats, text, (5, 4))
    assert p.shape == (1, 2, 5, 4)
    torch.testing.assert_close(p[:, 1], torch.full((1, 5, 4), math.e / (1 + math.e)))
    # focal loss without smoothing: -(1 - p_t)^2 log p_t, p_t = 0.75
    prob = torch.tensor([0.25, 0.75]).view(1, 2, 1, 1)
    mask = torch.ones(1, 1, 1, 1)
    torch.testing.assert_close(focal_loss(prob, mask, smooth=0.0),
                               torch.tensor(-(0.25 ** 2) * math.log(0.75)))
    # dice with smoothing 1: perfect -> 0; nothing predicted on 4 lesion pixels -> 1 - 1/5
    ones = torch.ones(1, 2, 2)
    assert float(dice_loss(ones, ones)) == pytest.approx(0.0)
    assert float(dice_loss(torch.zeros(1, 2, 2), ones)) == pytest.approx(0.8)


def test_clip_input_and_patch_tokens():
    x = torch.full((2, 1, 160, 128), -1.0)                # black: 0 before normalisation
    inp = clip_input(x, 96, (0.5, 0.4, 0.3), (0.1, 0.2, 0.3))
    assert inp.shape == (2, 3, 96, 96)
    torch.testing.assert_close(inp[:, :, 0, 0], torch.tensor([[-5.0, -2.0, -1.0]] * 2))
    clip, _ = build_clip("tiny", "random", seed=0)
    toks = patch_tokens(clip, inp, [1, 3])
    assert [tuple(t.shape) for t in toks] == [(2, 64, 6, 6)] * 2    # width 64, 96 / 16 = 6
    with pytest.raises(ValueError, match=r"\[4\] outside 1\.\.3"):
        patch_tokens(clip, inp, [1, 4])


def test_random_weights_give_finite_maps_of_the_slice_shape(fitted):
    x = synthetic_slices(3, seed=5, blob=True).images
    pred = fitted.predict(x)
    assert pred.maps.shape == (3, 160, 128) and pred.maps.dtype == torch.float32
    assert torch.isfinite(pred.maps).all() and 0 <= pred.maps.min() and pred.maps.max() <= 1
    torch.testing.assert_close(pred.extras["score"], pred.maps.flatten(1).amax(1))
    assert fitted.weights_info_ == {"backbone": "clip:tiny", "source": "random", "path": None,
                                    "sha256": None, "seed": 3}
    # the prompt contexts are trained: one iteration leaves them elsewhere than three
    untrained = MediCLIP(**{**SMOKE, "iterations": 1}).fit(synthetic_slices(8, seed=0),
                                                           Context(seed=3))
    assert not torch.equal(untrained.head_.prompts.ctx_abnormal,
                           fitted.head_.prompts.ctx_abnormal)
    assert fitted.head_.prompts.ctx_normal.shape == (len(NORMAL_STATES), 4, 32)
    assert fitted.head_.prompts.ctx_abnormal.shape == (len(ABNORMAL_STATES), 4, 32)


def test_training_on_synthetic_anomalies_finds_a_blob():
    """30 iterations on synthetic anomalies of healthy ellipses make P(abnormal) rank a bright
    blob above healthy brain (pixel AUROC inside the brain, sklearn's; measured 0.86 here,
    0.96 after 150 iterations, 0.66 after 3)."""
    from sklearn.metrics import roc_auc_score
    det = MediCLIP(**{**SMOKE, "k_shot": 8, "batch_size": 4, "n_ctx": 8, "iterations": 30})
    det.fit(synthetic_slices(32, seed=0), Context(seed=0))
    test = synthetic_slices(8, seed=11, blob=True)
    maps = det.predict(test.images).maps
    assert roc_auc_score(test.lesion[test.brain].numpy(), maps[test.brain].numpy()) > 0.75


def test_state_round_trip_is_exact_and_checks_the_clip_weights(fitted, tmp_path):
    x = synthetic_slices(3, seed=9, blob=True).images
    torch.save(fitted.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert not any("clip." in k and k.startswith("head.") for k in state)   # CLIP is not saved
    loaded = MediCLIP(**SMOKE).load_state_dict(state)
    assert torch.equal(loaded.predict(x).maps, fitted.predict(x).maps)
    assert loaded.weights_info_ == fitted.weights_info_
    state["clip.fingerprint"] = state["clip.fingerprint"] + 1.0
    with pytest.raises(ValueError, match="CLIP weights now behind clip_weights"):
        MediCLIP(**SMOKE).load_state_dict(state)


def test_interrupted_training_resumes_bit_for_bit(tmp_path):
    data = synthetic_slices(6, seed=2)
    straight = MediCLIP(**{**SMOKE, "iterations": 4}).fit(data, Context(seed=1, workdir=tmp_path / "a"))
    MediCLIP(**{**SMOKE, "iterations": 2}).fit(data, Context(seed=1, workdir=tmp_path / "b"))
    resumed = MediCLIP(**{**SMOKE, "iterations": 4}).fit(data, Context(seed=1, workdir=tmp_path / "b"))
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (log,) = (tmp_path / "b").glob("mediclip-*/train_log.jsonl")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss_focal"]) and math.isfinite(r["loss_dice"]) for r in records)


def test_weights_from_a_file_and_from_open_clips_cache(tmp_path, _no_clip_cache):
    ref, _ = build_clip("tiny", "random", seed=7)
    path = tmp_path / "tiny.pt"
    torch.save(ref.state_dict(), path)
    clip, info = build_clip("tiny", str(path))
    assert info["source"] == "path" and info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    for a, b in zip(ref.state_dict().values(), clip.state_dict().values()):
        assert torch.equal(a, b)
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match=r"could not load CLIP checkpoint .*other\.pt"):
        build_clip("tiny", str(tmp_path / "other.pt"))
    # the hub layout open_clip writes: models--<org>--<name>/snapshots/<rev>/<file>
    assert resolve_clip_file() is None
    snap = _no_clip_cache / "hub/models--timm--vit_base_patch16_clip_224.openai/snapshots/abc"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"x")
    assert resolve_clip_file() == (snap / "open_clip_model.safetensors", "open_clip-cache")


def test_pretrained_mode_without_a_checkpoint_exits_2_before_any_run_folder(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["run", "--method", "mediclip", "--dataset", "synth", "--preset", "smoke", "-q",
            "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert not out.exists()
    for needle in ("open_clip_model.safetensors", "ViT-B-16.pt", "clip_weights", ENV_VAR,
                   "HF_HUB_CACHE", "cache_dir", "--set clip_weights=random"):
        assert needle in err, needle
    with pytest.raises(Exception, match="no pretrained weights"):   # the cross-key check
        MediCLIP.validate_config({**SMOKE, "clip_weights": "pretrained", "clip_model": "tiny"})


def test_detector_contract_with_explicit_random_weights():
    check_detector(plugin.adbench_methods()[0], config=SMOKE)


def test_plugin_presets_and_defaults_are_the_authors():
    spec = plugin.adbench_methods()[0]
    assert spec.name == "mediclip" and spec.kind == "hybrid"
    assert {"smoke", "cpu-quick", "gpu-quick", "paper"} <= set(spec.presets)
    assert spec.presets["paper"] == {} and "clip_weights" not in spec.presets["smoke"]
    d = spec.default_config
    assert (d["clip_model"], d["clip_weights"], d["n_ctx"], d["k_shot"], d["lr"], d["beta1"],
            d["beta2"], d["batch_size"], d["epochs"]) == \
        ("ViT-B-16", "pretrained", 8, 16, 1e-3, 0.5, 0.999, 8, 200)
    assert (len(NORMAL_STATES), len(ABNORMAL_STATES)) == (10, 11)
