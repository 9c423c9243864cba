"""Index batches and even subsets of a :class:`~adbench.data.volume.SliceSet`."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from adbench.data.volume import SliceSet

__all__ = ["index_batches", "spread_subset"]


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
