"""timm backbones ("timm/<model>"): layers, weights sources, errors (adbench.nn.timm_backbones).

Random weights only, asked for by name; "imagenet" is exercised against an empty and a
hand-filled Hugging Face cache in a temporary HF_HOME, never the network.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adbench.errors import ConfigError, WeightsError
from adbench.nn import timm_backbones as T  # imports timm only when a timm model is built
from adbench.nn.backbones import FeatureExtractor
from adbench.nn.extractor import TORCHVISION_BACKBONES, Backbone
from adbench.params import check_config

timm = pytest.importorskip("timm")

# one torch thread: several test modules' convolutions oversubscribe 2 shared cores
pytestmark = pytest.mark.usefixtures("one_thread")

WRN_LAYERS = {"act1": (64, 2), "layer1": (256, 4), "layer2": (512, 8), "layer3": (1024, 16),
              "layer4": (2048, 32)}


@pytest.fixture(autouse=True)
def _empty_hub_cache(monkeypatch, tmp_path_factory):
    """A private, empty Hugging Face cache for every test (TORCH_HOME: tests/conftest.py)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def slices(b: int, h: int = 64, w: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def r18():
    return FeatureExtractor("timm/resnet18", ("layer2", "layer3"), weights="random", seed=1)


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    """The seed-1 random timm resnet18 as a full state-dict file (.pth)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        sd = timm.create_model("resnet18").state_dict()
    path = tmp_path_factory.mktemp("timm_files") / "resnet18_random.pth"
    torch.save(sd, path)
    return path, sd


def test_timm_resnet18_shapes_normalisation_and_provenance(r18):
    with torch.no_grad():
        out, al = r18(slices(2)), r18.aligned(slices(2))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"layer2": (2, 128, 8, 6),
                                                           "layer3": (2, 256, 4, 3)}
    assert r18.channels == {"layer2": 128, "layer3": 256} and r18.out_channels == 384
    assert r18.strides == {"layer2": 8, "layer3": 16} and al.shape == (2, 384, 8, 6)
    assert r18.weights_info == {"backbone": "timm/resnet18", "source": "random", "path": None,
                                "sha256": None, "seed": 1}
    cfg = timm.create_model("resnet18", pretrained=False).pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    x = slices(1, 8, 8)
    torch.testing.assert_close(r18.to_rgb(x), ((x + 1) / 2 - mean) / std)
    assert not any(p.requires_grad for p in r18.parameters())
    assert not hasattr(r18.trunk.body, "layer4")  # cut after the deepest requested layer


def test_timm_features_equal_timms_own_features_only_model(r18, r18_file):
    """Independent path: timm's features_only=True network with the same weights."""
    _, sd = r18_file
    ref = timm.create_model("resnet18", features_only=True, out_indices=(2, 3))
    ref.load_state_dict({k: v for k, v in sd.items() if not k.startswith("fc.")}, strict=False)
    ref.eval()
    x = slices(2, seed=3)
    with torch.no_grad():
        ours, theirs = r18(x), ref(r18.to_rgb(x))
    assert (ours["layer2"] - theirs[0]).abs().max().item() == 0.0
    assert (ours["layer3"] - theirs[1]).abs().max().item() == 0.0


def test_wide_resnet50_2_layer_names_resolve_on_the_meta_device():
    s = T.structure("timm/wide_resnet50_2")
    assert s.feature_layers() == WRN_LAYERS
    assert all(p.is_meta for p in s.model.parameters())  # nothing allocated or initialised
    with pytest.raises(ValueError, match=r"'act1', 'layer1', 'layer2', 'layer3', 'layer4'"):
        FeatureExtractor("timm/wide_resnet50_2", ("layer2", "block3"), weights="random")


def test_unknown_layer_and_model_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"got \('layer9',\).*'layer1', 'layer2'"):
        FeatureExtractor("timm/resnet18", ("layer9",), weights="random")
    with pytest.raises(ValueError, match=r"'block3'.*'act1', 'layer1'"):  # VGG names on timm
        FeatureExtractor("timm/resnet18", weights="random")
    with pytest.raises(ValueError, match="no model 'resnet81'.*resnet18"):
        FeatureExtractor("timm/resnet81", ("layer2",), weights="random")


def test_offline_imagenet_without_cache_names_both_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))
    with pytest.raises(WeightsError) as e:
        FeatureExtractor("timm/resnet18", ("layer2", "layer3"), weights="imagenet")
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    # way 1: the timm / HF cache, with the model name and where it was looked for
    assert "timm / Hugging Face cache" in msg and "'resnet18'" in msg
    assert "timm/resnet18.a1_in1k" in msg and str(tmp_path / "empty_hf" / "hub") in msg
    # way 2: a local state-dict file through the config key `weights`
    assert "local state-dict file" in msg and "--set weights=PATH" in msg
    assert "ADBENCH_OFFLINE=1" in msg and not list((tmp_path / "empty_hf").rglob("*.safetensors"))


def test_hf_hub_offline_is_honoured_even_without_adbench_offline(monkeypatch):
    monkeypatch.delenv("ADBENCH_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_download(*a, **k):
        raise AssertionError("downloaded although HF_HUB_OFFLINE=1")

    monkeypatch.setattr(T, "_download", no_download)
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE"):
        FeatureExtractor("timm/resnet18", ("layer2",), weights="imagenet")


def _fill_hub_cache(hf_home: Path, repo: str, sd: dict) -> Path:
    """Lay out ``sd`` as huggingface_hub stores a downloaded model.safetensors."""
    from safetensors.torch import save_file

    rev = "0" * 40
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(rev)
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / "model.safetensors"))
    return snap / "model.safetensors"


