"""RealNet training: the AFS pass, then one phase of the shared loop (:mod:`adbench.training`).

AFS (:mod:`.selection`) runs first on the frozen backbone, over ``afs_batches`` batches of
slices that all carry a synthetic anomaly (the code drops its "normal" type for this pass);
its indices go into the model's buffers and their digest into the training config, so a
checkpoint is only resumed with the same selection.

Each iteration then runs one phase, ``main`` (the code trains every module with one Adam,
lr 1e-4, betas (0.9, 0.999)):

    x_aug, M = anomaly source(x)          half of the samples anomalous (p_anomaly 0.5)
    F = AFS(phi(x_aug)), F* = AFS(phi(x))  phi: the frozen VGG16 blocks
    L = w_seg CE(head(RRS((F - R(F))^2)), M) + w_rec sum_l MSE(R_l(F_l), F*_l)

(the code's ``SegmentCrossEntropyLoss`` and ``FeatureMSELoss``: the reconstruction networks R
learn to map the features of an anomalous slice to those of its normal original, and the
segmentation loss also reaches them through the residuals, ``stop_grad: False``).

The loop's batches are the slices with their brain masks as a second channel; the per-sample
anomaly seeds come from its checkpointed ``synthesis`` stream, so ``N`` + resume + ``N``
iterations equal ``2N`` bit for bit on the CPU.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from adbench.nn.synthesis import sample_seeds
from adbench.training import LoopSettings, Phase, Step, TrainingTask, config_digest, train

from .anomalies import AnomalySource
from .networks import RealNetModel
from .selection import AFSAccumulator

__all__ = ["RealNetTask", "run_afs", "train_realnet", "training_digest", "indices_digest",
           "realnet_losses", "CHECKPOINT_NAME", "RESUME_MUTABLE", "AFS_KEY", "SAMPLE_KEY"]

CHECKPOINT_NAME = "realnet-checkpoint.pt"
#: keys that may differ between a checkpoint and the config that resumes it
RESUME_MUTABLE = ("iterations", "checkpoint_interval", "log_interval", "sample_interval",
                  "num_samples")
#: seed keys of the AFS batches and of the fixed sample-grid anomalies (apart from training's)
AFS_KEY, SAMPLE_KEY = 0xAF5, 0x5A3


def training_digest(cfg: dict) -> str:
    """Short hash of the settings that define a training: equal digests resume each other."""
    return config_digest(cfg, RESUME_MUTABLE)


def indices_digest(indices: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(indices):
        h.update(name.encode())
        h.update(indices[name].to(torch.int64).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def run_afs(extractor, source: AnomalySource, images: torch.Tensor, brain: torch.Tensor,
            keep: dict[str, int], *, batches: int, batch_size: int, seed: int,
            device: torch.device) -> dict[str, torch.Tensor]:
    """AFS indices {layer: (keep_l,) int64, sorted} from ``batches`` batches of ``batch_size``
    training slices (drawn with replacement from a generator seeded by ``seed``), each with a
    synthetic anomaly. images (N, 1, H, W), brain (N, 1, H, W) bool."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + AFS_KEY)
    acc = AFSAccumulator(dict(extractor.channels))
    for b in range(int(batches)):
        idx = torch.randint(images.shape[0], (int(batch_size),), generator=g)
        x, m = images[idx], brain[idx]
        aug, masks = source(x, m, sample_seeds(seed, AFS_KEY, b, n=len(idx)), always=True)
        acc.update(extractor(aug.to(device)), extractor(x.to(device)), masks.to(device))
    return acc.indices(keep)


def realnet_losses(model: RealNetModel, feats_aug: dict, feats_normal: dict, masks: torch.Tensor,
                   size: tuple[int, int], *, w_seg: float, w_rec: float) -> dict[str, torch.Tensor]:
    """{"seg", "rec", "total"} of one batch (module docstring); masks (B, 1, H, W) in {0, 1}."""
    _, recon, logits = model(feats_aug, size)
    with torch.no_grad():
        target = model.select(feats_normal)
    rec = torch.stack([F.mse_loss(recon[n].float(), target[n].float()) for n in model.layers]).sum()
    seg = F.cross_entropy(logits.float(), masks[:, 0].long())
    return {"seg": seg, "rec": rec, "total": w_seg * seg + w_rec * rec, "logits": logits}


