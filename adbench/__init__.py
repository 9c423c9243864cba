"""adbench: unsupervised anomaly detection and localisation benchmarks for brain MRI."""
from __future__ import annotations

__version__ = "0.1.0"

from adbench.data.dataset import Dataset
from adbench.data.volume import DataError, SliceSet, Volume
from adbench.detector import Context, Detector, NotFittedError, Prediction, ReconstructionDetector
from adbench.plugins import DatasetSpec, MethodSpec, hookimpl

__all__ = [
    "__version__", "Volume", "SliceSet", "DataError", "Dataset", "Context", "Detector",
    "ReconstructionDetector", "Prediction", "NotFittedError", "MethodSpec", "DatasetSpec",
    "hookimpl",
]
