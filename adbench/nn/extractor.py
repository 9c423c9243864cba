"""The frozen feature extractor shared by the feature-based detectors (PatchCore, PaDiM).

The backbone is not learned, so it is not saved with a detector's state. What is saved is the
seed it was built with (it matters for ``weights="random"``) and a fingerprint of its
parameters, so loading a state against different backbone weights (another file behind
``ADBENCH_VGG16_WEIGHTS``, say) is an error instead of silently different maps.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch

#: backbone names a config may ask for (weights: adbench.nn.weights)
Backbone = Literal["vgg16", "resnet18", "wide_resnet50_2"]

__all__ = ["Backbone", "make_extractor", "fingerprint", "check_fingerprint", "extractor_state"]


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
    """The tensors a detector saves about its backbone."""
    return {"extractor.seed": torch.tensor(int(seed), dtype=torch.int64),
            "extractor.fingerprint": fingerprint(extractor)}


def check_fingerprint(extractor: torch.nn.Module, expected: torch.Tensor, who: str,
                      weights: str) -> None:
    """Raise when ``extractor``'s parameters differ from those the state was fitted with."""
    got = fingerprint(extractor)
    exp = expected.to(torch.float64)
    if not torch.allclose(got, exp, rtol=1e-9, atol=0.0):
        raise ValueError(
            f"{who}: the backbone weights resolved now (weights={weights!r}, "
            f"{getattr(extractor, 'weights_info', {})}) are not the ones this state was fitted "
            f"with (parameter fingerprint {got.item():.10g}, saved {exp.item():.10g}). Point "
            f"`weights` / ADBENCH_VGG16_WEIGHTS at the original file, or fit again.")
