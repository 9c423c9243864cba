"""DRÆM training as a task of the shared training loop (:mod:`adbench.training.loop`).

One phase per iteration (the original trains both sub-networks with one Adam):

=========  ==============================================================================
``main``   x_aug, M = synthesize(x); x_rec = R(x_aug); logits = D(concat(x_rec, x_aug));
           L = ||x_rec - x||^2 + (1 - SSIM(x_rec, x)) + Focal(softmax(logits), M)
           (paper Eq. 1-4; L2 is the mean squared error, SSIM on [-1, 1] with L = 2, focal
           gamma = 2). The focal term's gradient reaches R through x_rec, as in the code.
=========  ==============================================================================

Adam (lr 1e-4) on both networks; the learning rate is multiplied by 0.2 at 80 % and at 90 %
of the iterations (the code's ``MultiStepLR([0.8 epochs, 0.9 epochs], gamma=0.2)``), set
from the iteration number so that a resumed run follows the same schedule.

The loop's data stream draws (image, brain mask) pairs (two channels); each drawn sample's
anomaly comes from :func:`adbench.nn.synthesis.synthesize` with the seed
``sample_seeds(seed, iteration, rank)[i]``, so ``N`` + resume + ``N`` iterations equal ``2N``.
The ``healthy`` texture source draws from ``pool``: up to ``pool_size`` evenly spaced
training slices, re-derived from the training set (which the config's digest covers).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from adbench.nn.synthesis import SynthesisConfig, sample_seeds, synthesize
from adbench.training import LoopSettings, Phase, Step, TrainingTask, config_digest, train
from adbench.training.distributed import dist_info
from adbench.training.losses import focal_loss, ssim

from .networks import DiscriminativeNet, ReconstructiveNet, check_size

__all__ = [
    "CHECKPOINT_NAME",
    "RESUME_MUTABLE",
    "DraemTask",
    "draem_loss",
    "lr_factor",
    "train_draem",
    "training_digest",
]

CHECKPOINT_NAME = "draem-checkpoint.pt"
#: keys that may differ between a checkpoint and the config that resumes it (``iterations``
#: is not one: the learning-rate milestones depend on it)
RESUME_MUTABLE = ("checkpoint_interval", "log_interval", "sample_interval", "num_samples")
#: D is built from seed + this, so its draws differ from R's
D_SEED_OFFSET = 1


def training_digest(cfg: dict) -> str:
    """Short hash of the settings that define a training: equal digests resume each other."""
    return config_digest(cfg, RESUME_MUTABLE)


def lr_factor(iteration: int, iterations: int, milestones=(0.8, 0.9), gamma: float = 0.2) -> float:
    """MultiStepLR's factor gamma^k at 0-based ``iteration``, k = milestones passed
    (milestone m at iteration floor(m * iterations))."""
    return gamma ** sum(iteration >= int(m * iterations) for m in milestones)


def draem_loss(x: torch.Tensor, rec: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor,
               gamma: float = 2.0) -> dict[str, torch.Tensor]:
    """DRÆM's loss terms (scalars): ``l2`` mean (x_rec - x)^2, ``ssim`` 1 - SSIM(x_rec, x),
    ``focal`` focal loss of logits (B, 2, H, W) against mask (B, 1, H, W), and ``total``."""
    l2 = (rec.float() - x.float()).square().mean()
    s = 1 - ssim(rec.float(), x.float(), data_range=2.0).mean()
    f = focal_loss(logits, mask[:, 0].long(), gamma=gamma)
    return {"l2": l2, "ssim": s, "focal": f, "total": l2 + s + f}


def build_networks(cfg: dict, seed: int) -> tuple[ReconstructiveNet, DiscriminativeNet]:
    """R and D from ``seed`` alone (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        R = ReconstructiveNet(int(cfg["rec_width"]))
        torch.manual_seed(int(seed) + D_SEED_OFFSET)
        D = DiscriminativeNet(int(cfg["disc_width"]))
    return R, D


def pool_of(images: torch.Tensor, size: int) -> torch.Tensor:
    """Up to ``size`` evenly spaced slices of ``images`` (N, 1, H, W): the healthy pool."""
    k = min(int(size), images.shape[0])
    idx = torch.linspace(0, images.shape[0] - 1, k).round().long()
    return images[idx].float().contiguous()


class DraemTask(TrainingTask):
    """R and D of one DRÆM training on ``data`` = concat(image, brain) (N, 2, H, W)."""

    def __init__(self, cfg: dict, data: torch.Tensor, *, seed: int, device: torch.device):
        self.cfg = cfg
        self.seed = int(seed)
        self.device = device
        self.synthesis = SynthesisConfig.from_dict(cfg["synthesis"])
        self.R, self.D = (m.to(device) for m in build_networks(cfg, seed))
        params = [{"params": self.R.parameters()}, {"params": self.D.parameters()}]
        self.opt = torch.optim.Adam(params, lr=float(cfg["lr"]))
        self.pool = pool_of(data[:, :1], int(cfg["pool_size"]))
        k = min(int(cfg["num_samples"]), data.shape[0])
        idx = torch.linspace(0, data.shape[0] - 1, k).round().long()
        self.sample_data = data[idx].float()
        self.rank = dist_info()[0]

    def modules(self):
        return {"R": self.R, "D": self.D}

    def optimizers(self):
        return {"opt": self.opt}

    def _synthesize(self, real: torch.Tensor, seeds: torch.Tensor):
        img, brain = real[:, :1].float(), real[:, 1:2] > 0.5
        aug, mask = synthesize(img, brain, seeds, config=self.synthesis, pool=self.pool)
        return img, aug.to(real.device), mask.to(real.device)

    def augment(self, real: torch.Tensor, step: Step) -> torch.Tensor:
        seeds = sample_seeds(self.seed, step.iteration, self.rank, n=real.shape[0])
        img, aug, mask = self._synthesize(real, seeds)
        step.shared.update(aug=aug, mask=mask)
        return img

    def _main(self, step: Step) -> torch.Tensor:
        factor = lr_factor(step.iteration, int(self.cfg["iterations"]))
        for group in self.opt.param_groups:
            group["lr"] = float(self.cfg["lr"]) * factor
        aug, mask = step.shared["aug"], step.shared["mask"]
        rec = self.R(aug)
        logits = self.D(torch.cat([rec, aug], dim=1))
        terms = draem_loss(step.real, rec, logits, mask, gamma=float(self.cfg["focal_gamma"]))
        for name in ("l2", "ssim", "focal"):
            step.track(f"loss_{name}", terms[name])
        step.track("lr", torch.tensor(float(self.cfg["lr"]) * factor))
        step.track("anomalous", (mask.flatten(1).amax(1) > 0).float().mean())
        return terms["total"]

    def phases(self) -> list[Phase]:
        return [Phase("main", (self.R, self.D), "opt", self._main)]

    def samples(self) -> torch.Tensor:
        """Rows of (augmented slice, reconstruction, mask, predicted anomaly map) for the
        fixed training slices (seed -1: the same anomalies in every grid), in eval mode."""
        seeds = sample_seeds(self.seed, -1, n=self.sample_data.shape[0])
        _, aug, mask = self._synthesize(self.sample_data.to(self.device), seeds)
        self.R.eval(), self.D.eval()
        try:
            rec = self.R(aug)
            prob = torch.softmax(self.D(torch.cat([rec, aug], dim=1)).float(), dim=1)[:, 1:]
        finally:
            self.R.train(), self.D.train()
        return torch.stack([aug, rec.float().clamp(-1, 1), 2 * mask - 1, 2 * prob - 1],
                           dim=1).flatten(0, 1)


def train_draem(images: torch.Tensor, brain: torch.Tensor, cfg: dict, workdir: Path | str, *,
                device: str | torch.device = "cpu", seed: int = 0, progress: bool = False,
                log: Callable[[str], None] | None = None
                ) -> tuple[ReconstructiveNet, DiscriminativeNet]:
    """Train (or resume, or load when complete) DRÆM on healthy slices; return (R, D) in
    eval mode on ``device`` without gradients.

    images  (N, 1, H, W) in [-1, 1], H and W divisible by 32; brain (N, H, W) bool.
    cfg     the training config of :meth:`DRAEM.training_config`.
    workdir holds ``draem-checkpoint.pt``, ``train_log.jsonl`` and ``samples_*.png``.
    """
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"DRÆM training images: got {getattr(images, 'shape', type(images))}, "
                         "expected a tensor (N, 1, H, W)")
    check_size(tuple(images.shape[2:]))
    data = torch.cat([images.float(), brain.reshape(images.shape).float()], dim=1)
    dev = torch.device(device)
    task = DraemTask(cfg, data, seed=seed, device=dev)
    settings = LoopSettings(iterations=int(cfg["iterations"]), batch_size=int(cfg["batch_size"]),
                            checkpoint_interval=int(cfg["checkpoint_interval"]),
                            log_interval=int(cfg["log_interval"]),
                            sample_interval=int(cfg["sample_interval"]),
                            precision=cfg["precision"], checkpoint_name=CHECKPOINT_NAME,
                            desc="draem")
    train(task, data, settings, workdir, config=cfg, mutable=RESUME_MUTABLE, seed=seed,
          device=dev, progress=progress, log=log)
    return (task.R.to(dev).eval().requires_grad_(False),
            task.D.to(dev).eval().requires_grad_(False))
