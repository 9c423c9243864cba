"""f-AnoGAN's two trainings as tasks of the shared loop (:mod:`adbench.training.loop`).

Stage 1, :class:`WGANGPTask` (Gulrajani et al. 2017, Alg. 1; Schlegl et al. 2019 §2.2). One
loop iteration is one critic step, as the authors' ``wgangp_64x64.py`` counts iterations:

=========  ========================================================  ===================
``Dmain``  E[D(G(z))] - E[D(x)] + λ (||∇D(x̂)||₂ - 1)², own real batch  every iteration
``Gmain``  -E[D(G(z))]                                                every ``n_critic``
=========  ========================================================  ===================

The loop runs ``Dmain`` before ``Gmain``, so after the first generator step (which follows one
critic step) every generator step follows ``n_critic`` fresh critic steps, as in Alg. 1.
z ~ N(0, I) comes from the ``latent`` stream, the interpolation weights of x̂ from ``gp``.

Stage 2, :class:`IzifEncoderTask` (Schlegl et al. 2019 §2.3, Eq. 7): the encoder E alone is
trained on L = 1/n ||x - G(E(x))||² + κ/n_d ||f(x) - f(G(E(x)))||², with G and D frozen (eval
mode, ``requires_grad`` off, so neither their weights nor G's batch-norm statistics move).

Both go through :func:`adbench.training.train` with their own checkpoint, loss log and sample
grids in their own subfolder of one work folder; each resumes bit for bit on the CPU.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from adbench.training import LoopSettings, Phase, Step, TrainingTask, train
from adbench.training.losses import gradient_penalty, wasserstein_losses

from .networks import build_encoder, build_gan, izif_residuals

__all__ = ["ENCODER_CHECKPOINT", "ENCODER_KEYS", "GAN_CHECKPOINT", "GAN_KEYS", "LOG_KEYS",
           "MUTABLE", "IzifEncoderTask", "WGANGPTask", "critic_loss", "fixed_slices",
           "train_encoder", "train_fanogan", "train_gan"]

GAN_CHECKPOINT = "wgan-gp-checkpoint.pt"
ENCODER_CHECKPOINT = "izif-encoder-checkpoint.pt"

#: training settings of each stage (besides the network config); see the detector's docstring
GAN_KEYS = ("batch_size", "gan_iterations", "n_critic", "gp_weight", "lr", "betas", "precision")
ENCODER_KEYS = ("batch_size", "encoder_iterations", "encoder_optimizer", "encoder_lr", "kappa",
                "precision")
LOG_KEYS = ("checkpoint_interval", "log_interval", "sample_interval", "num_samples")
#: keys that may differ between a checkpoint and the config resuming it (length and logging)
MUTABLE = ("gan_iterations", "gan_epochs", "encoder_iterations") + LOG_KEYS


@contextlib.contextmanager
def _eval_mode(*modules: nn.Module):
    """Modules in eval mode inside the block, each back in its own mode afterwards."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def fixed_slices(images: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` training slices evenly spaced through ``images`` (N, 1, H, W): the sample grid's
    inputs, chosen without any random draw."""
    idx = torch.linspace(0, images.shape[0] - 1, min(int(k), images.shape[0])).round().long()
    return images[idx].float()


def critic_loss(D: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                gp_weight: float, generator: torch.Generator | None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The WGAN-GP critic loss of Alg. 1: E[D(x~)] - E[D(x)] + λ E[(||∇D(x̂)||₂ - 1)²].

    real, fake (B, C, H, W); x̂ = e x + (1 - e) x~ with e ~ U(0, 1) per sample from
    ``generator``. Returns (scalar loss, {"wasserstein": E[D(x)] - E[D(x~)] (the critic's
    estimate of the distance), "gp": the per-sample penalty (B,)}).
    """
    loss_w, _ = wasserstein_losses(D(real), D(fake))
    gp = gradient_penalty(D, real, fake, generator)
    return loss_w + gp_weight * gp.mean(), {"wasserstein": -loss_w.detach(), "gp": gp}


