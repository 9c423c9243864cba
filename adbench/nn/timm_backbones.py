"""timm backbones for the feature-based detectors: ``backbone="timm/<model>"``.

Any timm model that declares ``feature_info`` can back PatchCore or PaDiM, e.g.
``backbone: "timm/wide_resnet50_2"`` with ``layers: ["layer2", "layer3"]`` (PatchCore §4.1's
WideResNet-50 layers 2 and 3). Layer names are the module names of the model's
``feature_info`` ("act1", "layer1" … "layer4" for ResNets); each is tapped with timm's
``create_feature_extractor`` (torch.fx), cut after the deepest one. Input slices get the
model's ``pretrained_cfg`` mean and std instead of ImageNet's.

``weights`` is one of

* ``"imagenet"`` (or ``None``): the model's default pretrained weights (its
  ``pretrained_cfg``, e.g. ``timm/wide_resnet50_2.racm_in1k``), loaded by timm's own
  ``pretrained=True`` path from the file already in the Hugging Face hub cache
  (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``; source
  ``"timm-cache"``). When the file is not cached it is downloaded into that cache (source
  ``"download"``) unless ``ADBENCH_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``; then
  :class:`~adbench.errors.WeightsError` names both ways to provide it.
* a path to a state-dict file of the full timm model (``.pth``/``.pt`` via
  ``torch.load(weights_only=True)``, or ``.safetensors``), checked key by key: no key missing
  (the classifier may be), none extra, every shape equal (source ``"path"``).
* ``"random"``: timm's own initialisation under ``torch.manual_seed(seed)`` (source
  ``"random"``), only when asked for by name.

timm is imported only here, and only when a ``"timm/..."`` backbone is built.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import torch
from torch import nn

from adbench.errors import ConfigError, WeightsError
from adbench.io import file_sha256
from adbench.nn.backbones import Trunk
from adbench.nn.extractor import TIMM_PREFIX
from adbench.nn.weights import is_offline, read_state_file

__all__ = ["TimmStructure", "structure", "resolve", "TimmTrunk", "hub_cache_dir", "cached_file"]

_HF_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order of preference


def import_timm(backbone: str):
    """The ``timm`` module, or a ConfigError saying how to install it."""
    try:
        import timm
    except ImportError as e:
        raise ConfigError(f"backbone {backbone!r} needs the timm package, which is not "
                          f"installed ({e}); install it with `pip install timm` (or "
                          f"`pip install 'adbench[timm]'`), or choose a torchvision backbone "
                          f"(vgg16, resnet18, wide_resnet50_2)") from e
    return timm


def _create(backbone: str, **kwargs) -> nn.Module:
    timm = import_timm(backbone)
    name = backbone[len(TIMM_PREFIX):]
    arch = name.split(".", 1)[0]  # "resnet18.a1_in1k": architecture and pretrained tag
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=6)
        raise ValueError(f"backbone {backbone!r}: timm has no model {arch!r}"
                         + (f"; close names: {', '.join(close)}" if close else "")
                         + "; list them with `python -c \"import timm; print(timm.list_models("
                           "'resnet*'))\"`")
    return timm.create_model(name, **kwargs)


class TimmStructure:
    """A timm model built on the meta device: its feature layers, input normalisation and
    pretrained config, without allocating or initialising any weight."""

    def __init__(self, backbone: str):
        self.backbone = backbone
        self.name = backbone[len(TIMM_PREFIX):]
        with torch.device("meta"):
            self.model = _create(backbone, pretrained=False)
        self.cfg = dict(getattr(self.model, "pretrained_cfg", None) or {})
        info = getattr(self.model, "feature_info", None)
        if not info:
            raise ValueError(f"backbone {backbone!r}: the timm model declares no feature_info, "
                             f"so adbench cannot name its layers; choose a convolutional timm "
                             f"model (e.g. timm/resnet18, timm/wide_resnet50_2)")
        self._layers = {d["module"]: (int(d["num_chs"]), int(d["reduction"])) for d in info}

    def feature_layers(self) -> dict[str, tuple[int, int]]:
        """{module name: (channels, stride)} of the model's ``feature_info``, shallow first."""
        return dict(self._layers)

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The RGB mean and std the pretrained weights expect (timm's ``pretrained_cfg``)."""
        mean = tuple(float(m) for m in self.cfg.get("mean", (0.485, 0.456, 0.406)))
        std = tuple(float(s) for s in self.cfg.get("std", (0.229, 0.224, 0.225)))
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"backbone {self.backbone!r}: pretrained_cfg mean/std {mean}/{std} "
                             f"are not RGB (3 values each); choose an RGB timm model")
        return mean, std


