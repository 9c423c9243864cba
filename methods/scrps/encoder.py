"""An encoder that initialises SCRPS's W+ inversion (in the spirit of pSp / e4e).

    E(X) = w̄ + Δ(X),   Δ: (B, 1, H, W) -> (B, L, D)

The encoder predicts *offsets* from the generator's mean w̄ (``G.mapping.w_avg``), as e4e
does, and its last layer starts at zero: an untrained encoder returns exactly the mean-W
start of the paper's inversion. The inversion (Eq. 1, :mod:`.inversion`) then starts from
E(X) instead of w̄ and runs its ``inversion_steps`` Adam steps; the repository codes and the
test codes both go through that one procedure.

Network: a stem conv, then stride-2 blocks (conv 3x3 stride 2 + conv 3x3, leaky ReLU 0.2)
doubling the channels (``width`` up to ``max_channels``) until the map is 10x8 for 160x128
(the generator's second level), a 1x1 conv to ``head_channels`` and one linear layer from the
flattened map (which keeps the spatial layout a pooled vector would lose) to L x D.

Training (:func:`train_encoder`), after the StyleGAN2 with the generator frozen (``G_ema``),
as one :class:`adbench.training.TrainingTask` of two phases per iteration:

=========  ===========================================================================
``Esynth`` the generator's own samples (unlimited): w+ from the ``latent`` stream (mapped
           z, style-mixed at a random cut with ``mixing_prob``), X = G(w+, b = 0);
           loss = latent_weight · mean (E(X) - w+)² + synthetic_weight · L_img(X, G(E(X)))
``Ereal``  the healthy training slices (the loop's data stream):
           loss = real_weight · L_img(X, G(E(X)))  (off when real_weight = 0)
=========  ===========================================================================

L_img is the inversion's per-sample Eq. 1 loss (λ_mse · MSE, plus the perceptual term when
``perceptual_weight > 0``), averaged over the batch. Checkpoints, resume (``N`` + resume +
``N`` iterations equal ``2N`` on the CPU), the log and sample grids (rows: slices, their
encoder reconstructions) are the loop's.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from adbench.training import LoopSettings, Phase, Step, TrainingTask, train
from adbench.training import config_digest as _digest

from .inversion import _sample_losses

__all__ = ["Encoder", "ENCODER_DEFAULTS", "resolve_encoder_config", "encoder_digest",
           "EncoderTask", "train_encoder", "encoder_state", "encoder_from_state", "encode",
           "ENCODER_CHECKPOINT"]

ENCODER_CHECKPOINT = "encoder-checkpoint.pt"

ENCODER_DEFAULTS = dict(
    width=32,               # channels of the stem; doubled per stride-2 block ...
    max_channels=256,       # ... up to this
    head_channels=16,       # 1x1 conv before the linear head (flattened map x this)
    iterations=10000,       # two phases each (synthetic + real batch)
    batch_size=16,          # per phase
    lr=1e-4,                # Adam
    betas=[0.9, 0.999],
    latent_weight=1.0,      # W+ regression on the generator's samples
    synthetic_weight=1.0,   # image loss on the generator's samples
    real_weight=1.0,        # image loss on the healthy slices (0: phase off)
    mixing_prob=0.9,        # style mixing of the synthetic codes (W+ rather than W)
    precision="auto",       # "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16"
    checkpoint_interval=1000, log_interval=100, sample_interval=1000, num_samples=8,
)

# keys that may differ between a checkpoint and the config that resumes it
_RESUME_MUTABLE = ("iterations", "checkpoint_interval", "log_interval", "sample_interval",
                   "num_samples")


def resolve_encoder_config(cfg: dict | None) -> dict:
    """:data:`ENCODER_DEFAULTS` overlaid with ``cfg``; unknown keys are an error listing the
    valid ones."""
    out = copy.deepcopy(ENCODER_DEFAULTS)
    unknown = sorted(set(cfg or {}) - set(out))
    if unknown:
        raise ValueError(f"SCRPS encoder_config: unknown keys {unknown}; valid keys: {sorted(out)}")
    out.update(copy.deepcopy(cfg or {}))
    for k in ("width", "max_channels", "head_channels", "batch_size"):
        if int(out[k]) < 1:
            raise ValueError(f"SCRPS encoder_config {k}={out[k]!r}: expected a positive integer")
    if out["precision"] not in ("auto", "fp32", "bf16"):
        raise ValueError(f"SCRPS encoder_config precision={out['precision']!r}: expected auto|fp32|bf16")
    return out


def encoder_digest(cfg: dict, identity: dict) -> str:
    """Short hash of what defines an encoder training (not its length or logging): the
    config and ``identity`` (generator digest, image-loss settings)."""
    return _digest({**resolve_encoder_config(cfg), "identity": identity}, _RESUME_MUTABLE)


class Encoder(nn.Module):
    """x (B, C, H, W) in [-1, 1] -> W+ codes (B, num_ws, w_dim) = w_avg + offsets."""

    def __init__(self, img_resolution: tuple[int, int], img_channels: int, num_ws: int,
                 w_dim: int, *, width: int = 32,        # stem channels
                 max_channels: int = 256,               # cap of the doubling
                 head_channels: int = 16,               # channels flattened into the head
                 w_avg: torch.Tensor | None = None):    # (w_dim,) the generator's mean w
        super().__init__()
        h, w = (int(v) for v in img_resolution)
        self.img_resolution, self.img_channels = (h, w), int(img_channels)
        self.num_ws, self.w_dim = int(num_ws), int(w_dim)
        self.width, self.max_channels, self.head_channels = int(width), int(max_channels), int(head_channels)
        act = nn.LeakyReLU(0.2)
        layers: list[nn.Module] = [nn.Conv2d(img_channels, width, 3, padding=1), act]
        c = width
        # halve while a halving keeps both sides even and >= 4 at the next level (160x128 -> 10x8)
        while h % 4 == 0 and w % 4 == 0 and h // 2 >= 8 and w // 2 >= 8:
            c2 = min(2 * c, max_channels)
            layers += [nn.Conv2d(c, c2, 3, stride=2, padding=1), act, nn.Conv2d(c2, c2, 3, padding=1), act]
            c, h, w = c2, h // 2, w // 2
        layers += [nn.Conv2d(c, head_channels, 1), act]
        self.features = nn.Sequential(*layers)
        self.feature_shape = (head_channels, h, w)
        self.head = nn.Linear(head_channels * h * w, self.num_ws * self.w_dim)
        nn.init.zeros_(self.head.weight)       # untrained: exactly the mean-W start
        nn.init.zeros_(self.head.bias)
        self.register_buffer("w_avg", torch.zeros(self.w_dim) if w_avg is None
                             else w_avg.detach().float().clone().reshape(self.w_dim))

    def config(self) -> dict:
        return {"img_resolution": list(self.img_resolution), "img_channels": self.img_channels,
                "num_ws": self.num_ws, "w_dim": self.w_dim, "width": self.width,
                "max_channels": self.max_channels, "head_channels": self.head_channels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.img_channels, *self.img_resolution):
            raise ValueError(f"Encoder: input must be (B, {self.img_channels}, "
                             f"{self.img_resolution[0]}, {self.img_resolution[1]}), got {tuple(x.shape)}")
        f = self.features(x).flatten(1)
        delta = self.head(f).view(-1, self.num_ws, self.w_dim)
        return self.w_avg[None, None] + delta.float()      # fp32 codes, also under autocast


def build_encoder(G, cfg: dict) -> Encoder:
    """An untrained encoder for generator ``G`` (its W+ layout and mean w)."""
    return Encoder(tuple(G.img_resolution), G.img_channels, G.num_ws, G.w_dim,
                   width=int(cfg["width"]), max_channels=int(cfg["max_channels"]),
                   head_channels=int(cfg["head_channels"]), w_avg=G.mapping.w_avg)


def encoder_state(E: Encoder, prefix: str = "encoder.") -> dict[str, torch.Tensor]:
    """Tensors only (weights_only state dicts): the weights and the constructor config."""
    from adbench.io import json_tensor
    state = {prefix + k: v.detach().cpu() for k, v in E.state_dict().items()}
    state[prefix + "config_json"] = json_tensor(E.config())
    return state


def encoder_from_state(state: dict[str, torch.Tensor], prefix: str = "encoder.") -> Encoder:
    from adbench.io import tensor_json
    if prefix + "config_json" not in state:
        raise KeyError(f"encoder state: missing key {prefix}config_json")
    cfg = tensor_json(state[prefix + "config_json"])
    E = Encoder(tuple(cfg["img_resolution"]), cfg["img_channels"], cfg["num_ws"], cfg["w_dim"],
                width=cfg["width"], max_channels=cfg["max_channels"], head_channels=cfg["head_channels"])
    E.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                       if k.startswith(prefix) and k != prefix + "config_json"})
    return E.eval().requires_grad_(False)


@torch.no_grad()
def encode(E: Encoder, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """W+ codes (N, L, D) float32 of ``images`` (N, C, H, W), on the encoder's device."""
    E.eval()
    dev = E.w_avg.device
    if images.shape[0] == 0:
        return torch.empty(0, E.num_ws, E.w_dim, device=dev)
    return torch.cat([E(images[i:i + batch_size].to(dev, torch.float32)).float()
                      for i in range(0, images.shape[0], batch_size)])


