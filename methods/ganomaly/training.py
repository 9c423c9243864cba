"""GANomaly training as a task of the shared training loop (:mod:`adbench.training.loop`).

One iteration runs two phases, in the order of the authors' ``optimize_params``:

=========  ==============================================================================
``Gmain``  x̂, z, ẑ = G(x); L = w_adv L_adv + w_con L_con + w_enc L_enc (Eq. 1-4), Adam on G
``Dmain``  (BCE(D(x), 1) + BCE(D(x̂), 0)) / 2 on the x̂ of ``Gmain`` (detached, made before
           G's step, as the code's ``forward_d``), Adam on D
=========  ==============================================================================

Both Adams use lr 2e-4 and betas (0.5, 0.999) (the authors' ``options.py``). As in their code,
D is re-initialised (:func:`~.networks.dcgan_init_`, weights only, Adam state kept) when its
loss falls below ``d_reinit_threshold`` (1e-5); here the draws come from the loop's
``reinit`` stream and the re-initialisation happens at the start of the next iteration,
which is when the code's next G step first sees it. The flag travels in the checkpoint, so
``N`` + resume + ``N`` iterations equal ``2N`` bit for bit on the CPU. Under ``torchrun``
the decision uses D's loss averaged over ranks and the new D is rank 0's, so the ranks stay
in step.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from adbench.training import (LoopSettings, Phase, Step, TrainingTask, all_reduce_mean,
                              config_digest, train)
from adbench.training.distributed import broadcast_modules

from .losses import discriminator_loss, generator_losses
from .networks import (GANomalyGenerator, build_discriminator, build_generator, dcgan_init_,
                       discriminate, network_config)

__all__ = ["GANomalyTask", "train_ganomaly", "training_digest", "CHECKPOINT_NAME",
           "RESUME_MUTABLE", "D_SEED_OFFSET"]

CHECKPOINT_NAME = "ganomaly-checkpoint.pt"
#: keys that may differ between a checkpoint and the config that resumes it
RESUME_MUTABLE = ("iterations", "checkpoint_interval", "log_interval", "sample_interval",
                  "num_samples")
#: D is built from seed + this, so it does not start as a copy of G_E
D_SEED_OFFSET = 1


def training_digest(cfg: dict) -> str:
    """Short hash of the settings that define a training (not its length or logging): equal
    digests can resume each other's checkpoints."""
    return config_digest(cfg, RESUME_MUTABLE)


