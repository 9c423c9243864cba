"""Registers the `realnet` method (RealNet on VGG16 blocks 3-5, as the SCRPS paper ran it)."""
from adbench import MethodSpec, hookimpl
from adbench.methods.realnet.detector import RealNet

PRESETS = {
    # CI: a few seconds on 2 cores (the random VGG16 build and ~14 backbone passes dominate):
    # 8 channels per layer, narrow reconstruction networks without attention, RRS 4 + 4,
    # one AFS batch and 2 iterations of batch 2.
    "smoke": {"afs_channels": [8, 8, 8], "afs_batches": 1, "channel_mult": [1, 2],
              "num_res_blocks": 1, "attention_mult": [], "rrs_channels": [4, 4],
              "residual_layers": 1, "batch_size": 2, "iterations": 2,
              "checkpoint_interval": 2, "log_interval": 1, "sample_interval": 2,
              "num_samples": 1},
    # 2 idle CPU cores, about 9 minutes of fit: the original's networks, ratios and losses
    # with a quarter of the AFS channels (64 per layer) and of the RRS channels (32 + 32),
    # batch 8, 8 AFS batches, 250 iterations (2,000 slices). Measured 4.0 s of CPU time per
    # iteration in a 1-thread process (VGG16's backbone passes are ~60% of it; the machine
    # was shared, so CPU time rather than wall time), halved for 2 cores: ~2 s/iteration,
    # 250 iterations in ~8.5 minutes plus ~15 s of AFS; longer where 2 threads scale worse
    # than 2x. At the original's widths one iteration of batch 8 took 17 s (130M parameters).
    "cpu-quick": {"afs_channels": [64, 64, 64], "rrs_channels": [32, 32], "batch_size": 8,
                  "afs_batches": 8, "iterations": 250, "checkpoint_interval": 50,
                  "log_interval": 10, "sample_interval": 50},
    # the original's widths, batch and optimiser, 4,000 iterations (64k slices): an estimate
    # of several minutes on one H200 with bf16 autocast, not measured
    "gpu-quick": {"iterations": 4000, "checkpoint_interval": 1000, "sample_interval": 1000,
                  "log_interval": 100},
    # the original's settings (1,000 epochs of batch 16, AFS over 64 batches)
    "paper": {},
}


@hookimpl
def adbench_methods():
    return [MethodSpec(
        name="realnet", factory=RealNet, kind="hybrid",
        description="RealNet: anomaly-aware VGG16 feature selection, feature reconstruction, "
                    "residual selection and segmentation on synthetic anomalies "
                    "(Zhang et al., CVPR 2024)",
        presets={k: dict(v) for k, v in PRESETS.items()},
    )]