def test_imagenet_loads_from_the_hub_cache_through_timm(tmp_path, monkeypatch, r18, r18_file):
    _, sd = r18_file
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    file = _fill_hub_cache(tmp_path / "hf", "timm/resnet18.a1_in1k", sd)
    fe = FeatureExtractor("timm/resnet18", ("layer2", "layer3"), weights="imagenet")
    info = fe.weights_info
    assert info["source"] == "timm-cache" and info["path"] == str(file.resolve())
    assert info["backbone"] == "timm/resnet18" and len(info["sha256"]) == 64
    x = slices(1, seed=5)
    with torch.no_grad():
        assert torch.equal(fe.aligned(x), r18.aligned(x))


def test_online_download_goes_into_the_hub_cache_and_failures_name_both_ways(
        tmp_path, monkeypatch, r18, r18_file):
    import huggingface_hub

    _, sd = r18_file
    monkeypatch.delenv("ADBENCH_OFFLINE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    asked = []

    def fake_download(repo, filename, revision=None, cache_dir=None):  # what the hub would do
        asked.append((repo, filename, cache_dir))
        return str(_fill_hub_cache(Path(cache_dir).parent, repo, sd))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    fe = FeatureExtractor("timm/resnet18", ("layer2",), weights="imagenet")
    assert asked == [("timm/resnet18.a1_in1k", "model.safetensors", str(tmp_path / "hf" / "hub"))]
    assert fe.weights_info["source"] == "download"
    x = slices(1, seed=7)
    with torch.no_grad():
        assert torch.equal(fe(x)["layer2"], r18(x)["layer2"])

    def no_network(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf2"))
    with pytest.raises(WeightsError, match=r"downloading failed \(OSError: network is "
                                           r"unreachable\).*timm / Hugging Face cache.*"
                                           r"--set weights=PATH"):
        FeatureExtractor("timm/resnet18", ("layer2",), weights="imagenet")


@pytest.mark.parametrize("layout", ["full.pth", "no_fc.pth", "full.safetensors"])
def test_local_state_dict_file_equals_the_random_run(tmp_path, r18, r18_file, layout):
    _, sd = r18_file
    path = tmp_path / layout
    if layout == "no_fc.pth":
        torch.save({k: v for k, v in sd.items() if not k.startswith("fc.")}, path)
    elif layout.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    fe = FeatureExtractor("timm/resnet18", ("layer2", "layer3"), weights=str(path))
    assert fe.weights_info["source"] == "path" and fe.weights_info["path"] == str(path.resolve())
    x = slices(2, seed=6)
    with torch.no_grad():
        assert torch.equal(fe.aligned(x), r18.aligned(x))


def test_state_dict_files_with_other_keys_or_shapes_are_refused(tmp_path, r18_file):
    _, sd = r18_file
    bad = tmp_path / "vgg_like.pth"
    torch.save({"0.weight": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match=r"vgg_like.pth' is not a state dict of timm model "
                                           r"'resnet18'.*missing.*'conv1.weight'"):
        FeatureExtractor("timm/resnet18", ("layer2",), weights=str(bad))
    extra = tmp_path / "extra.pth"
    torch.save({**sd, "head.extra": torch.zeros(1)}, extra)
    with pytest.raises(WeightsError, match=r"extra.pth'.*1 unexpected \(first: 'head.extra'\)"):
        FeatureExtractor("timm/resnet18", ("layer2",), weights=str(extra))
    shape = tmp_path / "shape.pth"
    torch.save({**sd, "conv1.weight": torch.zeros(64, 1, 7, 7)}, shape)
    with pytest.raises(WeightsError, match=r"shape.pth': 'conv1.weight' has shape"):
        FeatureExtractor("timm/resnet18", ("layer2",), weights=str(shape))
    with pytest.raises(WeightsError, match="does not exist"):
        FeatureExtractor("timm/resnet18", ("layer2",), weights=str(tmp_path / "nope.pth"))


def test_random_weights_are_seeded_and_leave_the_global_rng_alone(r18):
    before = torch.random.get_rng_state()
    again = FeatureExtractor("timm/resnet18", ("layer2", "layer3"), weights="random", seed=1)
    other = FeatureExtractor("timm/resnet18", ("layer2",), weights="random", seed=2)
    assert torch.equal(torch.random.get_rng_state(), before)
    x = slices(1)
    with torch.no_grad():
        assert torch.equal(again(x)["layer2"], r18(x)["layer2"])
        assert not torch.equal(other(x)["layer2"], r18(x)["layer2"])


def test_missing_timm_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install timm.*adbench\[timm\]"):
        FeatureExtractor("timm/resnet18", ("layer2",), weights="random")


def test_timm_is_imported_only_for_a_timm_backbone():
    code = ("import sys; from adbench.plugins import get_registry; get_registry(); "
            "from adbench.nn.backbones import FeatureExtractor; "
            "FeatureExtractor('resnet18', ('layer1',), weights='random'); "
            "assert 'timm' not in sys.modules, 'timm imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_backbone_hint_accepts_timm_names_and_explains_the_valid_ones():
    from adbench.methods.padim.detector import PaDiM

    for name in (*TORCHVISION_BACKBONES, "timm/wide_resnet50_2", "timm/resnet18.a1_in1k"):
        check_config(PaDiM, {"backbone": name}, "method 'padim'")
    for bad in ("vit", "timm/", "TIMM/resnet18", 3):
        with pytest.raises(ConfigError, match=r"'backbone'.*'vgg16', 'resnet18', "
                                              r"'wide_resnet50_2' or 'timm/<model>'"):
            check_config(PaDiM, {"backbone": bad}, "method 'padim'")
    assert Backbone.__origin__ is str  # type checkers see a str