class WGANGPTask(TrainingTask):
    """G and D of stage 1, built on ``device`` from ``seed`` alone."""

    streams = ("latent", "gp")

    def __init__(self, cfg: dict, net_cfg: dict, fixed: torch.Tensor, *, seed: int,
                 device: torch.device):
        self.cfg, self.device = cfg, device
        self.G, self.D = build_gan(net_cfg, seed)
        self.G.to(device)
        self.D.to(device)
        lr, betas = float(cfg["lr"]), tuple(float(b) for b in cfg["betas"])
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr, betas=betas)
        # fixed latents of the sample grid, from a private generator (no stream is consumed)
        self.sample_z = torch.randn(fixed.shape[0], int(net_cfg["latent_dim"]),
                                    generator=torch.Generator().manual_seed(int(seed) + 2024)
                                    ).to(device)

    def modules(self):
        return {"G": self.G, "D": self.D}

    def optimizers(self):
        return {"G": self.opt_G, "D": self.opt_D}

    def _z(self, step: Step) -> torch.Tensor:
        return torch.randn(step.real.shape[0], self.G.latent_dim, device=self.device,
                           dtype=step.real.dtype, generator=step.streams["latent"])

    def _d_main(self, step: Step) -> torch.Tensor:
        with torch.no_grad():
            fake = self.G(self._z(step))
        loss, parts = critic_loss(self.D, step.real, fake, float(self.cfg["gp_weight"]),
                                  step.streams["gp"])
        step.track("loss_D", loss)
        step.track("wasserstein", parts["wasserstein"])
        step.track("gp", parts["gp"].mean())
        return loss

    def _g_main(self, step: Step) -> torch.Tensor:
        loss = -self.D(self.G(self._z(step))).mean()   # the generator side of wasserstein_losses
        step.track("loss_G", loss)
        return loss

    def phases(self) -> list[Phase]:
        return [Phase("Dmain", (self.D,), "D", self._d_main),
                Phase("Gmain", (self.G,), "G", self._g_main, interval=int(self.cfg["n_critic"]))]

    def samples(self) -> torch.Tensor:
        """G(z) of fixed latents, G in eval mode (as the encoder stage and predict use it)."""
        with _eval_mode(self.G):
            return self.G(self.sample_z)


def _encoder_optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    lr = float(cfg["encoder_lr"])
    if cfg["encoder_optimizer"] == "rmsprop":
        # the authors' tf.train.RMSPropOptimizer(lr) defaults: decay 0.9, epsilon 1e-10
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-10)
    if cfg["encoder_optimizer"] == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"f-AnoGAN encoder_optimizer={cfg['encoder_optimizer']!r}: expected "
                     "'rmsprop' or 'adam'")


class IzifEncoderTask(TrainingTask):
    """E of stage 2 (built from ``seed``), trained against the frozen G and D given."""

    def __init__(self, cfg: dict, net_cfg: dict, G: nn.Module, D: nn.Module, fixed: torch.Tensor,
                 *, seed: int, device: torch.device):
        self.cfg, self.device = cfg, device
        self.G = G.to(device).eval().requires_grad_(False)
        self.D = D.to(device).eval().requires_grad_(False)
        self.E = build_encoder(net_cfg, seed).to(device)
        self.opt_E = _encoder_optimizer(cfg, self.E.parameters())
        self.fixed = fixed.to(device)

    def modules(self):
        return {"E": self.E}

    def optimizers(self):
        return {"E": self.opt_E}

    def _e_main(self, step: Step) -> torch.Tensor:
        _, a_r, a_d = izif_residuals(self.G, self.D, self.E, step.real)
        loss = a_r.mean() + float(self.cfg["kappa"]) * a_d.mean()
        step.track("loss_E", loss)
        step.track("residual", a_r.mean())
        step.track("feature_residual", a_d.mean())
        return loss

    def phases(self) -> list[Phase]:
        return [Phase("Emain", (self.E,), "E", self._e_main)]

    def samples(self) -> torch.Tensor:
        """(slice, G(E(slice))) pairs of fixed training slices, interleaved, E in eval mode."""
        with _eval_mode(self.E):
            rec = self.G(self.E(self.fixed))
        return torch.stack([self.fixed, rec], dim=1).flatten(0, 1)


