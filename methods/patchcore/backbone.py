"""The frozen feature extractor shared by the feature-based detectors (PatchCore, PaDiM).

The backbone is not learned, so it is not saved with a detector's state. What is saved is the
seed it was built with (it matters for ``weights="random"``) and a fingerprint of its
parameters, so loading a state against different backbone weights (another file behind
``ADBENCH_VGG16_WEIGHTS``, say) is an error instead of silently different maps.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from adbench import SliceSet

__all__ = ["make_extractor", "fingerprint", "check_fingerprint", "extractor_state",
           "index_batches", "spread_subset"]


def make_extractor(backbone: str, layers: Sequence[str], weights: str, seed: int,
                   device: str | torch.device = "cpu"):
    """An :class:`adbench.features.FeatureExtractor`, frozen, eval mode, on ``device``."""
    from adbench.features import FeatureExtractor  # heavy import kept out of plugin loading

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


def index_batches(n: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive int64 index batches covering 0..n-1."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    for s in range(0, n, batch_size):
        yield torch.arange(s, min(n, s + batch_size))


def spread_subset(train: SliceSet, max_slices: int | None) -> SliceSet:
    """At most ``max_slices`` slices, evenly spaced over the set's (subject, z) order.

    Even spacing keeps every subject and every depth represented, deterministically; used by
    quick presets to bound feature extraction, never by the published settings.
    """
    if max_slices is None or len(train) <= int(max_slices):
        return train
    if int(max_slices) < 1:
        raise ValueError(f"max_train_slices must be None or >= 1, got {max_slices!r}")
    idx = np.unique(np.linspace(0, len(train) - 1, int(max_slices)).round().astype(np.int64))
    return train.subset(idx)
