"""The data model shared by datasets, preprocessing, detectors and evaluation.

Two types travel through adbench (architecture §4):

* :class:`Volume` — one 3-D scan as a dataset plugin delivers it, in its own voxel grid,
  with the affine that places it in scanner space. Orientation is whatever the file had;
  :mod:`adbench.data.preprocess` makes it canonical.
* :class:`SliceSet` — preprocessed 2-D axial slices ready for a detector: images in
  [-1, 1] of shape (N, 1, H, W) with H = anterior→posterior rows and W = left→right
  columns, plus brain and lesion masks and the (subject, z) provenance of every slice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from adbench.errors import DataError

__all__ = ["Volume", "SliceSet", "DataError"]


@dataclass
class Volume:
    """One scan in its native voxel grid.

    image        (X, Y, Z) float32 intensities, any scale.
    brain_mask   (X, Y, Z) bool, True inside the brain.
    lesion_mask  (X, Y, Z) bool ground truth, or None for a healthy/unlabelled scan.
    affine       (4, 4) voxel → world (mm) matrix; it always travels with the voxels.
    subject_id   unique within a dataset.
    meta         free metadata (source paths, site, age, lesion type, ...); JSON-able values.
    """

    image: np.ndarray
    brain_mask: np.ndarray
    lesion_mask: np.ndarray | None
    affine: np.ndarray
    subject_id: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"subject {self.subject_id!r}"
        src = self.meta.get("image_path")
        if src:
            where += f" ({src})"
        if self.image.ndim != 3:
            raise DataError(f"{where}: image must be 3-D, got shape {self.image.shape}")
        if self.brain_mask.shape != self.image.shape:
            raise DataError(
                f"{where}: brain mask shape {self.brain_mask.shape} != image shape {self.image.shape}")
        if self.lesion_mask is not None and self.lesion_mask.shape != self.image.shape:
            raise DataError(
                f"{where}: lesion mask shape {self.lesion_mask.shape} != image shape {self.image.shape}")
        if np.asarray(self.affine).shape != (4, 4):
            raise DataError(f"{where}: affine must be 4x4, got {np.asarray(self.affine).shape}")
        self.image = np.asarray(self.image, dtype=np.float32)
        self.brain_mask = np.asarray(self.brain_mask, dtype=bool)
        if self.lesion_mask is not None:
            self.lesion_mask = np.asarray(self.lesion_mask, dtype=bool)
        self.affine = np.asarray(self.affine, dtype=np.float64)

    @property
    def healthy(self) -> bool:
        return self.lesion_mask is None or not self.lesion_mask.any()


@dataclass
class SliceSet:
    """Preprocessed axial slices of one or more volumes.

    images   (N, 1, H, W) float32 in [-1, 1]; background (outside the brain) is -1.
    brain    (N, H, W) bool brain mask.
    lesion   (N, H, W) bool lesion mask (all False for healthy slices).
    subjects length-N list of subject ids.
    z        (N,) int64 index of the slice along the preprocessed volume's axial axis.
    affines  subject id → (4, 4) affine of that subject's preprocessed (H, W, Z) grid,
             so a per-slice map can be written back as NIfTI (see adbench.io).
    depth    subject id → number of axial slices in the preprocessed volume.
    """

    images: torch.Tensor
    brain: torch.Tensor
    lesion: torch.Tensor
    subjects: list[str]
    z: np.ndarray
    affines: dict[str, np.ndarray] = field(default_factory=dict)
    depth: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4 or self.images.shape[1] != 1:
            raise ValueError(f"SliceSet.images must be (N, 1, H, W), got {tuple(self.images.shape)}")
        hw = tuple(self.images.shape[2:])
        for name in ("brain", "lesion"):
            t = getattr(self, name)
            if tuple(t.shape) != (n, *hw):
                raise ValueError(f"SliceSet.{name} must be {(n, *hw)}, got {tuple(t.shape)}")
        if len(self.subjects) != n or len(self.z) != n:
            raise ValueError(f"SliceSet: {n} images but {len(self.subjects)} subjects / {len(self.z)} z")
        self.z = np.asarray(self.z, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, index) -> "SliceSet":
        """Slices at `index` (a boolean mask or integer indices), provenance kept."""
        idx = np.arange(len(self))[np.asarray(index)]
        t = torch.as_tensor(idx, dtype=torch.long)
        subjects = [self.subjects[i] for i in idx]
        keep = set(subjects)
        return SliceSet(
            images=self.images[t], brain=self.brain[t], lesion=self.lesion[t],
            subjects=subjects, z=self.z[idx],
            affines={k: v for k, v in self.affines.items() if k in keep},
            depth={k: v for k, v in self.depth.items() if k in keep},
        )

    def by_subject(self) -> Iterator[tuple[str, np.ndarray]]:
        """(subject, slice indices sorted by z) in order of first appearance."""
        order: dict[str, list[int]] = {}
        for i, s in enumerate(self.subjects):
            order.setdefault(s, []).append(i)
        for s, idx in order.items():
            idx_arr = np.asarray(idx)
            yield s, idx_arr[np.argsort(self.z[idx_arr], kind="stable")]

    def batches(self, batch_size: int) -> Iterator[tuple[slice, torch.Tensor]]:
        """(slice of positions, images) in order, `batch_size` at a time."""
        for start in range(0, len(self), batch_size):
            sl = slice(start, min(start + batch_size, len(self)))
            yield sl, self.images[sl]

    @staticmethod
    def concat(parts: list["SliceSet"]) -> "SliceSet":
        if not parts:
            raise ValueError("SliceSet.concat needs at least one part")
        affines: dict[str, np.ndarray] = {}
        depth: dict[str, int] = {}
        for p in parts:
            affines.update(p.affines)
            depth.update(p.depth)
        return SliceSet(
            images=torch.cat([p.images for p in parts]),
            brain=torch.cat([p.brain for p in parts]),
            lesion=torch.cat([p.lesion for p in parts]),
            subjects=[s for p in parts for s in p.subjects],
            z=np.concatenate([p.z for p in parts]),
            affines=affines, depth=depth,
        )
