"""Weights resolution: order, error messages, layouts, provenance (adbench.nn.weights)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
import torchvision

import adbench.io
from adbench.nn import weights as W
from adbench.nn.weights import WeightsError, file_sha256, resolve_backbone, resolve_vgg16

# one torch thread: several test modules' convolutions oversubscribe 2 shared cores
pytestmark = pytest.mark.usefixtures("one_thread")

SHARED = Path(__file__).resolve().parents[3] / "shared" / "weights" / \
    "vgg16_features_imagenet_caffe_tvnorm.pth"
SHARED_SHA256 = "ac63408a6cfa24cc252131f32eb8e890e6b544f035928126fca50b4775b679b5"


@pytest.fixture(autouse=True)
def _no_user_weights(monkeypatch):
    for name in W.BACKBONES:
        monkeypatch.delenv(W.env_var(name), raising=False)


@pytest.fixture(scope="module")
def random_sd():
    return resolve_vgg16("random", seed=3)[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory, random_sd):
    """The random state dict saved once (59 MB each) in both layouts."""
    d = tmp_path_factory.mktemp("vgg_files")
    torch.save(random_sd, d / "features.pth")
    torch.save({**{f"features.{k}": v for k, v in random_sd.items()},
                "classifier.0.weight": torch.zeros(3, 2)}, d / "full.pth")
    return {"features": d / "features.pth", "full": d / "full.pth"}


def cheap(shapes: dict, offset: float = 0.0) -> dict[str, torch.Tensor]:
    """A state dict of the given shapes whose tensors share 1-element storages (tiny files)."""
    return {k: torch.full((1,), offset + i).expand(shape) for i, (k, shape) in
            enumerate(shapes.items())}


def place(src: Path, dst: Path) -> Path:
    """Hard-link a saved file to ``dst`` (no 59 MB rewrite; not a symlink, so paths stay)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.link(src, dst)
    return dst


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cache_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / "vgg16-397923af.pth"


def test_offline_without_weights_names_the_cache_file_and_both_ways():
    assert W.is_offline()
    with pytest.raises(WeightsError) as e:
        resolve_vgg16("imagenet")
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert str(cache_file()) in msg and W.torchvision_cache_file("vgg16") == cache_file()
    assert "ADBENCH_VGG16_WEIGHTS" in msg and "`--weights PATH`" in msg
    assert "vgg16-397923af.pth" in msg and str(cache_file().parent) in msg
    assert "random" in msg
    with pytest.raises(WeightsError):
        resolve_vgg16(None)  # None means "imagenet", never random


@pytest.mark.parametrize("name,file", [("resnet18", "resnet18-f37072fd.pth"),
                                       ("wide_resnet50_2", "wide_resnet50_2-95faca4d.pth")])
def test_offline_resnets_say_no_weights_are_available(name, file):
    with pytest.raises(WeightsError) as e:
        resolve_backbone(name, "imagenet")
    msg = str(e.value)
    assert str(Path(torch.hub.get_dir()) / "checkpoints" / file) in msg
    assert W.env_var(name) in msg and f"No offline ImageNet {name} weights" in msg


def _named_keys(msg: str) -> tuple[set[str], set[str]]:
    """(flags, config keys) a message names in backticks: `--weights PATH`, `--set K=V`,
    `runner.K`, `K`; command names (`adbench run`) are skipped."""
    import re

    flags, keys = set(), set()
    for tok in re.findall(r"`([^`]+)`", msg):
        if tok.startswith("--set "):
            keys.add(tok[len("--set "):].split("=", 1)[0])
        elif tok.startswith("--"):
            flags.add(tok.split()[0])
        elif not tok.startswith("adbench "):
            keys.add(tok)
    return flags, keys


@pytest.mark.parametrize("name", W.BACKBONES)
def test_missing_weights_message_names_only_real_flags_and_config_keys(name):
    """The ways the message offers exist: the --weights flag of `adbench run`, the config key
    `weights` of padim / patchcore / scrps or the runner, and ADBENCH_<NAME>_WEIGHTS."""
    from adbench.config import RUNNER_DEFAULTS
    from adbench.plugins import get_registry

    with pytest.raises(WeightsError) as e:
        resolve_backbone(name, "imagenet")
    msg = str(e.value)
    flags, keys = _named_keys(msg)
    assert "--weights" in flags and "weights" in keys and W.env_var(name) in msg
    assert flags <= {"--weights"}
    reg = get_registry()
    method_keys = set().union(*(reg.method(m).default_config for m in ("padim", "patchcore",
                                                                       "scrps")))
    real = method_keys | {f"runner.{k}" for k in RUNNER_DEFAULTS}
    assert keys <= real, f"message names keys that do not exist: {sorted(keys - real)}"
    assert "vgg16_weights" not in msg
    if name == "vgg16":  # the shared perceptual score is VGG16: its runner key is named too
        assert "runner.weights" in keys


