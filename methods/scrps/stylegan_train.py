"""StyleGAN2 training for SCRPS (paper §3.1), as a task of the shared training loop.

One iteration runs four phases (:mod:`adbench.training.loop`):

=========  ========================================================  ===================
``Dmain``  non-saturating logistic loss on augmented reals and fakes  every iteration
``Dreg``   lazy R1 on the reals, weighted by its interval             every ``r1_interval``
``Gmain``  non-saturating loss with style mixing                      every iteration
``Greg``   lazy path-length regularisation (if ``pl_weight > 0``)     every ``pl_interval``
=========  ========================================================  ===================

then the EMA update of ``G_ema``, which is what is returned and used downstream. Lazy
regularisation rescales Adam's learning rate and betas by c = interval / (interval + 1)
(StyleGAN2 §B). Optionally (``blur_sigma > 0``, off in the paper preset) D sees its inputs,
real and fake alike, through a Gaussian blur that fades out over the first ``blur_fade_kimg``
thousand images (StyleGAN3).

Random draws come from the loop's named streams (data order; ``latent``, ``noise``, ``aug``),
checkpoints, resume and DDP are the loop's: on CPU ``N`` steps + resume + ``N`` steps equal
``2N`` steps bit for bit, and under ``torchrun`` every rank holds the same weights.

Sample quality (``quality_interval > 0``): every ``quality_interval`` iterations rank 0 scores
``quality_reals`` samples of ``G_ema`` (fixed latents) against as many real training slices
(a fixed subset), both drawn at setup from streams of their own (``quality-reals``,
``quality-latents``, seeded from the seed and the name, never checkpointed: training draws
do not shift), with :class:`adbench.nn.quality.QualityEvaluator`: ``kid_vgg``, ``fid_vgg``,
``swd`` (and ``kid_inception``/``fid_inception`` with ``quality_inception``), written into
that iteration's record of ``train_log.jsonl`` and drawn in ``quality.png``. All ``quality_*``
keys are logging settings: they may change on resume.
"""
from __future__ import annotations

import copy
import logging
import math
import zlib
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from adbench.nn.maps import separable_blur
from adbench.training import (EMA, Env, LoopSettings, Phase, Step, TrainingTask, all_reduce_mean,
                              train)
from adbench.training import config_digest as _digest
from adbench.training.losses import (d_logistic_loss, g_nonsaturating_loss, path_length_penalty,
                                     r1_penalty)

from .stylegan2 import Discriminator, Generator, generator_from_config

__all__ = ["STYLEGAN_PRESETS", "default_stylegan_config", "train_stylegan", "resolve_config",
           "rotate_images", "blur_images", "blur_sigma_at", "config_digest", "StyleGAN2Task",
           "CHECKPOINT_NAME", "named_generator", "quality_reals"]

CHECKPOINT_NAME = "stylegan2-checkpoint.pt"

_PAPER = dict(
    z_dim=512, w_dim=512, mapping_layers=8, channel_base=4096, channel_max=512, channels=None,
    fused_modconv=True, mbstd_group_size=4,
    iterations=12000,          # §3.1
    batch_size=32,             # global batch (split across ranks)
    lr=0.002,                  # §3.1, both networks
    betas=[0.0, 0.99],
    r1_gamma=1.0, r1_interval=16,
    pl_weight=2.0, pl_interval=4, pl_decay=0.01, pl_batch_shrink=2,
    style_mixing_prob=0.9,
    ema_kimg=10.0,             # EMA half-life in thousands of images
    ema_rampup=None,           # None, or ratio r: half-life <= r * images seen so far
    rotate_degrees=15.0,       # §3.1: rotations of -15..15 degrees (in-plane, axial slices)
    rotate_prob=0.5,           # fraction of real images rotated
    blur_sigma=0.0,            # StyleGAN3's early-training blur of D's inputs (px, 0 = off) ...
    blur_fade_kimg=0.0,        # ... fading linearly to 0 over this many thousand images (0: never)
    train_noise_mode="none",   # §3.1: noise input b fixed to zero
    precision="auto",          # "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16"
    compile=False,             # torch.compile the main G and D passes
    checkpoint_interval=1000, log_interval=100, sample_interval=1000, num_samples=16,
    quality_interval=1000,     # KID/FID (VGG16 features) + SWD of G_ema every N iterations (0 = off)
    quality_reals=1000,        # real slices (fixed subset) and as many G_ema samples per score
    quality_weights="imagenet",  # VGG16 of the quality features: "imagenet" | "random" | path
    quality_inception=None,    # None, or a torchvision inception_v3 state-dict path (standard FID)
)

