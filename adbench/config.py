"""Config resolution: CLI and files → one validated, fully resolved config (style rule 5).

Precedence, lowest first: plugin ``default_config`` → plugin preset → ``--config`` file →
``--set`` overrides. ``--set`` keys address sections with a prefix:

=====================  =============================================================
``key=value``          the method's config (``--set l2=6``)
``dataset.key=value``  the test dataset's config (``--set dataset.n_test=5``)
``train.key=value``    the training dataset's config when ``--train-on`` differs
``preprocess.key=v``   shared preprocessing (:class:`adbench.data.preprocess.PreprocessConfig`)
``runner.key=value``   runner settings (:data:`RUNNER_DEFAULTS`)
=====================  =============================================================

Values are parsed as YAML (``--set k2=20`` is an int, ``--set two_stage=false`` a bool).
An unknown key is an error that lists the valid keys of its section.
"""
from __future__ import annotations

import copy
import difflib
from typing import Annotated, Any, Literal, Sequence

import yaml

from adbench.data.preprocess import PreprocessConfig
from adbench.errors import ConfigError
from adbench.params import PositiveInt, Range, check_config, signature_defaults
from adbench.plugins import UnknownNameError

__all__ = ["ConfigError", "RUNNER_DEFAULTS", "RUNNER_HELP", "RUNNER_PRESETS", "PREPROCESS_PRESETS", "parse_sets",
           "merge_section", "load_config_file", "preprocess_config", "check_device",
           "runner_settings", "check_runner_config", "runner_config"]


def runner_settings(weights: str = "imagenet", batch_size: PositiveInt = 16,
                    localisation: Literal["perceptual", "native"] = "perceptual",
                    perceptual_blocks: Sequence[Annotated[int, Range(1, 5)]] = (3, 4, 5),
                    max_test_volumes: PositiveInt | None = None,
                    max_train_volumes: PositiveInt | None = None,
                    write_maps: bool = True, native_maps: bool = True, figures: bool = True,
                    fpr_levels: Sequence[Annotated[float, Range(0, 1, lo_open=True, hi_open=True)]]
                    = (0.01, 0.05),
                    val_max_slices: PositiveInt = 256,
                    val_holdout: Annotated[float, Range(0, 1, hi_open=True)] = 0.1) -> None:
    """The ``runner`` section, declared once as a signature (like a method's constructor):
    the defaults are :data:`RUNNER_DEFAULTS`, the hints the types and ranges that
    :func:`check_runner_config` enforces (meanings: :data:`RUNNER_HELP`)."""


RUNNER_DEFAULTS: dict[str, Any] = signature_defaults(runner_settings, "runner")

#: One line per runner key, shown by ``adbench config runner`` (a test keeps the keys equal).
RUNNER_HELP: dict[str, str] = {
    "weights": "VGG16 weights of A_per and of VGG-based methods: imagenet (torchvision cache or "
               "$ADBENCH_VGG16_WEIGHTS) | random | PATH of a state dict; `--weights` sets it",
    "batch_size": "test slices per predict call",
    "localisation": "reconstruction methods: perceptual (the shared A_per, paper §3.2) or "
                    "native (the method's own map)",
    "perceptual_blocks": "VGG16 blocks of A_per (paper: the last three)",
    "max_test_volumes": "evaluate only the first N test volumes (null: all)",
    "max_train_volumes": "train on only the first N healthy volumes (null: all)",
    "write_maps": "write maps/<subject>.nii.gz, with the image and masks beside it",
    "native_maps": "write maps_native/<subject>.nii.gz: the map on the source scan's own grid "
                   "and affine (overlays on the original scan)",
    "figures": "write figures/ (overlay.png, roc_pr.png)",
    "fpr_levels": "false-positive rates on healthy validation voxels whose thresholds give the "
                  "dice_fpr<percent> columns (e.g. 0.01 -> dice_fpr1)",
    "val_max_slices": "healthy validation slices predicted to set those thresholds (at most)",
    "val_holdout": "fraction of the training subjects held out as validation when the training "
                   "dataset has no 'val' split (0: none; thresholds are then NaN)",
}

RUNNER_PRESETS: dict[str, dict[str, Any]] = {
    # smoke asks for random VGG16 weights by name: CI has no ImageNet weights, and the
    # summary records source "random" so such runs never mix with pretrained ones.
    "smoke": {"batch_size": 8, "figures": True, "weights": "random", "val_max_slices": 8},
    # the paper's training set is never cut: thresholds only from a dataset's own "val" split
    "paper": {"val_holdout": 0.0},
    # a GPU holds hundreds of slices per predict call (SCRPS inverts the whole batch at once)
    "gpu-quick": {"batch_size": 256},
}

# Preprocessing presets change which slices a run sees, so every method run under the same
# preset sees the same data (zscore and SCRPS at cpu-quick are comparable).
PREPROCESS_PRESETS: dict[str, dict[str, Any]] = {
    # train on the central slices only (brain >= 35% of the 160x128 slice, about 65% of the
    # "brain" slices): a small StyleGAN2 trained for 20 CPU minutes learns the oval central
    # anatomy instead of collapsing between vertex and cerebellum slices. Test slices keep
    # the paper's rule (every slice with lesion), so the metrics cover the whole lesion.
    "cpu-quick": {"min_brain_fraction": 0.35},
    # SCRPS's two-hour CPU StyleGAN2 (issue #19) is preprocessed as cpu-quick
    "cpu-long": {"min_brain_fraction": 0.35},
}