def test_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(ValueError, match="vgg16, resnet18, wide_resnet50_2"):
        resolve_backbone("alexnet")


def test_env_variable_naming_a_missing_file(monkeypatch, tmp_path):
    missing = tmp_path / "nope.pth"
    monkeypatch.setenv("ADBENCH_VGG16_WEIGHTS", str(missing))
    with pytest.raises(WeightsError, match="ADBENCH_VGG16_WEIGHTS") as e:
        resolve_vgg16()
    assert str(missing) in str(e.value)


def test_explicit_missing_path_and_unknown_name(tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(WeightsError) as e:
        resolve_vgg16(str(missing))
    assert str(missing) in str(e.value)
    with pytest.raises(WeightsError, match="'random'"):
        resolve_vgg16("imagenet21k")


def test_corrupt_and_non_state_dict_files_are_named(tmp_path, files):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"this is not a torch file")
    with pytest.raises(WeightsError, match="could not read") as e:
        resolve_vgg16(str(bad))
    assert str(bad) in str(e.value)
    truncated = tmp_path / "truncated.pth"
    with open(files["features"], "rb") as f:
        truncated.write_bytes(f.read(100_000))
    with pytest.raises(WeightsError, match="truncated.pth"):
        resolve_vgg16(str(truncated))
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(WeightsError, match="not a state dict"):
        resolve_vgg16(str(listing))


def test_wrong_keys_and_wrong_shapes_are_rejected(tmp_path, random_sd):
    wrong = tmp_path / "wrong_keys.pth"
    torch.save({f"net.{k}": v for k, v in cheap(W.VGG16_FEATURE_SHAPES).items()}, wrong)
    with pytest.raises(WeightsError) as e:
        resolve_vgg16(str(wrong))
    assert str(wrong) in str(e.value) and "'0.weight'" in str(e.value)
    shaped = dict(cheap(W.VGG16_FEATURE_SHAPES), **{"10.weight": torch.zeros(256, 128, 1, 1)})
    bad_shape = tmp_path / "bad_shape.pth"
    torch.save(shaped, bad_shape)
    with pytest.raises(WeightsError, match=r"'10.weight' has shape \(256, 128, 1, 1\)"):
        resolve_vgg16(str(bad_shape))


def test_both_layouts_load_identically_with_sha256_provenance(files, random_sd):
    for path in (files["features"], files["full"]):
        sd, info = resolve_vgg16(str(path))
        assert set(sd) == set(W.VGG16_FEATURE_SHAPES) and len(sd) == 26
        assert all(torch.equal(sd[k], random_sd[k]) for k in sd)
        assert info == {"backbone": "vgg16", "source": "path", "path": str(path.resolve()),
                        "sha256": sha(path)}


def test_safetensors_files_load(tmp_path):
    from safetensors.torch import save_file

    sd = {k: torch.full(shape, float(i)) for i, (k, shape) in
          enumerate(W.VGG16_FEATURE_SHAPES.items())}
    path = tmp_path / "vgg16.safetensors"
    save_file(sd, str(path))
    loaded, info = resolve_vgg16(str(path))
    assert all(torch.equal(loaded[k], sd[k]) for k in sd) and info["sha256"] == sha(path)


def test_env_then_torchvision_cache_order(monkeypatch, tmp_path, files, random_sd):
    cached = place(files["full"], cache_file())  # torchvision's file has the full layout
    sd, info = resolve_vgg16("imagenet")
    assert info["source"] == "torchvision-cache" and info["path"] == str(cached.resolve())
    assert info["sha256"] == sha(cached) and torch.equal(sd["28.bias"], random_sd["28.bias"])
    env_file = tmp_path / "env.pth"
    torch.save(cheap(W.VGG16_FEATURE_SHAPES, offset=1.0), env_file)
    monkeypatch.setenv("ADBENCH_VGG16_WEIGHTS", str(env_file))
    sd, info = resolve_vgg16("imagenet")  # the environment variable wins over the cache
    assert info["source"] == "env" and info["sha256"] == sha(env_file) != sha(cached)
    assert torch.all(sd["0.weight"] == 1.0) and torch.all(sd["28.bias"] == 26.0)


