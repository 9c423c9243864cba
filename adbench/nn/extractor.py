"""The frozen feature extractor shared by the feature-based detectors (PatchCore, PaDiM).

The backbone is not learned, so it is not saved with a detector's state. What is saved is its
name, the seed it was built with (it matters for ``weights="random"``) and a fingerprint of its
parameters, so loading a state against another backbone or other weights (another file behind
``ADBENCH_VGG16_WEIGHTS``, say) is an error instead of silently different maps.

This module is imported when plugins load, so it imports neither torchvision nor timm.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Sequence

import torch

from adbench.params import Range

__all__ = ["Backbone", "BackboneName", "TORCHVISION_BACKBONES", "TIMM_PREFIX", "backbone_error",
           "make_extractor", "fingerprint", "check_fingerprint", "extractor_state",
           "check_extractor_state"]

#: torchvision backbones (the same names as ``adbench.nn.weights.BACKBONES``)
TORCHVISION_BACKBONES = ("vgg16", "resnet18", "wide_resnet50_2")
#: prefix of a timm backbone: "timm/<model>", e.g. "timm/wide_resnet50_2" (needs timm)
TIMM_PREFIX = "timm/"


def backbone_error(name: object) -> str | None:
    """None when ``name`` names a backbone, else the message saying what is valid."""
    if isinstance(name, str) and (name in TORCHVISION_BACKBONES or (
            name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX))):
        return None
    return (f"backbone: got {name!r}; expected one of {', '.join(TORCHVISION_BACKBONES)} "
            f"(torchvision), or {TIMM_PREFIX}<model> for a timm model such as "
            f"'{TIMM_PREFIX}wide_resnet50_2' (needs `pip install timm`)")


@dataclass(frozen=True)
class BackboneName(Range):
    """Type-hint metadata for a backbone name (``Annotated[str, BackboneName()]``).

    It subclasses :class:`adbench.params.Range` because that is the metadata ``check_config``
    evaluates: a ``Literal`` would refuse every ``"timm/<model>"``, a plain ``str`` would let a
    misspelt name through until ``fit``. Whether a timm model exists is checked in ``fit``.
    """

    def holds(self, v: object) -> bool:
        return backbone_error(v) is None

    def describe(self, base: str) -> str:
        return (f"one of {', '.join(repr(n) for n in TORCHVISION_BACKBONES)} or "
                f"'{TIMM_PREFIX}<model>'")


#: backbone names a config may ask for (weights: adbench.nn.weights, adbench.nn.timm_backbones)
Backbone = Annotated[str, BackboneName()]


def make_extractor(backbone: str, layers: Sequence[str], weights: str, seed: int,
                   device: str | torch.device = "cpu"):
    """An :class:`adbench.nn.backbones.FeatureExtractor`, frozen, eval mode, on ``device``."""
    from adbench.nn.backbones import (
        FeatureExtractor,  # heavy import kept out of plugin loading
    )

    ext = FeatureExtractor(backbone=backbone, layers=tuple(layers), weights=weights, seed=int(seed))
    return ext.to(device).eval()


@torch.no_grad()
def fingerprint(extractor: torch.nn.Module) -> torch.Tensor:
    """float64 scalar: sum of squares of every parameter and buffer, in float64 on the CPU."""
    total = torch.zeros((), dtype=torch.float64)
    for t in list(extractor.parameters()) + list(extractor.buffers()):
        total += t.detach().to("cpu", torch.float64).pow(2).sum()
    return total


def extractor_state(extractor: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The tensors a detector saves about its backbone: its name (UTF-8 JSON bytes, see
    :func:`adbench.io.json_tensor`), the seed and the parameter fingerprint."""
    from adbench.io import json_tensor

    return {"extractor.backbone": json_tensor(str(getattr(extractor, "backbone", ""))),
            "extractor.seed": torch.tensor(int(seed), dtype=torch.int64),
            "extractor.fingerprint": fingerprint(extractor)}


def check_extractor_state(extractor: torch.nn.Module, state: dict[str, torch.Tensor], who: str,
                          weights: str) -> None:
    """Raise ValueError when ``extractor`` is not the backbone ``state`` was fitted with.

    ``state`` holds :func:`extractor_state`'s keys; "extractor.backbone" may be absent (states
    saved before it existed), then only the fingerprint is compared.
    """
    from adbench.io import tensor_json

    if "extractor.backbone" in state:
        saved = tensor_json(state["extractor.backbone"])
        now = str(getattr(extractor, "backbone", ""))
        if saved != now:
            raise ValueError(f"{who}: this state was fitted with backbone {saved!r}, but the "
                             f"config key `backbone` is {now!r}; set `--set backbone={saved}` "
                             f"(and its `layers`), or fit again")
    check_fingerprint(extractor, state["extractor.fingerprint"], who, weights)


def check_fingerprint(extractor: torch.nn.Module, expected: torch.Tensor, who: str,
                      weights: str) -> None:
    """Raise when ``extractor``'s parameters differ from those the state was fitted with."""
    got = fingerprint(extractor)
    exp = expected.to(torch.float64)
    if not torch.allclose(got, exp, rtol=1e-9, atol=0.0):
        info = getattr(extractor, "weights_info", {})
        backbone = str(getattr(extractor, "backbone", info.get("backbone", "")))
        if backbone.startswith(TIMM_PREFIX):
            where = "the timm / Hugging Face hub cache file"
        else:
            where = f"the file behind ADBENCH_{backbone.upper()}_WEIGHTS or torchvision's cache"
        raise ValueError(
            f"{who}: the backbone weights resolved now (weights={weights!r}, {info}) are not "
            f"the ones this state was fitted with (parameter fingerprint {got.item():.10g}, "
            f"saved {exp.item():.10g}). Point the config key `weights` at the original file "
            f"(`--set weights=PATH`; for VGG16 also `--weights PATH`), restore {where} "
            f"(for weights='imagenet'), or fit again.")