def _settings(cfg: dict, iterations: int, name: str, desc: str) -> LoopSettings:
    return LoopSettings(iterations=int(iterations), batch_size=int(cfg["batch_size"]),
                        checkpoint_interval=int(cfg["checkpoint_interval"]),
                        log_interval=int(cfg["log_interval"]),
                        sample_interval=int(cfg["sample_interval"]), precision=cfg["precision"],
                        checkpoint_name=name, desc=desc)


def _stage_config(cfg: dict, net_cfg: dict, keys: tuple[str, ...], **extra) -> dict:
    return {**{k: cfg[k] for k in keys + LOG_KEYS}, "network": net_cfg, **extra}


def train_gan(images: torch.Tensor, cfg: dict, net_cfg: dict, workdir: Path, *, seed: int = 0,
              device: str | torch.device = "cpu", progress: bool = False, log=None
              ) -> tuple[WGANGPTask, dict]:
    """Stage 1 on ``images`` (N, 1, H, W) in [-1, 1] for ``cfg["gan_iterations"]`` critic
    steps (or resumed, or skipped when complete). Returns (task, what ``train`` returned)."""
    dev = torch.device(device)
    task = WGANGPTask(cfg, net_cfg, fixed_slices(images, cfg["num_samples"]), seed=seed, device=dev)
    settings = _settings(cfg, cfg["gan_iterations"], GAN_CHECKPOINT, "f-AnoGAN wgan-gp")
    out = train(task, images, settings, workdir, config=_stage_config(cfg, net_cfg, GAN_KEYS),
                mutable=MUTABLE, seed=seed, device=dev, progress=progress, log=log)
    return task, out


def train_encoder(images: torch.Tensor, cfg: dict, net_cfg: dict, G: nn.Module, D: nn.Module,
                  workdir: Path, *, gan_iteration: int, seed: int = 0,
                  device: str | torch.device = "cpu", progress: bool = False, log=None
                  ) -> tuple[IzifEncoderTask, dict]:
    """Stage 2: E against the frozen (G, D) reached after ``gan_iteration`` critic steps."""
    dev = torch.device(device)
    task = IzifEncoderTask(cfg, net_cfg, G, D, fixed_slices(images, cfg["num_samples"]),
                           seed=seed, device=dev)
    config = _stage_config(cfg, net_cfg, ENCODER_KEYS, gan_iteration=int(gan_iteration))
    out = train(task, images, _settings(cfg, cfg["encoder_iterations"], ENCODER_CHECKPOINT,
                                        "f-AnoGAN izi_f encoder"),
                workdir, config=config, mutable=MUTABLE, seed=seed, device=dev,
                progress=progress, log=log)
    return task, out


def train_fanogan(images: torch.Tensor, cfg: dict, net_cfg: dict, work: Path, *, seed: int = 0,
                  device: str | torch.device = "cpu", progress: bool = False, log=None
                  ) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Both stages in ``work``: ``wgan-gp/`` then ``izif-gan<iteration>/`` (each with its
    checkpoint, ``train_log.jsonl`` and ``samples_*.png``; the encoder folder is named by the
    GAN iteration it was trained against, so a longer GAN training gets a fresh encoder).
    Returns (G, D, E) in eval mode with ``requires_grad`` off, on ``device``."""
    work = Path(work)
    gan_dir = work / "wgan-gp"
    gan_dir.mkdir(parents=True, exist_ok=True)
    gan, out = train_gan(images, cfg, net_cfg, gan_dir, seed=seed, device=device,
                         progress=progress, log=log)
    enc_dir = work / f"izif-gan{int(out['iteration']):07d}"
    enc_dir.mkdir(parents=True, exist_ok=True)
    enc, _ = train_encoder(images, cfg, net_cfg, gan.G, gan.D, enc_dir,
                           gan_iteration=int(out["iteration"]), seed=seed, device=device,
                           progress=progress, log=log)
    return (enc.G, enc.D, enc.E.eval().requires_grad_(False))
