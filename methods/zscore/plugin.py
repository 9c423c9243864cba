"""Registers the `zscore` method."""
from adbench import MethodSpec, hookimpl
from adbench.methods.zscore.detector import ZScore


@hookimpl
def adbench_methods():
    return [MethodSpec(
        name="zscore", factory=ZScore, kind="baseline",
        description="voxel-wise z-score against healthy training slices (sanity baseline)",
        predict_keys=("eps",),  # eps only enters the map, never the fitted mean/std
    )]