class EncoderTask(TrainingTask):
    """The encoder of a frozen generator, built on ``device`` from ``seed`` alone."""

    streams = ("latent",)

    def __init__(self, G, cfg: dict, *, loss_fn, mse_weight: float, perceptual_weight: float,
                 seed: int, device: torch.device, sample_images: torch.Tensor | None = None):
        self.cfg, self.device = cfg, device
        self.G = G.to(device).eval().requires_grad_(False)
        self.loss_fn = loss_fn
        if loss_fn is not None:
            loss_fn.to(device).eval().requires_grad_(False)
        self.mse_weight, self.perceptual_weight = float(mse_weight), float(perceptual_weight)
        with torch.random.fork_rng(devices=[]):     # init is a function of the seed alone
            torch.manual_seed(seed)
            self.E = build_encoder(G, cfg).to(device)
        self.opt = torch.optim.Adam(self.E.parameters(), lr=float(cfg["lr"]),
                                    betas=tuple(cfg["betas"]))
        self.sample_images = None if sample_images is None else sample_images.to(device).float()

    def modules(self):
        return {"E": self.E}

    def optimizers(self):
        return {"E": self.opt}

    def extra_state(self):
        return {"encoder_config": json.dumps(self.E.config())}

    def _image_loss(self, target: torch.Tensor) -> torch.Tensor:
        """Batch mean of the inversion's per-sample Eq. 1 loss of E(target)."""
        feats = None
        if self.loss_fn is not None:
            with torch.no_grad():
                feats = self.loss_fn.features(target)
        ws = self.E(target)
        return _sample_losses(self.G, self.loss_fn, ws, target, feats, self.mse_weight,
                              self.perceptual_weight).mean(), ws

    def _synthetic(self, step: Step) -> torch.Tensor:
        G, g, b = self.G, step.streams["latent"], step.real.shape[0]
        z = torch.randn(b, G.z_dim, device=self.device, generator=g)
        z2 = torch.randn(b, G.z_dim, device=self.device, generator=g)
        u = torch.rand(b, device=self.device, generator=g)
        cut = torch.randint(1, G.num_ws, (b,), device=self.device, generator=g)
        with torch.no_grad():
            ws = G.mapping(z)
            if self.cfg["mixing_prob"] > 0:
                layer = torch.arange(G.num_ws, device=self.device)[None]
                keep = (layer < cut[:, None]) | (u[:, None] >= self.cfg["mixing_prob"])
                ws = torch.where(keep[..., None], ws, G.mapping(z2))
            img = G.synthesis(ws, noise_mode="none").float()
        img_loss, pred = self._image_loss(img)
        lat = (pred.float() - ws.float()).pow(2).mean()
        step.track("latent_mse", lat)
        step.track("loss_synth_img", img_loss)
        return self.cfg["latent_weight"] * lat + self.cfg["synthetic_weight"] * img_loss

    def _real(self, step: Step) -> torch.Tensor:
        img_loss, _ = self._image_loss(step.real.float())
        step.track("loss_real_img", img_loss)
        return self.cfg["real_weight"] * img_loss

    def phases(self) -> list[Phase]:
        out = [Phase("Esynth", (self.E,), "E", self._synthetic)]
        if self.cfg["real_weight"] > 0:
            out.append(Phase("Ereal", (self.E,), "E", self._real))
        return out

    def samples(self) -> torch.Tensor | None:
        if self.sample_images is None:
            return None
        was = self.E.training
        rec = self.G.synthesis(self.E.eval()(self.sample_images), noise_mode="none").clamp(-1, 1)
        self.E.train(was)
        return torch.cat([self.sample_images, rec.float()])


