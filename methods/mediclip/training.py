"""MediCLIP's few-shot training as a task of the shared loop (:mod:`adbench.training.loop`).

One phase, ``main``, per iteration (the original's ``train_one_epoch``):

1. the loop draws a batch of the k shots (uniform with replacement);
2. each slice gets a synthetic anomaly from :mod:`adbench.nn.synthesis` (config key
   ``synthesis``; with probability 1 - p_anomaly none, the original's ``IdentityTask``),
   seeded by (seed, iteration, position) so a resumed run draws the same anomalies; the
   k shots are the ``healthy`` texture pool, as the original cut-pastes from its support set;
3. frozen CLIP's block tokens -> adapters -> P(abnormal) against the learned prompts;
4. loss = focal(P, mask) + dice(P_abnormal, mask) (the original's ``FocalLoss`` with gamma 2,
   smoothing 1e-5, no class weights, and ``BinaryDiceLoss`` with smoothing 1);
5. Adam on the adapters and the prompt contexts (lr 1e-3, betas (0.5, 0.999), the original's).

The checkpoint holds only the adapters and prompt contexts (CLIP is frozen and rebuilt from
its recorded weights), so ``N`` + resume + ``N`` iterations equal ``2N`` on the CPU.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from adbench.nn.synthesis import SynthesisConfig, sample_seeds, synthesize
from adbench.training import LoopSettings, Phase, Step, TrainingTask, config_digest, train

from .model import VisionAdapters, anomaly_probability, clip_input, patch_tokens
from .prompts import PromptLearner

__all__ = [
    "CHECKPOINT_NAME",
    "RESUME_MUTABLE",
    "MediCLIPHead",
    "MediCLIPTask",
    "dice_loss",
    "focal_loss",
    "train_mediclip",
    "training_digest",
]

CHECKPOINT_NAME = "mediclip-checkpoint.pt"
RESUME_MUTABLE = ("iterations", "checkpoint_interval", "log_interval", "sample_interval")


def training_digest(cfg: dict) -> str:
    return config_digest(cfg, RESUME_MUTABLE)


def focal_loss(prob: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0,
               smooth: float = 1e-5) -> torch.Tensor:
    """Mean over pixels of -(1 - p_t)^gamma log p_t; prob (B, 2, H, W) softmax output, mask
    (B, 1, H, W) in {0, 1}; the one-hot target is clamped to [smooth, 1 - smooth] and p_t =
    <target, prob> + smooth (the original's ``FocalLoss``)."""
    target = torch.cat([1 - mask, mask], dim=1).clamp(smooth, 1 - smooth)
    pt = (target * prob).sum(1) + smooth
    return (-(1 - pt).pow(gamma) * pt.log()).mean()


def dice_loss(p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - mean_i (2 <p_i, m_i> + 1) / (sum p_i + sum m_i + 1); p, mask (B, H, W)."""
    p, m = p.flatten(1), mask.flatten(1)
    return 1 - ((2 * (p * m).sum(1) + 1) / (p.sum(1) + m.sum(1) + 1)).mean()


class MediCLIPHead(nn.Module):
    """The trained part: ``adapters`` (:class:`VisionAdapters`) and ``prompts``
    (:class:`PromptLearner`), with the frozen CLIP beside it (not a submodule: not saved).

    forward(x) maps slices (B, 1, H, W) in [-1, 1] to P (B, 2, H, W).
    """

    def __init__(self, clip: nn.Module, cfg: dict, *, seed: int):
        super().__init__()
        self._clip = [clip]         # a list: keeps CLIP out of state_dict and .to()
        self.cfg = cfg
        g = torch.Generator().manual_seed(int(seed))
        size = int(cfg["clip_image_size"])
        with torch.no_grad():
            probe = torch.zeros(1, 3, size, size)
            widths = [t.shape[1] for t in patch_tokens(clip, probe, cfg["layers"])]
        embed = clip.text_projection.shape[-1] if torch.is_tensor(clip.text_projection) else \
            clip.text_projection.out_features
        with torch.random.fork_rng(devices=[]):     # conv init draws from the global RNG
            torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=g)))
            self.adapters = VisionAdapters(widths, embed)
        self.prompts = PromptLearner(clip, int(cfg["n_ctx"]), generator=g)

    @property
    def clip(self) -> nn.Module:
        return self._clip[0]

    def text(self) -> torch.Tensor:
        return self.prompts.text_features(self.clip, bool(self.cfg["causal_mask"]))

    def forward(self, x: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.cfg
        inp = clip_input(x, int(cfg["clip_image_size"]), cfg["clip_mean"], cfg["clip_std"])
        with torch.no_grad():
            tokens = patch_tokens(self.clip, inp, cfg["layers"])
        feats = self.adapters(tokens)
        return anomaly_probability(feats, self.text() if text is None else text,
                                   tuple(x.shape[-2:]))


class MediCLIPTask(TrainingTask):
    """The head trained on the k shots; ``images`` carries the slice (channel 0) and its
    brain mask (channel 1) so the loop's uniform draw gives both."""

    def __init__(self, head: MediCLIPHead, cfg: dict, shots: torch.Tensor, *, seed: int,
                 device: torch.device):
        self.head = head.to(device)
        self.head.clip.to(device)
        self.cfg = cfg
        self.seed = int(seed)
        self.synthesis = SynthesisConfig.from_dict(cfg["synthesis"])
        self.pool = shots[:, :1].float()
        self.opt = torch.optim.Adam(list(self.head.parameters()), lr=float(cfg["lr"]),
                                    betas=(float(cfg["beta1"]), float(cfg["beta2"])))
        self.sample_x = shots[: min(4, shots.shape[0]), :1].float()

    def modules(self):
        return {"head": self.head}

    def optimizers(self):
        return {"head": self.opt}

    def augment(self, real: torch.Tensor, step: Step) -> torch.Tensor:
        img, brain = real[:, :1], real[:, 1:2] > 0.5
        seeds = sample_seeds(self.seed, step.iteration, n=img.shape[0])
        aug, mask = synthesize(img, brain, seeds, config=self.synthesis,
                               pool=self.pool.to(img.device))
        step.shared["mask"] = mask
        return aug

    def _main(self, step: Step) -> torch.Tensor:
        prob = self.head(step.real).float()
        mask = step.shared["mask"].float()
        focal, dice = focal_loss(prob, mask), dice_loss(prob[:, 1], mask[:, 0])
        step.track("loss_focal", focal)
        step.track("loss_dice", dice)
        step.track("anomalous_fraction", mask.mean())
        return focal + dice

    def phases(self) -> list[Phase]:
        return [Phase("main", (self.head,), "head", self._main)]

    def samples(self) -> torch.Tensor:
        """(slice, P(abnormal) in [-1, 1]) pairs of up to four shots."""
        self.head.eval()
        try:
            x = self.sample_x.to(next(self.head.parameters()).device)
            p = self.head(x)[:, 1:2].float() * 2 - 1
        finally:
            self.head.train()
        return torch.stack([x, p], dim=1).flatten(0, 1)


def train_mediclip(head: MediCLIPHead, shots: torch.Tensor, cfg: dict, workdir: Path | str, *,
                   device: str | torch.device = "cpu", seed: int = 0, progress: bool = False,
                   log: Callable[[str], None] | None = None) -> MediCLIPHead:
    """Train (or resume, or load when complete) ``head`` on ``shots`` (k, 2, H, W): slice and
    brain mask. Returns the head in eval mode on ``device``, without gradients."""
    dev = torch.device(device)
    task = MediCLIPTask(head, cfg, shots, seed=seed, device=dev)
    settings = LoopSettings(iterations=int(cfg["iterations"]), batch_size=int(cfg["batch_size"]),
                            checkpoint_interval=int(cfg["checkpoint_interval"]),
                            log_interval=int(cfg["log_interval"]),
                            sample_interval=int(cfg["sample_interval"]),
                            precision=cfg["precision"], checkpoint_name=CHECKPOINT_NAME,
                            desc="mediclip")
    train(task, shots, settings, workdir, config=cfg, mutable=RESUME_MUTABLE, seed=seed,
          device=dev, progress=progress, log=log)
    return task.head.eval().requires_grad_(False)
