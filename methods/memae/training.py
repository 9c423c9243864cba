"""MemAE training (Gong et al. 2019, §3.4) as a task of the shared training loop.

One phase, ``AE``, every iteration: Eq. 10,

    L = MSE(x, x̂) + α · E(ŵ),

the mean squared reconstruction error over the pixels of the batch plus α times the mean
addressing entropy (Eq. 9) over the batch's grid positions, minimised with Adam over the
encoder, the decoder and the memory M together (authors' ``script_training.py``: Adam,
lr 1e-4, α = 0.0002). The loop owns the data draw, checkpoints, resume, DDP, the JSONL log
(``loss``, ``loss_mse``, ``loss_entropy``, ``active_items``: memory items with ŵ > 0 per
grid position) and the sample grids: each ``samples_<iteration>.png`` shows a few fixed
training slices, each followed by its reconstruction (eval mode, so the grid does not touch
BatchNorm's running statistics).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from adbench.training import Env, LoopSettings, Phase, Step, TrainingTask, config_digest, train

from .memory import addressing_entropy
from .networks import MemAENet

__all__ = [
    "CHECKPOINT_NAME",
    "RESUME_MUTABLE",
    "MemAETask",
    "network_config",
    "train_memae",
    "training_digest",
]

CHECKPOINT_NAME = "memae-checkpoint.pt"

#: config keys that may differ between a checkpoint and the config that resumes it
RESUME_MUTABLE = ("iterations", "checkpoint_interval", "log_interval", "sample_interval",
                  "num_samples", "compile")

_NETWORK_KEYS = ("size", "levels", "base", "channel_max", "memory_size", "shrink_threshold",
                 "addressing")


def network_config(cfg: dict) -> dict:
    """The :class:`MemAENet` arguments of a training config."""
    return {k: cfg[k] for k in _NETWORK_KEYS}


def training_digest(cfg: dict) -> str:
    """Short hash of what defines a training (not its length or logging): equal digests can
    resume each other's checkpoints."""
    return config_digest(cfg, RESUME_MUTABLE)


def build_network(cfg: dict, seed: int) -> MemAENet:
    """The network initialised from ``seed`` alone (constructors draw from the global RNG,
    so it is forked: the caller's random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return MemAENet(**network_config(cfg))


def sample_slices(images: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` fixed training slices for the sample grid: evenly spaced indices, no draw."""
    idx = torch.linspace(0, images.shape[0] - 1, min(k, images.shape[0])).round().long()
    return images[idx].float()


class MemAETask(TrainingTask):
    """The MemAE network and its Adam, built on ``device`` from ``seed`` alone."""

    def __init__(self, cfg: dict, *, seed: int, device: torch.device,
                 sample_images: torch.Tensor):
        self.cfg = cfg
        self.device = device
        self.net = build_network(cfg, seed).to(device).train()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=float(cfg["lr"]))
        self.sample_x = sample_images.to(device)
        self.run = self.net

    # -- what the loop checkpoints
    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"net": self.opt}

    def extra_state(self):
        return {"network_config": json.dumps(self.net.config())}

    def setup(self, env: Env) -> None:
        self.run = env.compile(self.net)

    # -- one iteration
    def _loss(self, step: Step) -> torch.Tensor:
        x = step.real
        rec, att = self.run(x)
        mse = F.mse_loss(rec.float(), x.float())
        ent = addressing_entropy(att.float())
        loss = mse + float(self.cfg["entropy_weight"]) * ent
        step.track("loss", loss)
        step.track("loss_mse", mse)
        step.track("loss_entropy", ent)
        step.track("active_items", (att.detach() > 0).float().sum(dim=1).mean())
        return loss

    def phases(self) -> list[Phase]:
        return [Phase("AE", (self.net,), "net", self._loss)]

    def samples(self) -> torch.Tensor:
        """Each fixed training slice followed by its reconstruction, (2k, 1, H, W)."""
        self.net.eval()
        try:
            rec = self.net(self.sample_x)[0].float()
        finally:
            self.net.train()
        return torch.stack([self.sample_x, rec.clamp(-1, 1)], dim=1).flatten(0, 1)


def train_memae(images: torch.Tensor, cfg: dict, workdir: Path | str, *, seed: int = 0,
                device: str | torch.device = "cpu", progress: bool = False,
                log: Callable[[str], None] | None = None) -> MemAENet:
    """Train (or resume, or load a complete) MemAE and return the network in eval mode.

    images   (N, 1, H, W) healthy slices in [-1, 1], H and W divisible by 2^levels.
    cfg      the whole training config (:meth:`MemAE.training_config`).
    workdir  holds ``memae-checkpoint.pt``, ``train_log.jsonl`` and ``samples_*.png``.
    """
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"train_memae images: got {getattr(images, 'shape', type(images))}, "
                         "expected a tensor (N, 1, H, W)")
    if list(images.shape[2:]) != list(cfg["size"]):
        raise ValueError(f"train_memae: images are {tuple(images.shape[2:])}, the config's size "
                         f"is {tuple(cfg['size'])}")
    dev = torch.device(device)
    task = MemAETask(cfg, seed=seed, device=dev,
                     sample_images=sample_slices(images, int(cfg["num_samples"])))
    settings = LoopSettings(iterations=int(cfg["iterations"]), batch_size=int(cfg["batch_size"]),
                            checkpoint_interval=int(cfg["checkpoint_interval"]),
                            log_interval=int(cfg["log_interval"]),
                            sample_interval=int(cfg["sample_interval"]),
                            precision=cfg["precision"], compile=bool(cfg["compile"]),
                            checkpoint_name=CHECKPOINT_NAME, desc="memae")
    train(task, images, settings, workdir, config=cfg, mutable=RESUME_MUTABLE, seed=seed,
          device=dev, progress=progress, log=log)
    return task.net.eval().requires_grad_(False)