_CPU_QUICK = {**_PAPER, "z_dim": 128, "w_dim": 128, "mapping_layers": 2, "channel_base": 256,
              "channel_max": 64, "iterations": 2200, "batch_size": 8, "pl_weight": 0.0,
              "r1_gamma": 50.0, "blur_sigma": 4.0, "blur_fade_kimg": 6.0,
              "ema_kimg": 0.5, "ema_rampup": 0.05, "checkpoint_interval": 100,
              "log_interval": 25, "sample_interval": 100,
              # 64 + 64 slices through VGG16 on 2 cores: ~6-20 s per score
              "quality_interval": 200, "quality_reals": 64}

STYLEGAN_PRESETS: dict[str, dict] = {
    "smoke": {**_PAPER, "z_dim": 32, "w_dim": 32, "mapping_layers": 2, "channel_base": 64,
              "channel_max": 16, "iterations": 10, "batch_size": 4, "pl_weight": 0.0,
              "ema_kimg": 0.01, "checkpoint_interval": 10, "log_interval": 5,
              "sample_interval": 10, "num_samples": 4, "quality_interval": 0},
    # 2 idle CPU cores, ~0.72 s per iteration: 2,200 iterations (17.6 kimg) in ~27 minutes.
    # Narrow (64 channels down to 8 at 160x128). Two changes keep so small and short a run
    # from collapsing: D's inputs are blurred early (StyleGAN3's blur, 4 px fading out over
    # the first 6 kimg) and R1 is strong (gamma 50), so D judges the anatomy first and
    # cannot run away from the generator. Use with the cpu-quick preprocessing preset
    # (central training slices).
    "cpu-quick": _CPU_QUICK,
    # Two hours at most on 2 idle CPU cores (issue #19): the cpu-quick network (training on
    # 2 cores is compute-bound: doubling the width or the batch doubles the time per
    # iteration, 0.53 s at batch 8 against 1.05 s at channel_base 512 / channel_max 128, so
    # the length, not the width, is what two hours can buy), trained ~7x longer: 6,000
    # iterations of 8 (48 kimg). The blur fades over 10 kimg instead of 6; R1 is 10x weaker
    # than cpu-quick's (gamma 5, still 10x NVlabs' heuristic 0.0002 * H * W / batch = 0.5:
    # a long run can afford the detail that a weaker R1 lets D see); EMA half-life 2.5 kimg
    # (NVlabs' auto config for batch 8). What it gives up against paper: 1/16 of the width
    # at 160x128 (8 channels against 128), 64 at the coarse levels (512), a 2-layer 128-d
    # mapping (8 x 512), no path-length regularisation, and 48 of the paper's 384 kimg. Measured (session 8): 47.8
    # min; samples are axial brains from ~3,000 iterations on, KID/FID flat after ~4,000.
    "cpu-long": {**_CPU_QUICK, "iterations": 6000, "r1_gamma": 5.0, "blur_fade_kimg": 10.0,
                 "ema_kimg": 2.5, "checkpoint_interval": 250, "log_interval": 50,
                 "sample_interval": 500, "quality_interval": 500},
    # full width; 1800 iterations is an estimate for <= 6 min on one H200 (not yet measured)
    "gpu-quick": {**_PAPER, "iterations": 1800, "batch_size": 32, "pl_weight": 0.0,
                  "ema_kimg": 5.0, "ema_rampup": 0.05, "checkpoint_interval": 500,
                  "sample_interval": 500, "quality_interval": 300},
    "paper": dict(_PAPER),
}