def structure(backbone: str) -> TimmStructure:
    """:class:`TimmStructure` of ``backbone`` ("timm/<model>")."""
    return TimmStructure(backbone)


class TimmTrunk(Trunk):
    """A timm model tapped at ``layers`` (module names of its ``feature_info``).

    forward: (B, 3, H, W) normalised RGB → [(B, C_l, H / s_l, W / s_l) for l in ``layers``].
    """

    def __init__(self, model: nn.Module, layers: tuple[str, ...]):
        from timm.models import create_feature_extractor  # timm's leaf modules for torch.fx

        body = create_feature_extractor(model, return_nodes={n: n for n in layers})
        left = [k for k, t in body.state_dict().items() if t.is_meta]
        if left:  # a key the weights did not provide is on the path to a tapped layer
            raise WeightsError(f"timm backbone: {len(left)} tensors on the path to layers "
                               f"{tuple(layers)} have no weights (first: {left[0]!r})")
        super().__init__(body, tuple(layers))
        self.layers = tuple(layers)


# -- weights ------------------------------------------------------------------------------
def resolve(s: TimmStructure, weights: str | None = "imagenet", *,
            seed: int = 0) -> tuple[nn.Module, dict]:
    """The timm model of ``s`` with its weights (CPU, eval mode) and their provenance dict
    ``{"backbone", "source", "path", "sha256"}`` (plus ``"seed"`` for random weights)."""
    if weights is None or weights == "imagenet":
        model, info = _imagenet(s)
    elif not isinstance(weights, (str, os.PathLike)):
        raise WeightsError(f"{s.backbone} weights: got {weights!r} ({type(weights).__name__}); "
                           f"expected 'imagenet', 'random' or the path of a state-dict file")
    elif weights == "random":
        with torch.random.fork_rng(devices=[]):  # timm's init draws from the global generator
            torch.manual_seed(int(seed))
            model = _create(s.backbone, pretrained=False)
        info = {"backbone": s.backbone, "source": "random", "path": None, "sha256": None,
                "seed": int(seed)}
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"{s.backbone} weights file {str(path)!r} does not exist. "
                               f"Expected 'imagenet', 'random' or the path of a state-dict file "
                               f"of timm model {s.name!r} (torch.save of its state_dict(), or "
                               f".safetensors)")
        model = s.model  # the meta structure; the file's tensors are assigned to it
        model.load_state_dict(_checked_state(s, path), strict=False, assign=True)
        info = _provenance(s.backbone, "path", path)
    return model.eval(), info


def _provenance(backbone: str, source: str, path: Path) -> dict:
    return {"backbone": backbone, "source": source, "path": str(Path(path).resolve()),
            "sha256": file_sha256(path)}


