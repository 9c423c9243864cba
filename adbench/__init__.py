"""adbench: unsupervised anomaly detection and localisation benchmarks for brain MRI."""
from __future__ import annotations

__version__ = "0.1.0"

from .data import DataError, SliceSet, Volume
from .dataset import Dataset
from .detector import Context, Detector, NotFittedError, Prediction, ReconstructionDetector
from .plugins import DatasetSpec, MethodSpec, hookimpl

__all__ = [
    "__version__", "Volume", "SliceSet", "DataError", "Dataset", "Context", "Detector",
    "ReconstructionDetector", "Prediction", "NotFittedError", "MethodSpec", "DatasetSpec",
    "hookimpl",
]