# keys that may differ between the checkpoint and the config that resumes it
_RESUME_MUTABLE = ("iterations", "checkpoint_interval", "log_interval", "sample_interval",
                   "compile", "num_samples", "quality_interval", "quality_reals",
                   "quality_weights", "quality_inception")


def config_digest(cfg: dict) -> str:
    """Short hash of the settings that define a training run (not its length or logging):
    equal digests can resume each other's checkpoints."""
    return _digest(resolve_config(cfg), _RESUME_MUTABLE)


def default_stylegan_config() -> dict:
    """The ``paper`` preset (§3.1 settings), a fresh copy."""
    return copy.deepcopy(STYLEGAN_PRESETS["paper"])


def resolve_config(cfg: dict | None) -> dict:
    """Paper defaults overlaid with ``cfg``; unknown keys are an error listing the valid ones."""
    out = default_stylegan_config()
    unknown = sorted(set(cfg or {}) - set(out))
    if unknown:
        raise ValueError(f"StyleGAN2 config: unknown keys {unknown}; valid keys: {sorted(out)}")
    out.update(copy.deepcopy(cfg or {}))
    if out["precision"] not in ("auto", "fp32", "bf16"):
        raise ValueError(f"StyleGAN2 config 'precision': got {out['precision']!r}, expected auto|fp32|bf16")
    if out["train_noise_mode"] not in ("random", "const", "none"):
        raise ValueError(f"StyleGAN2 config 'train_noise_mode': got {out['train_noise_mode']!r}, "
                         "expected random|const|none")
    if int(out["quality_interval"]) < 0 or int(out["quality_reals"]) < 2:
        raise ValueError(f"StyleGAN2 config: quality_interval={out['quality_interval']!r} "
                         f"(expected 0 = off, or a number of iterations) and quality_reals="
                         f"{out['quality_reals']!r} (expected >= 2 slices)")
    return out


def named_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator of its own for ``name``, seeded from (seed, name): draws made at setup
    (quality reals and latents) that must not shift the loop's checkpointed streams."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(name.encode()))


def quality_reals(images: torch.Tensor, cfg: dict, seed: int) -> torch.Tensor:
    """The fixed real slices the quality metrics compare with: ``quality_reals`` of the
    training images (all of them if fewer), chosen by the seed alone."""
    n = min(int(cfg["quality_reals"]), images.shape[0])
    idx = torch.randperm(images.shape[0], generator=named_generator(seed, "quality-reals"))[:n]
    return images[idx.sort().values]


# ----------------------------------------------------------------------------- augmentation

def blur_sigma_at(cfg: dict, nimg: float) -> float:
    """Gaussian sigma (px) of D's input blur after ``nimg`` training images: ``blur_sigma``
    fading linearly to zero over ``blur_fade_kimg`` thousand images (StyleGAN3's
    ``blur_init_sigma`` / ``blur_fade_kimg``)."""
    if cfg["blur_sigma"] <= 0:
        return 0.0
    fade = cfg["blur_fade_kimg"] * 1000
    return float(cfg["blur_sigma"]) * (max(1.0 - nimg / fade, 0.0) if fade > 0 else 1.0)