class GANomalyTask(TrainingTask):
    """G and D of one GANomaly training, built on ``device`` from ``seed`` alone.

    cfg     the training config of :meth:`GANomaly.training_config` (networks, weights,
            optimiser, length, intervals).
    images  the training slices (N, 1, H, W); ``num_samples`` evenly spaced ones are the
            fixed slices of the sample grids.
    """

    streams = ("reinit",)

    def __init__(self, cfg: dict, images: torch.Tensor, *, seed: int, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.net_cfg = network_config(tuple(images.shape[2:]), cfg["nz"], cfg["ngf"], cfg["ndf"],
                                      cfg["channel_max"])
        self.G = build_generator(self.net_cfg, seed).to(device)
        self.D = build_discriminator(self.net_cfg, seed + D_SEED_OFFSET).to(device)
        betas = (float(cfg["beta1"]), float(cfg["beta2"]))
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=float(cfg["lr"]), betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=float(cfg["lr"]), betas=betas)
        # D's loss of the previous iteration (inf: none yet), checked before the next G step
        self.last_d_loss = torch.full((), float("inf"), device=device)
        k = min(int(cfg["num_samples"]), images.shape[0])
        idx = torch.linspace(0, images.shape[0] - 1, k).round().long()
        self.sample_x = images[idx].float().to(device)

    # -- what the loop checkpoints
    def modules(self):
        return {"G": self.G, "D": self.D}

    def optimizers(self):
        return {"G": self.opt_G, "D": self.opt_D}

    def extra_state(self):
        return {"last_d_loss": self.last_d_loss.detach().cpu(),
                "network_config": json.dumps(self.net_cfg)}

    def load_extra_state(self, state):
        self.last_d_loss = state["last_d_loss"].to(self.device)

    # -- one iteration
    def _maybe_reinit_d(self, step: Step) -> None:
        threshold = float(self.cfg["d_reinit_threshold"])
        collapsed = threshold > 0 and bool(self.last_d_loss < threshold)   # one host sync
        if collapsed:   # every rank decides alike (the loss is averaged) and takes rank 0's D
            dcgan_init_(self.D, step.streams["reinit"])
            broadcast_modules([self.D])
            # a new tensor: the old one is also the loss value the log is averaging
            self.last_d_loss = torch.full((), float("inf"), device=self.device)
        step.track("d_reinit", torch.tensor(float(collapsed)))

    def _g_main(self, step: Step) -> torch.Tensor:
        self._maybe_reinit_d(step)
        x = step.real
        x_hat, z, z_hat = self.G(x)
        with torch.no_grad():        # f(x): D is frozen in this phase and x is a constant
            _, feat_real = discriminate(self.D, x)
        _, feat_fake = discriminate(self.D, x_hat)
        cfg = self.cfg
        losses = generator_losses(feat_real, feat_fake, x, x_hat, z, z_hat, w_adv=cfg["w_adv"],
                                  w_con=cfg["w_con"], w_enc=cfg["w_enc"])
        step.shared["fake"] = x_hat.detach()
        for k in ("adv", "con", "enc"):
            step.track(f"loss_{k}", losses[k])
        step.track("loss_G", losses["total"])
        return losses["total"]

    def _d_main(self, step: Step) -> torch.Tensor:
        real_logits, _ = discriminate(self.D, step.real)
        fake_logits, _ = discriminate(self.D, step.shared["fake"])
        loss = discriminator_loss(real_logits, fake_logits)
        self.last_d_loss = all_reduce_mean(loss.detach().float().clone())
        step.track("loss_D", loss)
        step.track("real_logit", real_logits.float().mean())
        step.track("fake_logit", fake_logits.float().mean())
        return loss

    def phases(self) -> list[Phase]:
        return [Phase("Gmain", (self.G,), "G", self._g_main),
                Phase("Dmain", (self.D,), "D", self._d_main)]

    def samples(self) -> torch.Tensor:
        """(slice, reconstruction) pairs of the fixed training slices, in eval mode (batch
        norm running statistics, as at predict; train mode here would update them)."""
        self.G.eval()
        try:
            rec = self.G(self.sample_x)[0]
        finally:
            self.G.train()
        return torch.stack([self.sample_x, rec.float().clamp(-1, 1)], dim=1).flatten(0, 1)


def train_ganomaly(images: torch.Tensor, cfg: dict, workdir: Path | str, *,
                   device: str | torch.device = "cpu", seed: int = 0, progress: bool = False,
                   log: Callable[[str], None] | None = None) -> GANomalyGenerator:
    """Train (or resume, or load when complete) GANomaly on healthy slices and return G in
    eval mode, on ``device``, without gradients.

    images   (N, 1, H, W) in [-1, 1], H and W divisible by 32 (160 x 128).
    cfg      the training config (see :class:`GANomalyTask`); ``iterations`` resolved.
    workdir  holds ``ganomaly-checkpoint.pt``, ``train_log.jsonl`` and ``samples_*.png``.
    """
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"GANomaly training images: got {getattr(images, 'shape', type(images))}, "
                         "expected a tensor (N, 1, H, W)")
    dev = torch.device(device)
    task = GANomalyTask(cfg, images, seed=seed, device=dev)
    settings = LoopSettings(iterations=int(cfg["iterations"]), batch_size=int(cfg["batch_size"]),
                            checkpoint_interval=int(cfg["checkpoint_interval"]),
                            log_interval=int(cfg["log_interval"]),
                            sample_interval=int(cfg["sample_interval"]),
                            precision=cfg["precision"], checkpoint_name=CHECKPOINT_NAME,
                            desc="ganomaly")
    train(task, images, settings, workdir, config=cfg, mutable=RESUME_MUTABLE, seed=seed,
          device=dev, progress=progress, log=log)
    return task.G.to(dev).eval().requires_grad_(False)