SECTIONS = ("method", "dataset", "train", "preprocess", "runner")


def parse_sets(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["k2=20", "dataset.n_test=3"]`` → {"method": {"k2": 20}, "dataset": {"n_test": 3}, …}."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. --set k2=20 or "
                              f"--set dataset.n_test=5)")
        key, raw = item.split("=", 1)
        key = key.strip()
        section = "method"
        if "." in key:
            prefix, rest = key.split(".", 1)
            if prefix in SECTIONS:
                section, key = prefix, rest
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
        out[section][key] = value
    return out


def dataset_sets(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``parse_sets`` for commands about one dataset (prepare, show): unprefixed keys and
    ``dataset.`` keys both address the dataset's config."""
    sets = parse_sets(items)
    sets["dataset"] = {**sets.pop("method"), **sets["dataset"]}
    return sets


def load_config_file(path: str) -> dict[str, dict[str, Any]]:
    """A YAML file with optional top-level sections method/dataset/train/preprocess/runner."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of sections {SECTIONS}, "
                          f"got {type(data).__name__}")
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"--config {path}: unknown section(s) {sorted(unknown)}; "
                          f"valid sections: {', '.join(SECTIONS)}")
    for k, v in data.items():
        if not isinstance(v, dict):
            raise ConfigError(f"--config {path}: section {k!r} must be a mapping")
    return {s: dict(data.get(s) or {}) for s in SECTIONS}


def merge_section(what: str, defaults: dict[str, Any], presets: dict[str, dict[str, Any]],
                  preset: str | None, *layers: dict[str, Any]) -> dict[str, Any]:
    """Merge ``defaults`` ← preset ← layers, validating every key against ``defaults``."""
    cfg = copy.deepcopy(defaults)
    if preset is not None and preset in presets:
        _check_keys(f"{what} preset {preset!r}", presets[preset], cfg)
        cfg.update(copy.deepcopy(presets[preset]))
    for layer in layers:
        _check_keys(what, layer, cfg)
        cfg.update(copy.deepcopy(layer))
    return cfg


def _check_keys(what: str, layer: dict[str, Any], valid: dict[str, Any]) -> None:
    for key in layer:
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {what} config key {key!r}.{hint} Valid keys: "
                              f"{', '.join(sorted(valid)) or '(none)'}")


def check_runner_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` (a merged runner section) when every value has the type and range of
    :func:`runner_settings`; else a ConfigError naming the key, the value and what is
    expected (e.g. ``runner.batch_size=-1``), raised before any run folder exists."""
    check_config(runner_settings, cfg, "runner")
    return cfg


def runner_config(preset: str | None, *layers: dict[str, Any]) -> dict[str, Any]:
    """Runner defaults ← :data:`RUNNER_PRESETS` [preset] ← layers, validated."""
    return check_runner_config(merge_section("runner", RUNNER_DEFAULTS, RUNNER_PRESETS, preset,
                                             *layers))


def preprocess_defaults() -> dict[str, Any]:
    return PreprocessConfig().to_dict()


def preprocess_config(preset: str | None, *layers: dict[str, Any]) -> PreprocessConfig:
    """Preprocessing defaults ← :data:`PREPROCESS_PRESETS` [preset] ← layers, validated."""
    cfg = merge_section("preprocess", preprocess_defaults(), PREPROCESS_PRESETS, preset, *layers)
    try:
        return PreprocessConfig.from_dict(cfg)
    except ConfigError:
        raise
    except (KeyError, ValueError, TypeError) as exc:   # bad values: same error type as bad keys
        raise ConfigError(str(exc.args[0] if exc.args else exc)) from None


def check_device(device: str) -> str:
    """``device`` as torch names it, if this machine has it; else a ConfigError naming the
    device and what torch sees (before any run folder exists)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"--device {device!r}: not a device name; expected cpu, cuda, cuda:N "
                          f"or mps") from None
    if dev.type == "cpu":
        return str(dev)
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            build = (f"built with CUDA {torch.version.cuda}" if torch.version.cuda
                     else "a CPU-only build")
            raise ConfigError(f"--device {device!r}: torch {torch.__version__} ({build}) sees no "
                              f"CUDA device (torch.cuda.is_available() is False); use --device "
                              f"cpu, or check the driver and CUDA_VISIBLE_DEVICES")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"--device {device!r}: torch sees {n} CUDA device(s), "
                              f"cuda:0 … cuda:{n - 1}")
        return str(dev)
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {device!r}: torch {torch.__version__} sees no MPS "
                              f"device (torch.backends.mps.is_available() is False)")
        return str(dev)
    raise ConfigError(f"--device {device!r}: adbench runs on cpu, cuda[:N] or mps")


def check_preset(preset: str | None, known: set[str]) -> None:
    """A preset name must be defined by at least one of the pieces of the run."""
    if preset is None:
        return
    if preset not in known:
        raise UnknownNameError(f"unknown preset {preset!r}. Presets defined for this method, "
                               f"dataset and runner: {', '.join(sorted(known)) or '(none)'}")
