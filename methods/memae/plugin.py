"""Registers the `memae` method (paper defaults, plus smoke / cpu-quick / gpu-quick presets)."""
from adbench import MethodSpec, hookimpl
from adbench.methods.memae.detector import MemAE

PRESETS = {
    # CI: seconds on 2 cores; 4-channel-wide, 20 memory items, 4 iterations of 4 slices
    "smoke": {"memory_size": 20, "base_channels": 4, "channel_max": 8, "batch_size": 4,
              "iterations": 4, "checkpoint_interval": 4, "log_interval": 2, "sample_interval": 4,
              "num_samples": 2, "predict_batch_size": 16},
    # 2 idle CPU cores, ~6 minutes of training on the default synth training set: half widths
    # (32 -> 128 channels, items of length 128), the paper's CIFAR-10 memory size N = 500,
    # batch 16, and lr 1e-3 instead of 1e-4 so that 1,500 iterations (24k slices) learn the
    # anatomy. Measured on the shared machine: 20 iterations through the loop at
    # torch.set_num_threads(1) took 0.43-0.46 s of process CPU time each (3 repeats; wall
    # 0.85-0.90 s, inflated by other jobs); halved for 2 threads ~0.22 s/iteration (up to
    # ~0.26 s with imperfect 2-thread scaling): 1,500 iterations ~ 5.5-6.5 minutes.
    "cpu-quick": {"base_channels": 32, "channel_max": 128, "memory_size": 500, "batch_size": 16,
                  "lr": 1e-3, "iterations": 1500, "checkpoint_interval": 250,
                  "log_interval": 25, "sample_interval": 250},
    # One H200: the paper's network and optimisation (full width, N = 2000, batch 10, lr 1e-4)
    # stopped at 20,000 of its 50,000 iterations; an estimate of a few minutes (a small,
    # launch-bound network at ~5-10 ms per iteration), not measured.
    "gpu-quick": {"iterations": 20_000, "checkpoint_interval": 2000, "sample_interval": 2000,
                  "predict_batch_size": 256},
    "paper": {},
}


@hookimpl
def adbench_methods():
    return [MethodSpec(
        name="memae", factory=MemAE, kind="reconstruction",
        description="MemAE: autoencoder reading a learned memory of normal patterns with "
                    "sparse addressing (Gong et al., ICCV 2019)",
        presets={k: dict(v) for k, v in PRESETS.items()},
        predict_keys=("predict_batch_size",),
    )]
