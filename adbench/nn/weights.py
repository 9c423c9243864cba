"""Pretrained-weights resolution for every backbone adbench uses (architecture §8).

One place decides where a backbone's weights come from, so every method and the shared
perceptual score use the same rule, and every result can record what it used.

``weights`` is one of

* ``"imagenet"`` (or ``None``), tried in this order:

  1. the environment variable ``ADBENCH_<NAME>_WEIGHTS`` (``ADBENCH_VGG16_WEIGHTS`` for VGG16)
     naming a state-dict file (source ``"env"``);
  2. torchvision's own cache file, ``torch.hub.get_dir()/checkpoints/<file>`` (honours
     ``$TORCH_HOME``), e.g. ``vgg16-397923af.pth`` (source ``"torchvision-cache"``);
  3. a download through torchvision's own mechanism
     (``torch.hub.load_state_dict_from_url`` with torchvision's URL and hash check, into that
     same cache), unless ``ADBENCH_OFFLINE=1`` (source ``"download"``);
  4. otherwise :class:`WeightsError`, naming the missing cache file and both ways to provide it.

* a path to a state-dict file (``.pth``/``.pt`` via ``torch.load(weights_only=True)``, or
  ``.safetensors``) (source ``"path"``);
* ``"random"``: seeded random initialisation (torchvision's init), only when asked for by name
  (source ``"random"``), for tests and smoke runs.

Every resolution returns a provenance dict ``{"backbone", "source", "path", "sha256"}`` (plus
``"seed"`` for random weights) that results record, so a leaderboard never mixes backbones.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torchvision

from adbench.errors import WeightsError
from adbench.io import file_sha256

__all__ = ["WeightsError", "resolve_vgg16", "resolve_backbone", "torchvision_cache_file",
           "file_sha256", "is_offline", "env_var", "read_state_file", "BACKBONES",
           "VGG16_FEATURE_SHAPES"]


_BUILDERS: dict[str, tuple[Callable[[], torch.nn.Module], object]] = {
    "vgg16": (torchvision.models.vgg16, torchvision.models.VGG16_Weights.IMAGENET1K_V1),
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "wide_resnet50_2": (torchvision.models.wide_resnet50_2,
                        torchvision.models.Wide_ResNet50_2_Weights.IMAGENET1K_V1),
}
BACKBONES: tuple[str, ...] = tuple(_BUILDERS)

# torchvision vgg16 configuration "D": conv widths, "M" = max-pool. Indices in
# ``vgg16().features`` follow from it (conv, ReLU per conv; one module per pool).
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M")


def _vgg16_feature_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    idx, c_in = 0, 3
    for v in _VGG16_CFG:
        if v == "M":
            idx += 1
            continue
        shapes[f"{idx}.weight"] = (v, c_in, 3, 3)
        shapes[f"{idx}.bias"] = (v,)
        idx, c_in = idx + 2, v
    return shapes


#: Keys and shapes of ``torchvision.models.vgg16().features.state_dict()``: "0.weight" … "28.bias".
VGG16_FEATURE_SHAPES: dict[str, tuple[int, ...]] = _vgg16_feature_shapes()



def env_var(backbone: str) -> str:
    """Name of the environment variable that points at ``backbone``'s weights file."""
    return f"ADBENCH_{backbone.upper()}_WEIGHTS"


def is_offline() -> bool:
    """True when ``ADBENCH_OFFLINE`` is set to anything but "", "0", "false", "no"."""
    return os.environ.get("ADBENCH_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def torchvision_cache_file(backbone: str) -> Path:
    """Where torchvision keeps ``backbone``'s ImageNet file (``$TORCH_HOME/hub/checkpoints``)."""
    _check_name(backbone)
    url = _BUILDERS[backbone][1].url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]




def resolve_vgg16(weights: str | None = "imagenet", *,
                  seed: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    """State dict for ``torchvision.models.vgg16().features`` and its provenance.

    Returns ``(state_dict, provenance)``: keys "0.weight" … "28.bias" (float32, CPU), shapes
    as :data:`VGG16_FEATURE_SHAPES`. Files may hold either the features-only layout ("0.weight")
    or a full ``vgg16()`` state dict ("features.0.weight"; the classifier is ignored).
    """
    return resolve_backbone("vgg16", weights, seed=seed)


def resolve_backbone(name: str, weights: str | None = "imagenet", *,
                     seed: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    """State dict and provenance for backbone ``name`` (see the module docstring for the order).

    ``vgg16``: the ``features`` layout of :func:`resolve_vgg16`. ``resnet18`` /
    ``wide_resnet50_2``: torchvision's full model layout without ``fc.*`` (the classifier is
    never used); ``*.num_batches_tracked`` may be absent from files.
    """
    _check_name(name)
    if weights is None or weights == "imagenet":
        return _resolve_imagenet(name)
    if not isinstance(weights, (str, os.PathLike)):
        raise WeightsError(f"{name} weights: got {weights!r} ({type(weights).__name__}); expected "
                           f"'imagenet', 'random' or the path of a state-dict file")
    if weights == "random":
        return _random_state(name, seed), {"backbone": name, "source": "random", "path": None,
                                           "sha256": None, "seed": int(seed)}
    path = Path(weights).expanduser()
    if not path.is_file():
        hint = ("" if os.sep in str(weights) or path.suffix else
                " It is neither a file nor one of the names 'imagenet' or 'random'.")
        raise WeightsError(f"{name} weights file {str(path)!r} does not exist.{hint} Expected "
                           f"'imagenet', 'random' or the path of a state-dict file "
                           f"(torch.save of a state dict, or .safetensors).")
    return _load_checked(name, path), _provenance(name, "path", path)


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)} "
                         f"(timm/<model> backbones resolve in adbench.nn.timm_backbones)")


