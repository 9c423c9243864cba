"""A deterministic stand-in for SCRPS's W+ inversion, shared by the repository tests."""
from __future__ import annotations

import torch


class FakeInverter:
    """Codes (n, 3, 8) as a function of the image; records the first pixel of every image it
    inverts, so a test can tell which slices were inverted (again)."""

    def __init__(self):
        self.seen: list[float] = []

    def __call__(self, images):
        self.seen.extend(images[:, 0, 0, 0].tolist())
        m = images.flatten(1)
        return torch.stack([m[:, :8] * (layer + 1) for layer in range(3)], dim=1)
