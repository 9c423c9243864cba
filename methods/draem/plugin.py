"""Registers the `draem` method (the original's settings, plus smoke / cpu-quick / gpu-quick)."""
from adbench import MethodSpec, hookimpl
from adbench.methods.draem.detector import DRAEM

PRESETS = {
    # CI: about a second on 2 cores: 4-channel networks, 4 iterations of batch 4; a pipeline
    # check, not a model.
    "smoke": {"rec_width": 4, "disc_width": 4, "batch_size": 4, "iterations": 4,
              "pool_size": 8, "checkpoint_interval": 4, "log_interval": 2, "sample_interval": 4,
              "num_samples": 2},
    # 2 CPU cores, ~11 minutes of fit: widths 8 / 8 (the original's 128 / 64), batch 8 as the
    # original, 400 iterations. A 1-thread process measured 0.89 s of CPU per iteration
    # (synthesis included; 2.35 s at widths 16 / 16), but a full cpu-quick run on synth ran
    # 1.6 s/iteration on 2 cores at load ~4 (iterations 25-50), so 400 rather than 1,000.
    # lr 5e-4 instead of 1e-4 because the run is ~1 % of the original's length (the x0.2
    # steps at 80 % / 90 % are kept); not tuned on real data.
    "cpu-quick": {"rec_width": 8, "disc_width": 8, "batch_size": 8, "iterations": 400,
                  "lr": 5e-4, "checkpoint_interval": 100, "log_interval": 25,
                  "sample_interval": 100},
    # The original's widths (128 / 64), lr and batch; 10,000 iterations. An estimate, NOT
    # measured: ~97 M parameters, ~170 GFLOP per 160 x 128 slice forward, so ~4 TFLOP per
    # batch of 8 forward and backward; batch 8 uses an H200 poorly, so ~15-30 iterations/s
    # with bf16 autocast: 6-11 minutes.
    "gpu-quick": {"iterations": 10000, "checkpoint_interval": 1000, "sample_interval": 1000,
                  "log_interval": 100},
    # The original's settings (train_DRAEM.py): widths 128 / 64, Adam 1e-4 with x0.2 at 80 %
    # and 90 %, batch 8, 700 epochs. An epoch here is floor(N / 8) iterations of uniformly
    # drawn batches on N training slices (the original: one pass over a shuffled MVTec
    # category), so 700 epochs = 700 N / 8 iterations; set `iterations` to cap it.
    "paper": {},
}


@hookimpl
def adbench_methods():
    return [MethodSpec(
        name="draem", factory=DRAEM, kind="hybrid",
        description="DRÆM: reconstructive + discriminative sub-networks trained on synthetic "
                    "anomalies; map = the segmentation output (Zavrtanik et al., ICCV 2021)",
        presets={k: dict(v) for k, v in PRESETS.items()},
        predict_keys=("score_pool",),   # the image score's filter only: the model is reused
    )]