def _anomalous_features(extractor, aug: torch.Tensor, masks: torch.Tensor,
                        f_normal: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Backbone features of ``aug``; an anomaly-free sample (aug == x) reuses its normal
    features, so half of the batch (p_anomaly 0.5) costs no second backbone pass."""
    hit = masks.flatten(1).amax(1) > 0
    if bool(hit.all()):
        return extractor(aug)
    out = {n: f.clone() for n, f in f_normal.items()}
    if bool(hit.any()):
        idx = hit.nonzero()[:, 0]
        for n, f in extractor(aug[idx]).items():
            out[n][idx] = f.to(out[n].dtype)
    return out


class RealNetTask(TrainingTask):
    """One RealNet training on ``device``: the model (built by the caller from the seed, with
    its AFS indices set) and its Adam; the extractor and the anomaly source are fixed."""

    streams = ("synthesis",)

    def __init__(self, cfg: dict, model: RealNetModel, extractor, source: AnomalySource,
                 images: torch.Tensor, brain: torch.Tensor, *, seed: int, device: torch.device):
        self.cfg, self.device = cfg, device
        self.model = model.to(device).train()
        self.extractor = extractor.to(device)
        self.source = source
        self.opt = torch.optim.Adam(self.model.parameters(), lr=float(cfg["lr"]),
                                    betas=(float(cfg["beta1"]), float(cfg["beta2"])))
        k = min(int(cfg["num_samples"]), images.shape[0])
        idx = torch.linspace(0, images.shape[0] - 1, k).round().long()
        self.sample_x, self.sample_brain = images[idx].float(), brain[idx]
        self.sample_seeds = sample_seeds(seed, SAMPLE_KEY, n=k)

    def modules(self):
        return {"model": self.model}

    def optimizers(self):
        return {"model": self.opt}

    def extra_state(self):
        return {"network_config": json.dumps(self.model.cfg)}

    def _main(self, step: Step) -> torch.Tensor:
        x, brain = step.real[:, :1], step.real[:, 1:] > 0.5
        g = step.streams["synthesis"]
        key = int(torch.randint(0, 2 ** 62, (1,), generator=g, device=g.device))
        # the synthesis runs on the CPU (numpy), so the anomalies are the same on any device
        aug, masks = self.source(x.cpu(), brain.cpu(), sample_seeds(key, n=x.shape[0]))
        aug, masks = aug.to(self.device), masks.to(self.device)
        with torch.no_grad():
            f_normal = self.extractor(x)
            f_aug = _anomalous_features(self.extractor, aug, masks, f_normal)
        out = realnet_losses(self.model, f_aug, f_normal, masks, tuple(x.shape[-2:]),
                             w_seg=float(self.cfg["w_seg"]), w_rec=float(self.cfg["w_rec"]))
        step.track("loss_seg", out["seg"])
        step.track("loss_rec", out["rec"])
        step.track("anomalous_fraction", (masks.flatten(1).amax(1) > 0).float().mean())
        return out["total"]

    def phases(self) -> list[Phase]:
        return [Phase("main", (self.model,), "model", self._main)]

    def samples(self) -> torch.Tensor:
        """(slice, synthetic anomaly, its mask, predicted anomaly probability) of the fixed
        sample slices, all in [-1, 1], in eval mode."""
        aug, masks = self.source(self.sample_x, self.sample_brain, self.sample_seeds, always=True)
        self.model.eval()
        try:
            logits = self.model(self.extractor(aug.to(self.device)), tuple(aug.shape[-2:]))[2]
        finally:
            self.model.train()
        prob = logits.float().softmax(1)[:, 1:].cpu()
        return torch.stack([self.sample_x, aug, masks * 2 - 1, prob * 2 - 1], 1).flatten(0, 1)


def train_realnet(model: RealNetModel, extractor, source: AnomalySource, images: torch.Tensor,
                  brain: torch.Tensor, cfg: dict, workdir: Path | str, *,
                  device: str | torch.device = "cpu", seed: int = 0, progress: bool = False,
                  log: Callable[[str], None] | None = None) -> RealNetModel:
    """Train (or resume, or load when complete) ``model`` and return it in eval mode on
    ``device``, without gradients.

    images  (N, 1, H, W) in [-1, 1]; brain (N, 1, H, W) bool.
    cfg     the training config of :meth:`RealNet.training_config` (``iterations`` resolved).
    workdir holds ``realnet-checkpoint.pt``, ``train_log.jsonl`` and ``samples_*.png``.
    """
    if images.ndim != 4 or images.shape[1] != 1 or tuple(brain.shape) != tuple(images.shape):
        raise ValueError(f"RealNet training: images {tuple(images.shape)} and brain masks "
                         f"{tuple(brain.shape)} must both be (N, 1, H, W)")
    dev = torch.device(device)
    task = RealNetTask(cfg, model, extractor, source, images, brain, seed=seed, device=dev)
    settings = LoopSettings(iterations=int(cfg["iterations"]), batch_size=int(cfg["batch_size"]),
                            checkpoint_interval=int(cfg["checkpoint_interval"]),
                            log_interval=int(cfg["log_interval"]),
                            sample_interval=int(cfg["sample_interval"]),
                            precision=cfg["precision"], checkpoint_name=CHECKPOINT_NAME,
                            desc="realnet")
    data = torch.cat([images.float(), brain.float()], dim=1)
    train(task, data, settings, workdir, config=cfg, mutable=RESUME_MUTABLE, seed=seed,
          device=dev, progress=progress, log=log)
    return task.model.to(dev).eval().requires_grad_(False)