def _provenance(name: str, source: str, path: Path) -> dict:
    return {"backbone": name, "source": source, "path": str(path.resolve()),
            "sha256": file_sha256(path)}


def _resolve_imagenet(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    var = env_var(name)
    env_path = os.environ.get(var, "").strip()
    if env_path:
        path = Path(env_path).expanduser()
        if not path.is_file():
            raise WeightsError(f"environment variable {var} names {str(path)!r}, which does not "
                               f"exist as a file; set it to a {name} state-dict file or unset it")
        return _load_checked(name, path), _provenance(name, "env", path)
    cache = torchvision_cache_file(name)
    if cache.is_file():
        return _load_checked(name, cache), _provenance(name, "torchvision-cache", cache)
    if is_offline():
        raise WeightsError(_missing_message(name, cache, "downloading is disabled "
                                                         "(ADBENCH_OFFLINE=1)"))
    url = _BUILDERS[name][1].url
    try:
        # torchvision's own mechanism: same URL, same cache file, hash-prefix check.
        torch.hub.load_state_dict_from_url(url, model_dir=str(cache.parent), progress=False,
                                           check_hash=True, weights_only=True,
                                           map_location="cpu")
    except Exception as e:  # no network, proxy, hash mismatch: all end in the same advice
        raise WeightsError(_missing_message(name, cache, f"downloading {url} failed "
                                                         f"({type(e).__name__}: {e})")) from e
    return _load_checked(name, cache), _provenance(name, "download", cache)


def _missing_message(name: str, cache: Path, why: str) -> str:
    var = env_var(name)
    # The perceptual score (runner.weights) is always VGG16; other backbones back methods only.
    keys = ("the config key `weights` (`--set weights=PATH` for a method, "
            "`--set runner.weights=PATH` for the shared perceptual score)" if name == "vgg16"
            else "the method's config key `weights` (`--set weights=PATH`)")
    msg = (f"ImageNet {name} weights not found: torchvision's cache file {str(cache)!r} does not "
           f"exist, {var} is not set, and {why}. Provide them in one of two ways: "
           f"(1) point adbench at a {name} state-dict file: the `--weights PATH` flag of "
           f"`adbench run`, {keys}, or the environment variable {var}; or (2) place "
           f"torchvision's {cache.name} (from {_BUILDERS[name][1].url}) in "
           f"{str(cache.parent)!r} (set TORCH_HOME to use another cache folder).")
    if name != "vgg16":
        msg += (f" No offline ImageNet {name} weights ship with adbench or its dependencies on "
                f"this machine, so offline this backbone needs a file you provide.")
    msg += " For tests and smoke runs, weights='random' uses seeded random weights (recorded as "
    msg += "source 'random', never mixed with pretrained results)."
    return msg


def read_state_file(path: Path, expected: str) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (``torch.load(weights_only=True)`` or safetensors; a
    ``{"state_dict": ...}`` wrapper is unwrapped). ``expected`` names what it should hold,
    for the error ("a vgg16 state dict")."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"could not read weights file {str(path)!r} ({type(e).__name__}: "
                           f"{e}); expected a state dict of tensors saved with torch.save "
                           f"(loaded with weights_only=True) or a .safetensors file") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"weights file {str(path)!r} holds a {type(sd).__name__}, not a state "
                           f"dict of tensors; expected {expected}")
    return sd


def _expected_shapes(name: str) -> dict[str, tuple[int, ...]]:
    if name == "vgg16":
        return dict(VGG16_FEATURE_SHAPES)
    with torch.device("meta"):  # shapes only: no allocation, no init cost
        model = _BUILDERS[name][0]()
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("fc.")}


def _load_checked(name: str, path: Path) -> dict[str, torch.Tensor]:
    sd = read_state_file(path, f"a {name} state dict")
    expected = _expected_shapes(name)
    if name == "vgg16" and "0.weight" not in sd and "features.0.weight" in sd:
        sd = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in sd and k not in optional]
    if missing:
        layout = ("features-only keys '0.weight' … '28.bias' or full vgg16 keys "
                  "'features.0.weight' …" if name == "vgg16"
                  else f"torchvision {name} keys ('conv1.weight', 'layer1.0.bn1.weight', …)")
        got = ", ".join(list(sd)[:4]) + (" …" if len(sd) > 4 else "")
        raise WeightsError(f"weights file {str(path)!r} does not have the {name} layout: "
                           f"{len(missing)} expected keys are missing (first: {missing[0]!r}); "
                           f"got keys [{got}]; expected {layout}")
    out: dict[str, torch.Tensor] = {}
    for k, shape in expected.items():
        if k not in sd:
            out[k] = torch.zeros((), dtype=torch.long)
            continue
        if tuple(sd[k].shape) != shape:
            raise WeightsError(f"weights file {str(path)!r}: {k!r} has shape "
                               f"{tuple(sd[k].shape)}, expected {shape} for {name}")
        v = sd[k]
        out[k] = v if k in optional else v.float()
    return out


def _random_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    # torchvision's init draws from the global generator: fork it so callers' RNG is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if name == "vgg16":
            return _random_vgg16_features()
        model = _BUILDERS[name][0]()
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


def _random_vgg16_features() -> dict[str, torch.Tensor]:
    # Building the whole vgg16() spends ~2 s initialising the 120M-parameter classifier we
    # never use; build on meta, materialise only the features, and apply torchvision's VGG
    # conv init (Kaiming normal, fan_out, ReLU gain; zero bias).
    with torch.device("meta"):
        features = torchvision.models.vgg16().features
    features = features.to_empty(device="cpu")
    for m in features.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    return {k: v.detach() for k, v in features.state_dict().items()}