def train_encoder(G, images: torch.Tensor, cfg: dict | None, workdir: Path | str, *, loss_fn=None,
                  mse_weight: float = 10.0, perceptual_weight: float = 1.0,
                  identity: dict | None = None, device: str = "cpu", seed: int = 0,
                  progress: bool = False, log: Callable[[str], None] | None = None) -> Encoder:
    """Train (or resume, or load when complete) the encoder of the frozen generator ``G`` on
    the healthy slices ``images`` (N, C, H, W) in [-1, 1]; returns it in eval mode on ``device``.

    cfg: overrides of :data:`ENCODER_DEFAULTS`. loss_fn, mse_weight, perceptual_weight: the
    inversion's Eq. 1 loss (``loss_fn`` None: MSE only). identity: JSON-able description of
    the generator and loss (e.g. generator sha256), stored in the checkpoint and checked on
    resume. workdir holds ``encoder-checkpoint.pt``, ``train_log.jsonl``, ``samples_*.png``.
    """
    cfg = resolve_encoder_config(cfg)
    dev = torch.device(device)
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"train_encoder images: got {getattr(images, 'shape', type(images))}, "
                         "expected a tensor (N, C, H, W) with N >= 1")
    k = min(int(cfg["num_samples"]), images.shape[0])
    pick = torch.linspace(0, images.shape[0] - 1, k).round().long() if k > 0 else torch.zeros(0).long()
    task = EncoderTask(G, cfg, loss_fn=loss_fn, mse_weight=mse_weight,
                       perceptual_weight=perceptual_weight, seed=seed, device=dev,
                       sample_images=images[pick] if k > 0 else None)
    settings = LoopSettings(iterations=int(cfg["iterations"]), batch_size=int(cfg["batch_size"]),
                            checkpoint_interval=int(cfg["checkpoint_interval"]),
                            log_interval=int(cfg["log_interval"]),
                            sample_interval=int(cfg["sample_interval"]),
                            precision=cfg["precision"], checkpoint_name=ENCODER_CHECKPOINT,
                            desc="encoder")
    config = {**cfg, "identity": json.loads(json.dumps(identity or {}))}
    train(task, images, settings, workdir, config=config, mutable=_RESUME_MUTABLE, seed=seed,
          device=dev, progress=progress, log=log)
    return task.E.to(dev).eval().requires_grad_(False)
