"""Voxel-wise z-score model of healthy appearance.

The classic normative model: for every pixel position (h, w) of the preprocessed grid,
the mean μ and standard deviation σ of the healthy training slices at that position;
the map of a test slice x is |x − μ| / (σ + eps), set to 0 outside the brain. Honest,
fast, needs no weights: a sanity baseline for every leaderboard.
"""
from __future__ import annotations

import torch

from adbench.data.volume import SliceSet
from adbench.detector import Context, Detector, Prediction
from adbench.params import NonNegativeFloat


class ZScore(Detector):
    """Per-position Gaussian of healthy intensities; map |x − μ| / (σ + eps).

    eps          added to σ: keeps near-constant positions finite.
    brain_only   statistics over brain pixels only, and 0 outside the brain (background is -1).
    """

    def __init__(self, eps: NonNegativeFloat = 0.05, brain_only: bool = True):
        self.eps = eps
        self.brain_only = brain_only

    def _fit(self, train: SliceSet, ctx: Context) -> None:
        x = train.images[:, 0].double()                    # (N, H, W)
        w = train.brain.double() if self.brain_only else torch.ones_like(x)
        n = w.sum(0)
        mean = (w * x).sum(0) / n.clamp_min(1)
        var = (w * (x - mean) ** 2).sum(0) / (n - 1).clamp_min(1)
        # positions never inside a training brain keep μ = −1 (background), σ = 0
        self.mean_ = torch.where(n > 0, mean, torch.full_like(mean, -1.0)).float()
        self.std_ = var.sqrt().float()

    def _predict(self, x: torch.Tensor, ctx: Context) -> Prediction:
        h, w = self.mean_.shape
        if tuple(x.shape[2:]) != (h, w):
            raise ValueError(f"ZScore was fitted on {h}x{w} slices, got {tuple(x.shape[2:])}")
        z = (x[:, 0].float() - self.mean_) / (self.std_ + self.eps)
        m = z.abs()
        if self.brain_only:
            m = m * (x[:, 0] > -1.0)  # background (exactly -1 after normalisation) scores 0
        return Prediction(maps=m)

    def _state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean_, "std": self.std_}

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.mean_ = state["mean"].float()
        self.std_ = state["std"].float()
