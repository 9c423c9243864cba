"""MediCLIP detector: few-shot adapters and prompts on a frozen CLIP, trained on synthetic
anomalies; the map is P(abnormal) per pixel (a hybrid: its own map, not A_per)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch

from adbench.data.volume import SliceSet
from adbench.detector import Context, Detector, Prediction
from adbench.errors import ConfigError, WeightsError
from adbench.io import json_tensor, tensor_json
from adbench.params import PositiveFloat, PositiveInt, Range
from adbench.training import work_folder

from .model import build_clip, clip_fingerprint
from .training import MediCLIPHead, train_mediclip, training_digest
from .weights import ClipWeights, missing_message, resolve_clip_file

__all__ = ["DEFAULT_SYNTHESIS", "MediCLIP"]

#: the original samples its four tasks with probability 0.25 each, one of them IdentityTask
#: (no anomaly): p_anomaly 0.75
DEFAULT_SYNTHESIS = {"p_anomaly": 0.75}
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_PREFIX = "head."


class MediCLIP(Detector):
    """MediCLIP (Zhang et al., "MediCLIP: Adapting CLIP for Few-shot Medical Image Anomaly
    Detection", MICCAI 2024; code github.com/cnulab/MediCLIP, "code" below).

    clip_model        open_clip model name ("ViT-B-16", as the paper's Table 1 runs here; the
                      code's brain-MRI config uses ViT-L-14), or "tiny": a 3-block ViT for CPU
                      tests and smoke runs, never for results
    clip_weights      "pretrained" (clip_pretrained's file, found offline: ADBENCH_CLIP_WEIGHTS
                      or open_clip's cache), the path of a CLIP checkpoint, or "random" (seeded
                      from the run seed, recorded as source 'random')
    clip_pretrained   open_clip pretrained tag of clip_model ("openai")
    clip_image_size   CLIP's square input size, pixels (224)
    layers            image-encoder blocks whose patch tokens feed the adapters, 1-based
                      ([6, 9, 12]: the code's [12, 18, 24] of ViT-L-14's 24 blocks, scaled to 12)
    n_ctx             learned context tokens per prompt (8, code ``n_learnable_token``)
    causal_mask       CLIP's causal mask in the prompt encoder (False, as the code)
    k_shot            healthy training slices used (16, code ``--k_shot``), evenly spread
    synthesis         the shared synthesis config (adbench.nn.synthesis), merged over
                      {"p_anomaly": 0.75} (the code's IdentityTask probability 0.25)
    lr, beta1, beta2  Adam (1e-3, 0.5, 0.999: code)
    batch_size        slices per iteration (8, code); also the predict chunk
    epochs            length when iterations is None: epochs x ceil(k_shot / batch_size)
                      (200, code)
    iterations        length in iterations (None: from epochs)
    precision         training precision ("auto": bf16 autocast on CUDA, fp32 on the CPU)
    checkpoint_interval, log_interval, sample_interval   iterations between checkpoints,
                      loss-log records and sample grids

    Differences from the code: ViT-B-16 instead of ViT-L-14 by default; 160 x 128 single-
    channel slices resized (not cropped) to the square input; only the "end" prompt position;
    the shared synthesis (Perlin masks; healthy/procedural/intensity textures) instead of the
    code's CutPaste / Gaussian-intensity / source-deformation tasks; uniform batches with
    replacement instead of epochs of shuffled batches; the k shots are evenly spread slices,
    not a random sample of images; no model selection on the test set.
    """

    def __init__(self, clip_model: str = "ViT-B-16", clip_weights: ClipWeights = "pretrained",
                 clip_pretrained: str = "openai", clip_image_size: PositiveInt = 224,
                 layers: Sequence[int] = (6, 9, 12), n_ctx: PositiveInt = 8,
                 causal_mask: bool = False, k_shot: PositiveInt = 16,
                 synthesis: dict | None = None, lr: PositiveFloat = 1e-3,
                 beta1: Annotated[float, Range(0, 1, hi_open=True)] = 0.5,
                 beta2: Annotated[float, Range(0, 1, hi_open=True)] = 0.999,
                 batch_size: PositiveInt = 8, epochs: PositiveInt = 200,
                 iterations: PositiveInt | None = None,
                 precision: Literal["auto", "fp32", "bf16"] = "auto",
                 checkpoint_interval: PositiveInt = 100, log_interval: PositiveInt = 10,
                 sample_interval: PositiveInt = 100):
        self.clip_model = clip_model
        self.clip_weights = clip_weights
        self.clip_pretrained = clip_pretrained
        self.clip_image_size = clip_image_size
        self.layers = layers
        self.n_ctx = n_ctx
        self.causal_mask = causal_mask
        self.k_shot = k_shot
        self.synthesis = synthesis
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.batch_size = batch_size
        self.epochs = epochs
        self.iterations = iterations
        self.precision = precision
        self.checkpoint_interval = checkpoint_interval
        self.log_interval = log_interval
        self.sample_interval = sample_interval

    # -- configuration ---------------------------------------------------------------------
    @classmethod
    def validate_config(cls, cfg: dict) -> None:
        """Cross-key check of a resolved config, before anything is written: with
        ``clip_weights="pretrained"`` the checkpoint of (clip_model, clip_pretrained) must be
        found offline. Raises :class:`WeightsError` naming file, key and cache."""
        if cfg.get("clip_weights", "pretrained") == "pretrained":
            model = cfg.get("clip_model", "ViT-B-16")
            tag = cfg.get("clip_pretrained", "openai")
            if model == "tiny":
                raise ConfigError("clip_model='tiny' has no pretrained weights; set "
                                  "clip_weights=random (tests, smoke runs) or choose an open_clip "
                                  "model such as ViT-B-16")
            if resolve_clip_file(model, tag) is None:
                raise WeightsError(missing_message(model, tag))

    def training_config(self, k: int, size: tuple[int, int]) -> dict:
        from adbench.nn.synthesis import SynthesisConfig
        syn = SynthesisConfig.from_dict({**DEFAULT_SYNTHESIS, **dict(self.synthesis or {})})
        iters = (int(self.iterations) if self.iterations is not None
                 else int(self.epochs) * -(-int(k) // int(self.batch_size)))
        mean, std = _OPENAI_MEAN, _OPENAI_STD
        if self.clip_model != "tiny":
            from open_clip.pretrained import get_pretrained_cfg
            pcfg = get_pretrained_cfg(self.clip_model, self.clip_pretrained) or {}
            mean, std = pcfg.get("mean", mean), pcfg.get("std", std)
        keys = ("clip_model", "clip_pretrained", "clip_image_size", "n_ctx", "causal_mask", "lr",
                "beta1", "beta2", "batch_size", "precision", "checkpoint_interval",
                "log_interval", "sample_interval")
        return {**{k_: getattr(self, k_) for k_ in keys}, "layers": [int(i) for i in self.layers],
                "synthesis": syn.to_dict(), "iterations": iters, "k_shot": int(k),
                "image_shape": [int(size[0]), int(size[1])], "clip_mean": list(mean),
                "clip_std": list(std), "weights": dict(self.weights_info_)}

    def _clip(self, seed: int):
        return build_clip(self.clip_model, self.clip_weights, tag=self.clip_pretrained,
                          seed=seed, image_size=int(self.clip_image_size))

    # -- fit -------------------------------------------------------------------------------
    def _fit(self, train: SliceSet, ctx: Context) -> None:
        images = train.images
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"MediCLIP.fit: training images of shape {tuple(images.shape)}, "
                             "expected (N, 1, H, W)")
        self.validate_config(self.get_params())
        k = min(int(self.k_shot), len(train))
        idx = torch.linspace(0, len(train) - 1, k).round().long()
        brains = train.brain[:, None]            # (N, 1, H, W)
        shots = torch.cat([images[idx].float(), brains[idx].float()], dim=1)
        self.clip_seed_ = int(ctx.seed)
        clip, self.weights_info_ = self._clip(self.clip_seed_)
        cfg = self.training_config(k, tuple(images.shape[-2:]))
        ctx.log.info("MediCLIP: %d iterations of batch %d on %d shots (CLIP %s, weights %s)",
                     cfg["iterations"], cfg["batch_size"], k, self.clip_model,
                     self.weights_info_["source"])
        head = MediCLIPHead(clip, cfg, seed=ctx.seed)
        with work_folder(ctx.workdir, f"mediclip-{training_digest(cfg)}") as work:
            head = train_mediclip(head, shots, cfg, work, device=ctx.device, seed=ctx.seed,
                                  progress=ctx.progress, log=ctx.log)
        self._set_head(head, clip_fingerprint(clip))

    def _set_head(self, head: MediCLIPHead, fp: torch.Tensor) -> None:
        self.head_ = head.cpu().eval().requires_grad_(False)
        self.head_.clip.cpu()
        self.clip_fingerprint_ = fp
        with torch.no_grad():
            self._text = self.head_.text()      # fixed after training: compute once

    # -- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def _predict(self, x: torch.Tensor, ctx: Context) -> Prediction:
        head = self.head_.to(ctx.device)
        head.clip.to(ctx.device)
        text = self._text.to(ctx.device)
        maps = []
        for start in range(0, x.shape[0], int(self.batch_size)):
            xb = x[start:start + int(self.batch_size)].to(ctx.device, torch.float32)
            maps.append(head(xb, text)[:, 1].float().to(x.device))
        m = torch.cat(maps)
        return Prediction(maps=m, extras={"score": m.flatten(1).amax(1)})

    # -- state -----------------------------------------------------------------------------
    def _state_dict(self) -> dict[str, torch.Tensor]:
        state = {_PREFIX + k: v for k, v in self.head_.state_dict().items()}
        state["config_json"] = json_tensor(self.head_.cfg)
        state["clip.seed"] = torch.tensor(self.clip_seed_, dtype=torch.int64)
        state["clip.fingerprint"] = self.clip_fingerprint_
        return state

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        need = {"config_json", "clip.seed", "clip.fingerprint"}
        if need - set(state):
            raise KeyError(f"MediCLIP.load_state_dict: missing {sorted(need - set(state))}; was "
                           "this state saved by MediCLIP?")
        cfg = tensor_json(state["config_json"])
        if cfg["clip_model"] != self.clip_model:
            raise ValueError(f"MediCLIP state: fitted with clip_model={cfg['clip_model']!r}, "
                             f"but the config key `clip_model` is {self.clip_model!r}")
        self.clip_seed_ = int(state["clip.seed"])
        clip, self.weights_info_ = self._clip(self.clip_seed_)
        fp = clip_fingerprint(clip)
        if not torch.allclose(fp, state["clip.fingerprint"].double(), rtol=1e-9, atol=0.0):
            raise ValueError(f"MediCLIP state: the CLIP weights now behind clip_weights="
                             f"{self.clip_weights!r} ({self.weights_info_}) differ from those it "
                             f"was fitted with ({cfg.get('weights')}); point clip_weights at that "
                             f"checkpoint or fit again")
        head = MediCLIPHead(clip, cfg, seed=0)      # trained tensors replaced below
        head.load_state_dict({k[len(_PREFIX):]: v for k, v in state.items()
                              if k.startswith(_PREFIX)})
        self._set_head(head, fp)
