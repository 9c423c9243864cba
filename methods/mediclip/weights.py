"""Where MediCLIP's CLIP weights come from (architecture §8), decided before any run folder.

``clip_weights`` is one of

* ``"pretrained"`` (the default): the ``clip_pretrained`` tag's file ("openai" for
  ViT-B-16), looked up offline, in this order, never downloaded:

  1. the environment variable ``ADBENCH_CLIP_WEIGHTS`` naming a checkpoint file;
  2. open_clip's Hugging Face hub cache (open_clip prefers the hub when ``huggingface_hub``
     is installed): ``$HF_HUB_CACHE`` (default ``$HF_HOME/hub``, ``~/.cache/huggingface/hub``)
     ``/models--timm--vit_base_patch16_clip_224.openai/snapshots/*/open_clip_model.safetensors``
     (or ``open_clip_pytorch_model.bin``);
  3. open_clip's URL cache (without ``huggingface_hub``): ``~/.cache/clip/ViT-B-16.pt``
     (OpenAI's own archive).

* a path to a checkpoint file (an open_clip state dict: ``.safetensors``, ``.bin``, ``.pt``,
  or OpenAI's ``ViT-B-16.pt``);
* ``"random"``: seeded random initialisation, only when asked for by name (tests, smoke runs),
  recorded as source ``"random"`` with its seed, like VGG16's random weights.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from adbench.params import Range

__all__ = [
    "ENV_VAR",
    "ClipWeights",
    "ClipWeightsName",
    "cache_candidates",
    "missing_message",
    "resolve_clip_file",
]

ENV_VAR = "ADBENCH_CLIP_WEIGHTS"
_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


#: open_clip 3.3's pretrained entry of the default model, so the config check (which runs
#: when the runner resolves a config) does not import open_clip (seconds)
_KNOWN = {("ViT-B-16", "openai"): {
    "hf_hub": "timm/vit_base_patch16_clip_224.openai/",
    "url": "https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101eabd078d9"
           "fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt"}}


def _pretrained_cfg(model: str, tag: str) -> dict:
    if (model, tag) in _KNOWN:
        return _KNOWN[(model, tag)]
    from open_clip.pretrained import get_pretrained_cfg
    return get_pretrained_cfg(model, tag) or {}


def cache_candidates(model: str = "ViT-B-16", tag: str = "openai") -> list[Path]:
    """Where open_clip would have cached ``model``/``tag`` (existing or not), in lookup order;
    the hub entries hold a ``*`` for the snapshot folder."""
    cfg = _pretrained_cfg(model, tag)
    out: list[Path] = []
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)   # open_clip's rule: "org/name/" = default file
        folder = _hf_hub_cache() / f"models--{repo.replace('/', '--')}" / "snapshots" / "*"
        names = (filename,) if filename else _HF_FILES
        out += [folder / n for n in names]
    if cfg.get("url"):
        out.append(Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"]))
    return out


def resolve_clip_file(model: str = "ViT-B-16", tag: str = "openai") -> tuple[Path, str] | None:
    """(file, source) of the pretrained checkpoint, or None: source "env" or "open_clip-cache"."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        p = Path(env).expanduser()
        return (p, "env") if p.is_file() else None
    for cand in cache_candidates(model, tag):
        hits = sorted(glob.glob(str(cand)))
        for h in hits:
            if os.path.isfile(h):
                return Path(h), "open_clip-cache"
    return None


def missing_message(model: str = "ViT-B-16", tag: str = "openai") -> str:
    """What to do when no pretrained CLIP file is found (names file, config key and cache)."""
    env = os.environ.get(ENV_VAR, "").strip()
    cands = cache_candidates(model, tag)
    where = "; ".join(str(c) for c in cands) or "(open_clip lists no file for this tag)"
    why = (f"the environment variable {ENV_VAR} names {env!r}, which is not a file"
           if env else f"{ENV_VAR} is not set")
    return (f"pretrained CLIP weights for clip_model={model!r}, clip_pretrained={tag!r} not "
            f"found: {why}, and none of open_clip's cache files exist ({where}). open_clip "
            f"caches weights in the Hugging Face hub cache ($HF_HUB_CACHE, default "
            f"$HF_HOME/hub = ~/.cache/huggingface/hub; its `cache_dir` argument) when "
            f"huggingface_hub is installed, else in ~/.cache/clip; adbench never downloads. "
            f"Provide the checkpoint in one of three ways: (1) the config key `clip_weights`: "
            f"`--set clip_weights=/path/to/open_clip_model.safetensors` (an open_clip {model} "
            f"state dict, or OpenAI's {model}.pt); (2) the environment variable {ENV_VAR}=PATH; "
            f"(3) on a machine with network, `python -c \"import open_clip; "
            f"open_clip.create_model('{model}', pretrained='{tag}')\"` fills open_clip's cache, "
            f"then copy that cache folder here. For tests and smoke runs `--set "
            f"clip_weights=random` uses seeded random weights (recorded as source 'random').")


@dataclass(frozen=True)
class ClipWeightsName(Range):
    """Type-hint metadata of ``clip_weights``, evaluated by :func:`adbench.params.check_config`
    when the runner resolves a config, so a missing checkpoint stops the run (exit 2) before
    any run folder exists (the pattern of :class:`adbench.nn.extractor.BackboneName`).

    "pretrained" is checked for the default ViT-B-16 / "openai"; another ``clip_model`` with
    "pretrained" is checked again in ``fit`` (see :meth:`MediCLIP.validate_config`).
    """

    def holds(self, v: object) -> bool:
        global _LAST_FAILURE
        _LAST_FAILURE = None
        if not isinstance(v, str) or not v:
            return False
        if v == "random":
            return True
        if v == "pretrained":
            if resolve_clip_file() is None:
                _LAST_FAILURE = missing_message()
            return _LAST_FAILURE is None
        if not Path(v).expanduser().is_file():
            _LAST_FAILURE = (f"{v!r} is not a file (relative paths are relative to the current "
                             f"folder); pass an existing checkpoint with `--set "
                             f"clip_weights=PATH`, or 'random' / 'pretrained'")
            return False
        return True

    def describe(self, base: str) -> str:
        # check_config describes the hint right after holds() refused a value: then the
        # reason (which file, which key, which cache) follows; `adbench config` gets the short
        # form
        global _LAST_FAILURE
        reason, _LAST_FAILURE = _LAST_FAILURE, None
        head = "'random', 'pretrained' or the path of an existing CLIP checkpoint file"
        return f"{head}. {reason}" if reason else head


#: why the last ``ClipWeightsName.holds`` refused its value (read once by ``describe``)
_LAST_FAILURE: str | None = None


#: ``Annotated[str, ClipWeightsName()]``: the hint of the ``clip_weights`` config key
ClipWeights = Annotated[str, ClipWeightsName()]