def _checked_state(s: TimmStructure, path: Path) -> dict[str, torch.Tensor]:
    """The file's state dict, checked against the model's keys and shapes (strict)."""
    sd = read_state_file(path, f"the state_dict() of timm model {s.name!r}")
    expected = {k: tuple(v.shape) for k, v in s.model.state_dict().items()}
    head = s.cfg.get("classifier") or ()
    head = (head,) if isinstance(head, str) else tuple(head)
    optional = {k for k in expected if k.endswith("num_batches_tracked")
                or any(k == h or k.startswith(h + ".") for h in head)}
    missing = [k for k in expected if k not in sd and k not in optional]
    extra = [k for k in sd if k not in expected]
    if missing or extra:
        got = ", ".join(list(sd)[:4]) + (" …" if len(sd) > 4 else "")
        want = ", ".join(list(expected)[:4]) + " …"
        raise WeightsError(
            f"weights file {str(path)!r} is not a state dict of timm model {s.name!r}: "
            f"{len(missing)} keys missing" + (f" (first: {missing[0]!r})" if missing else "")
            + f", {len(extra)} unexpected" + (f" (first: {extra[0]!r})" if extra else "")
            + f"; got keys [{got}], expected [{want}] (the classifier "
              f"{', '.join(head) or 'head'} may be left out)")
    for k, v in sd.items():
        if tuple(v.shape) != expected[k]:
            raise WeightsError(f"weights file {str(path)!r}: {k!r} has shape {tuple(v.shape)}, "
                               f"expected {expected[k]} for timm model {s.name!r}")
    out = {k: (v if k.endswith("num_batches_tracked") else v.float()) for k, v in sd.items()}
    for k in optional - set(sd):
        if k.endswith("num_batches_tracked"):
            out[k] = torch.zeros((), dtype=torch.long)
    return out


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _hub_id(s: TimmStructure) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(repo id, revision, candidate file names) of the pretrained weights on the hub."""
    hub_id = s.cfg.get("hf_hub_id")
    if not hub_id:
        return None, None, ()
    repo, _, revision = str(hub_id).partition("@")
    name = s.cfg.get("hf_hub_filename")
    return repo, revision or None, (name,) if name else _HF_FILES


def cached_file(s: TimmStructure) -> Path | None:
    """The pretrained weights file of ``s`` when it is in the hub (or torch hub) cache."""
    repo, revision, names = _hub_id(s)
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=str(hub_cache_dir()),
                                           revision=revision)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
        return None
    url = s.cfg.get("url")
    if url:  # older configs without a hub id: timm downloads into torch.hub's cache
        path = Path(torch.hub.get_dir()) / "checkpoints" / str(url).rsplit("/", 1)[-1]
        return path if path.is_file() else None
    return None


def _where(s: TimmStructure) -> str:
    repo, revision, names = _hub_id(s)
    if repo:
        return (f"the Hugging Face hub cache {str(hub_cache_dir())!r} (repo {repo!r}"
                f"{f' revision {revision!r}' if revision else ''}, file {' or '.join(names)})")
    url = s.cfg.get("url")
    if url:
        return f"torch.hub's cache {str(Path(torch.hub.get_dir()) / 'checkpoints')!r} ({url})"
    return "nowhere: its pretrained_cfg names no hub repo and no url"


def _missing_message(s: TimmStructure, why: str) -> str:
    return (f"ImageNet weights of timm model {s.name!r} (backbone {s.backbone!r}) not found in "
            f"{_where(s)}, and {why}. Provide them in one of two ways: (1) fill the timm / "
            f"Hugging Face cache once on a machine with network access, e.g. `python -c \"import "
            f"timm; timm.create_model('{s.name}', pretrained=True)\"` (set HF_HOME or "
            f"HF_HUB_CACHE to use another cache folder), then copy it here; or (2) point the "
            f"config key `weights` at a local state-dict file of that model (`--set "
            f"weights=PATH`; `--weights` is the VGG16 of the perceptual score). For tests "
            f"and smoke runs, weights='random' uses seeded random weights.")


def _offline() -> bool:
    hf = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return is_offline() or hf not in ("", "0", "false", "no")


def _download(s: TimmStructure) -> Path:
    repo, revision, names = _hub_id(s)
    if repo:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import EntryNotFoundError

        for name in names[:-1]:
            try:
                return Path(hf_hub_download(repo, name, revision=revision,
                                            cache_dir=str(hub_cache_dir())))
            except EntryNotFoundError:
                continue
        return Path(hf_hub_download(repo, names[-1], revision=revision,
                                    cache_dir=str(hub_cache_dir())))
    url = s.cfg.get("url")
    if not url:
        raise WeightsError(_missing_message(s, "timm knows no source for them"))
    path = Path(torch.hub.get_dir()) / "checkpoints" / str(url).rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(str(url), str(path), progress=False)
    return path


def _imagenet(s: TimmStructure) -> tuple[nn.Module, dict]:
    path, source = cached_file(s), "timm-cache"
    if path is None:
        if _offline():
            raise WeightsError(_missing_message(s, "downloading is disabled (ADBENCH_OFFLINE=1 "
                                                   "or HF_HUB_OFFLINE=1)"))
        try:
            path, source = _download(s), "download"
        except WeightsError:
            raise
        except Exception as e:  # no network, proxy, missing repo: all end in the same advice
            raise WeightsError(_missing_message(s, f"downloading failed ({type(e).__name__}: "
                                                   f"{e})")) from e
    # timm's own pretrained loading (its filters and checks), from the file found above only
    model = _create(s.backbone, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    return model, _provenance(s.backbone, source, path)