def blur_images(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """StyleGAN3's blur of (B, C, H, W): taps 2^-(t/sigma)^2 for |t| <= 3 sigma (0: x unchanged).

    StyleGAN3 shows D blurred reals *and* fakes early in training, so that it first judges
    coarse structure, not the high-frequency texture a young generator cannot make yet.
    Edges are replicated (the background of a brain slice stays background).
    """
    if sigma <= 0:
        return x
    r = max(int(math.floor(sigma * 3)), 1)
    t = torch.arange(-r, r + 1, device=x.device, dtype=torch.float32)
    f = t.div(sigma).square().neg().exp2()
    return separable_blur(x, (f / f.sum()).to(x.dtype), padding="replicate")


def rotate_images(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each slice in-plane by ``degrees`` (B,) about its centre, x (B, C, H, W) in [-1, 1].

    The rotation is isotropic in pixels although the normalised grid is not square; regions
    coming from outside the image are background (-1).
    """
    b, _, h, w = x.shape
    t = degrees.to(torch.float32) * (math.pi / 180)
    cos, sin = torch.cos(t), torch.sin(t)
    zero = torch.zeros_like(t)
    theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1),
                         torch.stack([sin * w / h, cos, zero], 1)], 1).to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float() + 1, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) - 1


# ----------------------------------------------------------------------------- the task

def _build(cfg: dict, img_resolution: tuple[int, int], img_channels: int, seed: int):
    gcfg = dict(z_dim=cfg["z_dim"], w_dim=cfg["w_dim"], img_resolution=img_resolution,
                img_channels=img_channels, channels=cfg["channels"],
                mapping_layers=cfg["mapping_layers"], channel_base=cfg["channel_base"],
                channel_max=cfg["channel_max"], fused_modconv=cfg["fused_modconv"])
    # module constructors draw from the global RNG: fork it so init is a function of seed alone
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = generator_from_config(gcfg)
        D = Discriminator(img_resolution, img_channels, channels=cfg["channels"],
                          channel_base=cfg["channel_base"], channel_max=cfg["channel_max"],
                          mbstd_group_size=cfg["mbstd_group_size"])
    return G, D


def _lazy_adam(params, cfg: dict, interval: int, active: bool) -> torch.optim.Adam:
    """Adam with StyleGAN2's lazy-regularisation correction c = interval / (interval + 1)."""
    c = interval / (interval + 1) if active else 1.0
    b0, b1 = cfg["betas"]
    return torch.optim.Adam(params, lr=cfg["lr"] * c, betas=(b0 ** c, b1 ** c), eps=1e-8)


class StyleGAN2Task(TrainingTask):
    """G, D and G_ema of one StyleGAN2 training, built on ``device`` from ``seed`` alone."""

    streams = ("latent", "noise", "aug")

    def __init__(self, cfg: dict, img_shape: tuple[int, int, int], *, seed: int,
                 device: torch.device, quality_images: torch.Tensor | None = None):
        self.cfg = cfg
        self.quality_images, self.quality = quality_images, None
        c, h, w = img_shape
        self.G, self.D = _build(cfg, (h, w), c, seed)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        for m in (self.G, self.D, self.G_ema):
            m.to(device)
        self.opt_G = _lazy_adam(self.G.parameters(), cfg, cfg["pl_interval"], cfg["pl_weight"] > 0)
        self.opt_D = _lazy_adam(self.D.parameters(), cfg, cfg["r1_interval"], cfg["r1_gamma"] > 0)
        self.pl_mean = torch.zeros((), device=device)
        self.device = device
        self.sample_z = torch.randn(cfg["num_samples"], cfg["z_dim"],
                                    generator=torch.Generator().manual_seed(int(seed) + 2024)).to(device)
        n_q = 0 if quality_images is None else quality_images.shape[0]
        self.quality_z = torch.randn(n_q, cfg["z_dim"], generator=named_generator(
            seed, "quality-latents")).to(device)

    # -- what the loop checkpoints
    def modules(self):
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    def optimizers(self):
        return {"G": self.opt_G, "D": self.opt_D}

    def ema(self):
        return [EMA(self.G_ema, self.G, self.cfg["ema_kimg"], self.cfg["ema_rampup"])]

    def extra_state(self):
        import json
        return {"pl_mean": self.pl_mean.detach().cpu(), "generator_config": json.dumps(self.G.config())}

    def load_extra_state(self, state):
        self.pl_mean = state["pl_mean"].to(self.device)

    def setup(self, env: Env) -> None:
        self.synth = env.compile(self.G.synthesis)
        self.D_run = env.compile(self.D)
        self.autocast = env.autocast
        self.use_bf16 = env.use_bf16
        q = int(self.cfg["quality_interval"])
        if env.rank == 0 and 0 < q <= self.cfg["iterations"] and self.quality_images is not None:
            from adbench.errors import WeightsError
            from adbench.nn.quality import QualityEvaluator
            try:  # fail before training, not at the first score
                self.quality = QualityEvaluator(self.quality_images, device=env.device,
                                                weights=self.cfg["quality_weights"],
                                                inception=self.cfg["quality_inception"])
            except (WeightsError, FileNotFoundError) as exc:
                how = ("Set the StyleGAN2 key quality_weights (a VGG16 state-dict path, or "
                       "'random' for tests), or quality_interval=0 to turn the metrics off.")
                if isinstance(exc, WeightsError) and self.cfg["quality_weights"] == "imagenet":
                    # the presets' default: missing ImageNet weights must not stop a training
                    logging.getLogger("adbench").warning(
                        "StyleGAN2 sample-quality metrics are off (quality_interval=%d): %s %s",
                        q, exc, how)
                    return
                raise type(exc)(f"StyleGAN2 sample-quality metrics (quality_interval={q}): "
                                f"{exc} {how}") from None

    # -- one iteration
    def _noise_gen(self, step: Step):
        # only pass the noise generator when it is used (a Generator argument breaks torch.compile graphs)
        return step.streams["noise"] if self.cfg["train_noise_mode"] == "random" else None

    def _latents(self, step: Step, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = step.streams["latent"]
        return (torch.randn(k, self.cfg["z_dim"], device=self.device, generator=g),
                torch.randn(k, self.cfg["z_dim"], device=self.device, generator=g))

    def _mixed_ws(self, z: torch.Tensor, z2: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Style mixing: with probability ``style_mixing_prob`` the codes from a random cutoff
        on come from z2."""
        G, prob = self.G, self.cfg["style_mixing_prob"]
        ws = G.mapping(z)
        if prob <= 0:
            return ws
        # draw both numbers every time (fixed RNG consumption) and decide on device: no host sync
        u = torch.rand((), device=z.device, generator=gen)
        cut = torch.randint(1, G.num_ws, (), device=z.device, generator=gen)
        keep = (torch.arange(G.num_ws, device=z.device) < cut) | (u >= prob)
        return torch.where(keep[None, :, None], ws, G.mapping(z2))

    def _sigma(self, step: Step) -> float:
        return blur_sigma_at(self.cfg, step.nimg)

    def augment(self, real: torch.Tensor, step: Step) -> torch.Tensor:
        """§3.1: a fraction ``rotate_prob`` of the reals rotated by up to ±``rotate_degrees``."""
        deg, prob = float(self.cfg["rotate_degrees"]), self.cfg["rotate_prob"]
        if deg <= 0 or prob <= 0:
            return real
        b = real.shape[0]
        ang = (torch.rand(b, device=self.device, generator=step.streams["aug"]) * 2 - 1) * deg
        apply = torch.rand(b, device=self.device, generator=step.streams["aug"]) < prob
        return torch.where(apply[:, None, None, None], rotate_images(real, ang), real)

    def _d_main(self, step: Step) -> torch.Tensor:
        sigma = self._sigma(step)
        z, z2 = self._latents(step, step.real.shape[0])
        with torch.no_grad():
            fake = self.synth(self._mixed_ws(z, z2, step.streams["latent"]),
                              self.cfg["train_noise_mode"], self._noise_gen(step))
        real_logits = self.D_run(blur_images(step.real, sigma))
        fake_logits = self.D_run(blur_images(fake, sigma))
        loss = d_logistic_loss(real_logits, fake_logits)
        step.track("loss_D", loss)
        step.track("real_logit", real_logits.mean())
        step.track("fake_logit", fake_logits.mean())
        step.track("blur_sigma", torch.tensor(sigma))
        return loss

    def _d_reg(self, step: Step) -> torch.Tensor:
        sigma = self._sigma(step)
        r1 = r1_penalty(lambda img: self.D(blur_images(img, sigma)), step.real)
        step.track("r1", r1.mean())
        return r1.mean() * (self.cfg["r1_gamma"] / 2) * self.cfg["r1_interval"]

    def _g_main(self, step: Step) -> torch.Tensor:
        z, z2 = self._latents(step, step.real.shape[0])
        ws = self._mixed_ws(z, z2, step.streams["latent"])
        fake = self.synth(ws, self.cfg["train_noise_mode"], self._noise_gen(step))
        loss = g_nonsaturating_loss(self.D_run(blur_images(fake, self._sigma(step))))
        step.track("loss_G", loss)
        with torch.no_grad():  # tracked mean w from the unmixed codes, averaged over ranks
            self.G.mapping.update_w_avg(all_reduce_mean(ws[:, 0].detach().float().mean(dim=0)))
        return loss

    def _g_reg(self, step: Step) -> torch.Tensor:
        cfg = self.cfg
        z, z2 = self._latents(step, max(1, step.real.shape[0] // cfg["pl_batch_shrink"]))
        ws = self._mixed_ws(z, z2, step.streams["latent"])
        noise, gen = cfg["train_noise_mode"], step.streams["noise"]
        pen, pl_mean = path_length_penalty(lambda w: self.G.synthesis(w, noise, gen), ws,
                                           self.pl_mean, gen, cfg["pl_decay"])
        self.pl_mean = pl_mean.detach()
        step.track("pl", pen.mean())
        return pen.mean() * cfg["pl_weight"] * cfg["pl_interval"]

    def phases(self) -> list[Phase]:
        cfg = self.cfg
        out = [Phase("Dmain", (self.D,), "D", self._d_main)]
        if cfg["r1_gamma"] > 0:
            out.append(Phase("Dreg", (self.D,), "D", self._d_reg, interval=cfg["r1_interval"]))
        out.append(Phase("Gmain", (self.G,), "G", self._g_main))
        if cfg["pl_weight"] > 0:
            out.append(Phase("Greg", (self.G,), "G", self._g_reg, interval=cfg["pl_interval"]))
        return out

    def _generate(self, z: torch.Tensor, batch: int = 32) -> torch.Tensor:
        mode = "const" if self.cfg["train_noise_mode"] == "random" else self.cfg["train_noise_mode"]
        return torch.cat([self.G_ema(z[i:i + batch], noise_mode=mode)
                          for i in range(0, z.shape[0], batch)])

    def samples(self) -> torch.Tensor:
        return self._generate(self.sample_z)

    def evaluate(self) -> dict[str, float] | None:
        """KID/FID (VGG16) and SWD of ``G_ema`` on the fixed quality latents (None when off)."""
        if self.quality is None:
            return None
        with self.autocast():
            fakes = self._generate(self.quality_z)
        return self.quality(fakes.float())


def train_stylegan(images: torch.Tensor, cfg: dict, workdir: Path | str, *, device: str = "cpu",
                   seed: int = 0, progress: bool = False,
                   log: Callable[[str], None] | None = None) -> Generator:
    """Train StyleGAN2 on healthy slices and return the EMA generator (eval mode, on ``device``).

    images: (N, C, H, W) float in [-1, 1] (C = 1 for MRI; H, W = base x 2^k, e.g. 160x128).
    cfg: overrides of :func:`default_stylegan_config` (see :data:`STYLEGAN_PRESETS`).
    workdir: holds ``stylegan2-checkpoint.pt`` (resumed from if present; if it already reached
    ``cfg["iterations"]`` training is skipped), ``train_log.jsonl``, ``samples_<iter>.png`` and,
    with ``quality_interval > 0``, ``quality.png`` (the curves of the sample-quality metrics).
    log: called with one line per log interval (rank 0 only).
    """
    cfg = resolve_config(cfg)
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"train_stylegan images: got {getattr(images, 'shape', type(images))}, "
                         "expected a tensor (N, C, H, W) with N >= 1")
    dev = torch.device(device)
    reals = quality_reals(images, cfg, seed) if cfg["quality_interval"] > 0 else None
    task = StyleGAN2Task(cfg, tuple(images.shape[1:]), seed=seed, device=dev, quality_images=reals)
    settings = LoopSettings(iterations=cfg["iterations"], batch_size=cfg["batch_size"],
                            checkpoint_interval=cfg["checkpoint_interval"],
                            log_interval=cfg["log_interval"], sample_interval=cfg["sample_interval"],
                            eval_interval=cfg["quality_interval"],
                            precision=cfg["precision"], compile=cfg["compile"],
                            checkpoint_name=CHECKPOINT_NAME, desc="stylegan2")
    train(task, images, settings, workdir, config=cfg, mutable=_RESUME_MUTABLE, seed=seed,
          device=dev, progress=progress, log=log)
    return task.G_ema.to(dev).eval().requires_grad_(False)
