"""The one slice rule: which axial slices of a preprocessed volume a run trains on, predicts
and evaluates. Training selection (``preprocess.slices_train``), the test slices a detector
sees, the evaluation region R = brain ∩ selected slices and ``adbench prepare``'s counts all
come from :func:`select_slices`, so they cannot disagree.

=========  ===================================================================
``lesion``  slices with at least one lesion voxel (the paper's test protocol)
``brain``   slices whose brain area is at least ``min_brain_fraction`` of the slice
``all``     every slice that holds brain
=========  ===================================================================
"""
from __future__ import annotations

import numpy as np

__all__ = ["SLICE_RULES", "MIN_BRAIN_FRACTION", "check_rule", "select_slices"]

SLICE_RULES = ("lesion", "brain", "all")
MIN_BRAIN_FRACTION = 0.05   # the "brain" rule's default: 5% of the slice's pixels


def check_rule(rule: str) -> None:
    if rule not in SLICE_RULES:
        raise ValueError(f"slice rule {rule!r}: expected one of {SLICE_RULES}")


def select_slices(brain: np.ndarray, lesion: np.ndarray | None, rule: str,
                  min_brain_fraction: float = MIN_BRAIN_FRACTION) -> np.ndarray:
    """Sorted indices z of the axial slices (last axis of (H, W, Z) masks) kept by ``rule``.

    ``lesion`` None (a healthy volume) selects no slice under the "lesion" rule.
    """
    check_rule(rule)
    brain = np.asarray(brain).astype(bool, copy=False)
    if brain.ndim != 3:
        raise ValueError(f"select_slices: brain mask must be (H, W, Z), got shape {brain.shape}")
    per_slice = brain.reshape(-1, brain.shape[-1])
    if rule == "all":
        return np.flatnonzero(per_slice.any(axis=0))
    if rule == "brain":
        return np.flatnonzero(per_slice.mean(axis=0) >= min_brain_fraction)
    if lesion is None:
        return np.zeros(0, dtype=np.int64)
    lesion = np.asarray(lesion).astype(bool, copy=False)
    if lesion.shape != brain.shape:
        raise ValueError(f"select_slices: lesion {lesion.shape} and brain {brain.shape} must have "
                         "one shape")
    return np.flatnonzero(lesion.reshape(-1, lesion.shape[-1]).any(axis=0))
