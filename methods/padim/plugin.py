"""Registers the `padim` method (PaDiM on VGG16 blocks 3-5, paper §3.2)."""
from adbench import MethodSpec, hookimpl
from adbench.methods.padim.detector import PaDiM

PRESETS = {
    "smoke": {"batch_size": 8, "n_features": 50, "max_train_slices": 24},
    "default": {},
    # 2 CPU cores in minutes: an evenly spread 1,000 of the training slices (each position's
    # 100 x 100 covariance still has 10x more samples than dimensions).
    "cpu-quick": {"max_train_slices": 1_000},
    # PaDiM's published reduction for its largest backbone kept 550 of 1792 WideResNet
    # channels; on VGG16's 1280 channels we keep 100 as for its ResNet18 setting (448 → 100).
    "paper": {"n_features": 100},
}


@hookimpl
def adbench_methods():
    return [MethodSpec(
        name="padim", factory=PaDiM, kind="feature",
        description="PaDiM: per-position Gaussian of random-subset VGG16 features, "
                    "Mahalanobis distance map",
        presets=PRESETS,
    )]