def test_download_only_when_online_through_torchvisions_mechanism(monkeypatch, files,
                                                                    random_sd):
    calls = []

    def fake_load(url, model_dir=None, **kw):
        calls.append((url, model_dir, kw))
        target = place(files["full"], Path(model_dir) / url.rsplit("/", 1)[-1])
        return torch.load(target, weights_only=True)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_load)
    with pytest.raises(WeightsError):
        resolve_vgg16()
    assert calls == []  # ADBENCH_OFFLINE=1: never tried
    monkeypatch.delenv("ADBENCH_OFFLINE")
    sd, info = resolve_vgg16()
    url = torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    assert calls[0][0] == url and Path(calls[0][1]) == cache_file().parent
    assert calls[0][2]["check_hash"] is True and calls[0][2]["weights_only"] is True
    assert info["source"] == "download" and info["sha256"] == sha(cache_file())
    assert torch.equal(sd["0.bias"], random_sd["0.bias"])
    cache_file().unlink()

    def failing(url, **kw):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", failing)
    with pytest.raises(WeightsError, match="network unreachable") as e:
        resolve_vgg16()
    assert str(cache_file()) in str(e.value)


def test_random_weights_are_seeded_recorded_and_leave_global_rng_alone():
    state = torch.get_rng_state()
    a, info = resolve_vgg16("random", seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    b, _ = resolve_vgg16("random", seed=0)
    c, _ = resolve_vgg16("random", seed=1)
    assert info == {"backbone": "vgg16", "source": "random", "path": None, "sha256": None,
                    "seed": 0}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])
    assert {k: tuple(v.shape) for k, v in a.items()} == W.VGG16_FEATURE_SHAPES
    assert a["0.weight"].std() > 0 and torch.all(a["0.bias"] == 0)  # torchvision's VGG init


def test_sha256_is_computed_once_per_file(monkeypatch, tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"x" * 1000)
    real, count = hashlib.sha256, []
    monkeypatch.setattr(adbench.io.hashlib, "sha256", lambda *a: count.append(1) or real(*a))
    assert file_sha256(f) == real(b"x" * 1000).hexdigest()
    assert file_sha256(str(f)) == file_sha256(f) and len(count) == 1


def test_resnet18_file_with_classifier_and_without_bn_counters(tmp_path):
    sd, info = resolve_backbone("resnet18", "random", seed=2)
    assert not any(k.startswith("fc.") for k in sd) and info["source"] == "random"
    stored = cheap({k: v.shape for k, v in sd.items() if not k.endswith("num_batches_tracked")})
    stored["fc.weight"] = torch.zeros(1000, 512)
    path = tmp_path / "r18.pth"
    torch.save(stored, path)
    loaded, info = resolve_backbone("resnet18", str(path))
    assert set(loaded) == set(sd) and not any(k.startswith("fc.") for k in loaded)
    assert all(torch.equal(loaded[k], stored[k]) for k in stored if k in loaded)
    assert loaded["bn1.num_batches_tracked"].dtype == torch.long
    assert info["sha256"] == sha(path)
    vgg = tmp_path / "vgg.pth"
    torch.save(cheap(W.VGG16_FEATURE_SHAPES), vgg)
    with pytest.raises(WeightsError, match="vgg.pth' does not have the resnet18 layout"):
        resolve_backbone("resnet18", str(vgg))


def test_shared_imagenet_vgg16_when_present(monkeypatch):
    if not SHARED.is_file():
        pytest.skip(f"optional shared VGG16 weights not found at {SHARED}")
    sd, info = resolve_vgg16(str(SHARED))
    assert info["sha256"] == SHARED_SHA256 == sha(SHARED) and info["source"] == "path"
    monkeypatch.setenv("ADBENCH_VGG16_WEIGHTS", str(SHARED))
    sd_env, info_env = resolve_vgg16()
    assert info_env == dict(info, source="env")
    assert all(torch.equal(sd[k], sd_env[k]) for k in sd)

    from adbench.nn.backbones import VGG16_BLOCK_ENDS, FeatureExtractor

    with torch.device("meta"):
        tv = torchvision.models.vgg16().features
    tv.load_state_dict(torch.load(SHARED, weights_only=True), assign=True)
    tv.eval()
    fe = FeatureExtractor(weights=str(SHARED), layers=("block3", "block4", "block5"))
    assert fe.weights_info == info
    x = torch.rand(1, 1, 64, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h = (((x + 1) / 2).repeat(1, 3, 1, 1) - mean) / std
    with torch.no_grad():
        ours = fe(x)
        for i, layer in enumerate(tv[:VGG16_BLOCK_ENDS[-1]]):
            h = layer(h)
            j = VGG16_BLOCK_ENDS.index(i + 1) + 1 if i + 1 in VGG16_BLOCK_ENDS else None
            if j in (3, 4, 5):
                # caffe-scale activations (block 3 up to ~1e4): compare relative to the peak
                scale = h.abs().max().item()
                torch.testing.assert_close(ours[f"block{j}"], h, rtol=1e-5, atol=1e-6 * scale)
