"""The detector contract (architecture §4), in scikit-learn's habits.

* ``__init__`` stores its keyword arguments under the same names and does nothing else.
* ``fit(train, ctx)`` validates, learns and returns ``self``; fitting again starts afresh.
  Learned attributes end in ``_``.
* ``predict(x, ctx)`` returns a :class:`Prediction`. **Higher map value = more anomalous**,
  for every detector.
* ``state_dict()`` / ``load_state_dict()`` round-trip exactly: a loaded detector gives
  bit-identical maps. State is tensors only (saved with ``weights_only=True`` loading);
  constructor parameters are saved beside it as JSON (``get_params``).

Reconstruction detectors (SCRPS, f-AnoGAN, GANomaly, MemAE) subclass
:class:`ReconstructionDetector`, implement ``reconstruct`` and get the same shared
perceptual-score localisation from the runner, as the paper does for a fair comparison.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from adbench.data.volume import SliceSet
from adbench.errors import NotFittedError

__all__ = ["Context", "Prediction", "Detector", "ReconstructionDetector", "NotFittedError"]


@dataclass
class Context:
    """Everything a detector needs from its surroundings, passed explicitly.

    device    torch device string ("cpu", "cuda", "cuda:1").
    seed      seed for every random choice in fit (generators are created from it).
    workdir   a folder owned by this (method, config, training data, seed): checkpoints and
              resumable intermediate state go here, so an interrupted fit resumes with the
              same command. None: nothing is written.
    progress  show progress bars.
    log       logger for human-readable messages.
    """

    device: str = "cpu"
    seed: int = 0
    workdir: Path | None = None
    progress: bool = False
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("adbench"))

    def generator(self, offset: int = 0, device: str | None = None) -> torch.Generator:
        g = torch.Generator(device=device or "cpu")
        g.manual_seed(int(self.seed) + int(offset))
        return g


@dataclass
class Prediction:
    """Output of ``Detector.predict`` for a batch of B slices of size H x W.

    maps             (B, H, W) float32 anomaly map, higher = more anomalous.
    reconstructions  (B, 1, H, W) in [-1, 1] for reconstruction detectors, else None.
    extras           named per-slice tensors a method wants recorded (e.g. SCRPS's retrieval
                     similarity); each has leading dimension B.
    """

    maps: torch.Tensor
    reconstructions: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Detector:
    """Base class of every anomaly detector. Subclasses implement ``_fit`` and ``_predict``."""

    #: True for methods whose maps should be replaced by the shared perceptual score.
    reconstructs: ClassVar[bool] = False

    # -- parameters (scikit-learn style) -------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names()}

    @classmethod
    def validate_config(cls, cfg: dict[str, Any]) -> None:
        """Checks of a whole resolved config that one key's type hint cannot express (e.g. a
        checkpoint that two keys name together must exist). The runner calls it in ``resolve``,
        before any run folder exists; raise :class:`~adbench.errors.ConfigError` (or
        ``WeightsError``) naming the key, what it got and what to do. Default: nothing."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- lifecycle -----------------------------------------------------------------------
    def fit(self, train: SliceSet, ctx: Context | None = None) -> "Detector":
        """Learn from healthy training slices. Returns self."""
        ctx = ctx or Context()
        if len(train) == 0:
            raise ValueError(f"{type(self).__name__}.fit: the training set is empty")
        self._fit(train, ctx)
        self.fitted_ = True
        return self

    def predict(self, x: torch.Tensor, ctx: Context | None = None) -> Prediction:
        """Anomaly maps for images ``x`` of shape (B, 1, H, W) in [-1, 1]."""
        ctx = ctx or Context()
        self.check_fitted()
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"{type(self).__name__}.predict expects (B, 1, H, W), got {tuple(x.shape)}")
        pred = self._predict(x, ctx)
        b, _, h, w = x.shape
        if tuple(pred.maps.shape) != (b, h, w):
            raise RuntimeError(f"{type(self).__name__} returned maps of shape "
                               f"{tuple(pred.maps.shape)}, expected {(b, h, w)}")
        return pred

    def check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit() or "
                                 f"load_state_dict() first")

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """All learned state as CPU tensors (names are free-form, dotted by convention)."""
        self.check_fitted()
        return {k: v.detach().cpu().clone() for k, v in self._state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> "Detector":
        self._load_state_dict(dict(state))
        self.fitted_ = True
        return self

    # -- to implement --------------------------------------------------------------------
    def _fit(self, train: SliceSet, ctx: Context) -> None:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement _fit")

    def _predict(self, x: torch.Tensor, ctx: Context) -> Prediction:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must implement _predict")

    def _state_dict(self) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must implement _state_dict")

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must implement _load_state_dict")


class ReconstructionDetector(Detector):
    """A detector that reconstructs a pseudo-healthy image.

    Subclasses implement ``reconstruct(x, ctx) -> (B, 1, H, W)``. The native map is the
    squared residual; the runner replaces it with the shared perceptual score A_per
    (paper §3.2) unless the run asks for ``localisation: native``.
    """

    reconstructs: ClassVar[bool] = True

    def reconstruct(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must implement reconstruct")

    def _reconstruct_with_extras(self, x: torch.Tensor, ctx: Context
                                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(reconstruction, per-slice extras to record); override to record extras (SCRPS's
        retrieval similarity) without a second pass."""
        return self.reconstruct(x, ctx), {}

    def _predict(self, x: torch.Tensor, ctx: Context) -> Prediction:
        rec, extras = self._reconstruct_with_extras(x, ctx)
        if rec.shape != x.shape:
            raise RuntimeError(f"{type(self).__name__}.reconstruct returned {tuple(rec.shape)}, "
                               f"expected {tuple(x.shape)}")
        rec = rec.detach().to(x.device, torch.float32)
        return Prediction(maps=(x - rec).pow(2)[:, 0], reconstructions=rec, extras=extras)
