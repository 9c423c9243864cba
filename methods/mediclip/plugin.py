"""Registers the `mediclip` method (MediCLIP, MICCAI 2024: the authors' settings, plus
smoke / cpu-quick / gpu-quick)."""
from adbench import MethodSpec, hookimpl
from adbench.methods.mediclip.detector import MediCLIP

PRESETS = {
    # CI: the tiny CLIP (3-block ViT at 96 x 96, chosen explicitly), 4 shots, 3 iterations of
    # batch 2: seconds on 2 cores. Weights stay "pretrained", so offline the run stops (exit 2)
    # until asked for `--set clip_weights=random` by name.
    "smoke": {"clip_model": "tiny", "clip_image_size": 96,
              "layers": [1, 2, 3], "n_ctx": 4, "k_shot": 4, "batch_size": 2, "iterations": 3,
              "checkpoint_interval": 3, "log_interval": 1, "sample_interval": 3},
    # 2 CPU cores, about 7-8 minutes of training: ViT-B-16 at 224, the authors' 16 shots and
    # batch 8, 80 iterations (40 of the authors' 200 epochs). Measured with random weights:
    # 10.7 s of CPU time per iteration in a 1-thread process (7.3 s of it the forward pass:
    # 8 images through the frozen image encoder, 21 prompts of 77 tokens through the text
    # encoder; the machine was shared, so CPU time rather than wall time), halved for 2
    # cores: ~5.4 s/iteration, 80 iterations in ~7 minutes, plus ~15 s to build CLIP; predict
    # ~0.45 s of CPU time per slice. Needs clip_weights (pretrained, or a path;
    # --set clip_weights=random for a timing run).
    "cpu-quick": {"iterations": 80, "checkpoint_interval": 20, "log_interval": 5,
                  "sample_interval": 20},
    # one H200: the authors' whole schedule (200 epochs of 16 shots at batch 8 = 400
    # iterations), an estimate of one to two minutes with bf16 autocast; not measured
    "gpu-quick": {"iterations": 400, "checkpoint_interval": 100, "sample_interval": 100},
    "paper": {},
}


@hookimpl
def adbench_methods():
    return [MethodSpec(
        name="mediclip", factory=MediCLIP, kind="hybrid",
        description="MediCLIP: CLIP adapters and learned prompts, few-shot on synthetic "
                    "anomalies (Zhang et al., MICCAI 2024)",
        presets={k: dict(v) for k, v in PRESETS.items()},
    )]
