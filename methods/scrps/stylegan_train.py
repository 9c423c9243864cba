"""StyleGAN2 training for SCRPS (paper §3.1): losses, lazy regularisation, EMA, resume, DDP.

One iteration = D step (non-saturating logistic loss), lazy R1 every ``r1_interval`` steps,
G step (non-saturating loss with style mixing), lazy path-length regularisation every
``pl_interval`` steps (if ``pl_weight > 0``), then the EMA update of ``G_ema``, which is what is
returned and used downstream. Optionally (``blur_sigma > 0``, off in the paper preset) D sees
its inputs, real and fake alike, through a Gaussian blur that fades out over the first
``blur_fade_kimg`` thousand images (StyleGAN3). Lazy regularisation rescales Adam's learning
rate and betas by c = interval / (interval + 1) (StyleGAN2 §B).

Every random draw comes from a named ``torch.Generator`` (data order, latents, noise,
augmentation) whose state is checkpointed, so on CPU ``N`` steps + resume + ``N`` steps equals
``2N`` steps bit for bit. Under ``torch.distributed`` (``torchrun``) gradients are averaged
across ranks by all-reduce, each rank draws its own data and latents, and rank 0 alone writes.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from adbench.io import atomic_path, atomic_write

from .stylegan2 import Discriminator, Generator, generator_from_config

__all__ = ["STYLEGAN_PRESETS", "default_stylegan_config", "train_stylegan", "resolve_config",
           "r1_penalty", "path_length_penalty", "d_logistic_loss", "g_nonsaturating_loss",
           "rotate_images", "blur_images", "blur_sigma_at", "init_distributed", "config_digest",
           "CHECKPOINT_NAME"]

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
)

STYLEGAN_PRESETS: dict[str, dict] = {
    "smoke": {**_PAPER, "z_dim": 32, "w_dim": 32, "mapping_layers": 2, "channel_base": 64,
              "channel_max": 16, "iterations": 10, "batch_size": 4, "pl_weight": 0.0,
              "ema_kimg": 0.01, "checkpoint_interval": 10, "log_interval": 5,
              "sample_interval": 10, "num_samples": 4},
    # 2 idle CPU cores, ~0.72 s per iteration: 2,200 iterations (17.6 kimg) in ~27 minutes.
    # Narrow (64 channels down to 8 at 160x128). Two changes keep so small and short a run
    # from collapsing: D's inputs are blurred early (StyleGAN3's blur, 4 px fading out over
    # the first 6 kimg) and R1 is strong (gamma 50), so D judges the anatomy first and
    # cannot run away from the generator. Use with the cpu-quick preprocessing preset
    # (central training slices).
    "cpu-quick": {**_PAPER, "z_dim": 128, "w_dim": 128, "mapping_layers": 2, "channel_base": 256,
                  "channel_max": 64, "iterations": 2200, "batch_size": 8, "pl_weight": 0.0,
                  "r1_gamma": 50.0, "blur_sigma": 4.0, "blur_fade_kimg": 6.0,
                  "ema_kimg": 0.5, "ema_rampup": 0.05, "checkpoint_interval": 100,
                  "log_interval": 25, "sample_interval": 100},
    # full width; 1800 iterations is an estimate for <= 6 min on one H200 (not yet measured)
    "gpu-quick": {**_PAPER, "iterations": 1800, "batch_size": 32, "pl_weight": 0.0,
                  "ema_kimg": 5.0, "ema_rampup": 0.05, "checkpoint_interval": 500,
                  "sample_interval": 500},
    "paper": dict(_PAPER),
}

# keys that may differ between the checkpoint and the config that resumes it
_RESUME_MUTABLE = {"iterations", "checkpoint_interval", "log_interval", "sample_interval",
                   "compile", "num_samples"}


def config_digest(cfg: dict) -> str:
    """Short hash of the settings that define a training run (not its length or logging):
    equal digests can resume each other's checkpoints."""
    fixed = {k: v for k, v in resolve_config(cfg).items() if k not in _RESUME_MUTABLE}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:12]


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
    return out


# ----------------------------------------------------------------------------- losses

def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic D loss: softplus(D(G(z))) + softplus(-D(x)), mean over batch."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss: softplus(-D(G(z))), mean over batch."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(D: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """R1 = ||grad_x D(x)||^2 per real image (Mescheder et al. 2018), real (B, C, H, W) -> (B,).

    ``D`` is the discriminator or any differentiable function of the image ending in it
    (training passes D after the early blur, as StyleGAN3 does).

    Built with ``create_graph=True`` so that it can be minimised w.r.t. D's weights.
    """
    real = real.detach().requires_grad_(True)
    logits = D(real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    grad = grad if grad.dtype == torch.float64 else grad.float()
    return grad.square().sum(dim=[1, 2, 3])


def path_length_penalty(G: Generator, ws: torch.Tensor, pl_mean: torch.Tensor,
                        generator: torch.Generator | None, noise_mode: str, decay: float,
                        world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2 Eq. 4: (||J_w^T y||_2 - a)^2 with y ~ N(0, I)/sqrt(HW); returns (penalty (B,),
    new running mean a)."""
    if not ws.requires_grad:  # otherwise keep the graph so the penalty also reaches the mapping
        ws = ws.detach().requires_grad_(True)
    img = G.synthesis(ws, noise_mode, generator)
    h, w = img.shape[2:]
    y = torch.randn(img.shape, device=img.device, generator=generator) / math.sqrt(h * w)
    (grad,) = torch.autograd.grad((img.float() * y).sum(), ws, create_graph=True)
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
    batch_mean = lengths.detach().mean()
    if world > 1:
        dist.all_reduce(batch_mean)
        batch_mean = batch_mean / world
    new_mean = pl_mean.lerp(batch_mean, decay)
    return (lengths - new_mean).square(), new_mean


def blur_sigma_at(cfg: dict, nimg: float) -> float:
    """Gaussian sigma (px) of D's input blur after ``nimg`` training images: ``blur_sigma``
    fading linearly to zero over ``blur_fade_kimg`` thousand images (StyleGAN3's
    ``blur_init_sigma`` / ``blur_fade_kimg``)."""
    if cfg["blur_sigma"] <= 0:
        return 0.0
    fade = cfg["blur_fade_kimg"] * 1000
    return float(cfg["blur_sigma"]) * (max(1.0 - nimg / fade, 0.0) if fade > 0 else 1.0)


def blur_images(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with ``sigma`` px (0: x unchanged).

    StyleGAN3 shows D blurred reals *and* fakes early in training, so that it first judges
    coarse structure, not the high-frequency texture a young generator cannot make yet.
    Edges are replicated (the background of a brain slice stays background).
    """
    if sigma <= 0:
        return x
    r = max(int(math.floor(sigma * 3)), 1)
    t = torch.arange(-r, r + 1, device=x.device, dtype=torch.float32)
    f = t.div(sigma).square().neg().exp2()
    f = (f / f.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, f.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, f.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


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


# ----------------------------------------------------------------------------- helpers

def init_distributed(device: str) -> tuple[int, int, str]:
    """Initialise ``torch.distributed`` when launched by torchrun (WORLD_SIZE > 1).

    Returns (rank, world_size, device); gloo on CPU, NCCL on CUDA with one GPU per local rank.
    """
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if str(device).startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sync_grads(module: torch.nn.Module, world: int) -> None:
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    if world > 1:
        flat = torch.cat([p.grad.flatten() for p in params])
        dist.all_reduce(flat)
        flat /= world
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p))
    for p in params:
        torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)


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


def _mixed_ws(G: Generator, z: torch.Tensor, z2: torch.Tensor, prob: float,
              gen: torch.Generator) -> torch.Tensor:
    """Style mixing: with probability ``prob`` the codes from a random cutoff on come from z2."""
    ws = G.mapping(z)
    if prob <= 0:
        return ws
    # draw both numbers every time (fixed RNG consumption) and decide on device: no host sync
    u = torch.rand((), device=z.device, generator=gen)
    cut = torch.randint(1, G.num_ws, (), device=z.device, generator=gen)
    keep = (torch.arange(G.num_ws, device=z.device) < cut) | (u >= prob)
    return torch.where(keep[None, :, None], ws, G.mapping(z2))


def _save_grid(img: torch.Tensor, path: Path) -> None:
    """Tile (N, 1, H, W) images in [-1, 1] into a near-square grid PNG (atomic)."""
    from PIL import Image

    n, _, h, w = img.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.zeros((rows * h, cols * w), dtype=np.uint8)
    arr = ((img[:, 0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    for k in range(n):
        r, c = divmod(k, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = arr[k]
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def _generators(seed: int, rank: int, device: torch.device, iteration: int = 0) -> dict[str, torch.Generator]:
    gens = {}
    for k, name in enumerate(("data", "latent", "noise", "aug")):
        g = torch.Generator(device="cpu" if name == "data" else device)
        g.manual_seed(int(seed) * 1_000_003 + rank * 7919 + k * 104_729 + iteration)
        gens[name] = g
    return gens


def _load_checkpoint(path: Path, cfg: dict, seed: int) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = json.loads(state["config"])
    now = json.loads(json.dumps(cfg))
    diff = sorted(k for k in now if k not in _RESUME_MUTABLE and saved.get(k) != now[k])
    if diff or int(state["seed"]) != int(seed):
        detail = {k: (saved.get(k), now[k]) for k in diff}
        if int(state["seed"]) != int(seed):
            detail["seed"] = (int(state["seed"]), int(seed))
        raise ValueError(f"{path}: checkpoint written with different settings (saved, now): {detail}; "
                         "resume with the same config and seed, or use a new workdir")
    return state


def train_stylegan(images: torch.Tensor, cfg: dict, workdir: Path | str, *, device: str = "cpu",
                   seed: int = 0, progress: bool = False,
                   log: Callable[[str], None] | None = None) -> Generator:
    """Train StyleGAN2 on healthy slices and return the EMA generator (eval mode, on ``device``).

    images: (N, C, H, W) float in [-1, 1] (C = 1 for MRI; H, W = base x 2^k, e.g. 160x128).
    cfg: overrides of :func:`default_stylegan_config` (see :data:`STYLEGAN_PRESETS`).
    workdir: holds ``stylegan2-checkpoint.pt`` (resumed from if present; if it already reached
    ``cfg["iterations"]`` training is skipped), ``train_log.jsonl`` and ``samples_<iter>.png``.
    log: called with one line per log interval (rank 0 only).
    """
    cfg = resolve_config(cfg)
    workdir = Path(workdir)
    dev = torch.device(device)
    rank, world = _dist_info()
    say = (getattr(log, "info", log) if log is not None and rank == 0 else (lambda msg: None))
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"train_stylegan images: got {getattr(images, 'shape', type(images))}, "
                         "expected a tensor (N, C, H, W) with N >= 1")
    n, c, h, w = images.shape
    batch = int(cfg["batch_size"])
    if batch % world:
        raise ValueError(f"StyleGAN2 config 'batch_size' {batch} is not divisible by the world size "
                         f"{world}; choose a multiple of the number of processes")
    local_batch = batch // world
    G, D = _build(cfg, (h, w), c, seed)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    ckpt_path = workdir / CHECKPOINT_NAME
    state = _load_checkpoint(ckpt_path, cfg, seed) if ckpt_path.exists() else None
    if state is not None and int(state["iteration"]) >= cfg["iterations"]:
        G_ema.load_state_dict(state["G_ema"])
        say(f"{ckpt_path}: complete at iteration {int(state['iteration'])}, not training")
        return G_ema.to(dev)

    for m in (G, D, G_ema):
        m.to(dev)
    b0, b1 = cfg["betas"]
    ratios = {"G": cfg["pl_interval"] / (cfg["pl_interval"] + 1) if cfg["pl_weight"] > 0 else 1.0,
              "D": cfg["r1_interval"] / (cfg["r1_interval"] + 1) if cfg["r1_gamma"] > 0 else 1.0}
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg["lr"] * ratios["G"],
                             betas=(b0 ** ratios["G"], b1 ** ratios["G"]), eps=1e-8)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg["lr"] * ratios["D"],
                             betas=(b0 ** ratios["D"], b1 ** ratios["D"]), eps=1e-8)
    gens = _generators(seed, rank, dev)
    start, pl_mean = 0, torch.zeros((), device=dev)
    records: list[dict] = []
    if state is not None:
        for m, key in ((G, "G"), (D, "D"), (G_ema, "G_ema"), (opt_G, "G_opt"), (opt_D, "D_opt")):
            m.load_state_dict(state[key])
        start, pl_mean = int(state["iteration"]), state["pl_mean"].to(dev)
        if world == 1 and int(state["world_size"]) == 1:
            for name, g in gens.items():
                g.set_state(state[f"rng_{name}"])
        else:  # other ranks' streams are not saved: reseed every rank from (seed, rank, iteration)
            gens = _generators(seed, rank, dev, iteration=start)
        log_path = workdir / "train_log.jsonl"
        if log_path.exists():
            records = [r for r in map(json.loads, log_path.read_text().splitlines())
                       if r["iteration"] <= start]
        say(f"{ckpt_path}: resuming at iteration {start}")
    if world > 1:
        for m in (G, D, G_ema):
            for t in list(m.parameters()) + list(m.buffers()):
                dist.broadcast(t.data, src=0)

    data = images.float()
    data = data.to(dev) if dev.type == "cuda" and data.numel() * 4 < 2 ** 31 else data
    use_bf16 = cfg["precision"] == "bf16" or (cfg["precision"] == "auto" and dev.type == "cuda")

    def autocast():
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16)

    synth = torch.compile(G.synthesis) if cfg["compile"] else G.synthesis
    D_run = torch.compile(D) if cfg["compile"] else D
    noise_mode, deg, mix = cfg["train_noise_mode"], float(cfg["rotate_degrees"]), cfg["style_mixing_prob"]
    # only pass the noise generator when it is used (a Generator argument breaks torch.compile graphs)
    noise_gen = gens["noise"] if noise_mode == "random" else None
    sample_z = torch.randn(cfg["num_samples"], cfg["z_dim"],
                           generator=torch.Generator().manual_seed(int(seed) + 2024)).to(dev)
    sample_mode = "const" if noise_mode == "random" else noise_mode
    stats: dict[str, list[torch.Tensor]] = {}
    t_last, it_last = time.perf_counter(), start

    def track(name: str, value: torch.Tensor) -> None:
        stats.setdefault(name, []).append(value.detach().float())

    def latents(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = gens["latent"]
        return (torch.randn(k, cfg["z_dim"], device=dev, generator=g),
                torch.randn(k, cfg["z_dim"], device=dev, generator=g))

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg["iterations"], initial=start, disable=not progress or rank != 0,
               desc="stylegan2", unit="it")
    for it in range(start, cfg["iterations"]):
        sigma = blur_sigma_at(cfg, it * batch)

        def run_D(img: torch.Tensor) -> torch.Tensor:
            return D_run(blur_images(img, sigma))

        # ---- D: logistic loss on augmented reals and detached fakes
        idx = torch.randint(n, (local_batch,), generator=gens["data"])
        real = data[idx.to(data.device)].to(dev, non_blocking=True)
        if deg > 0 and cfg["rotate_prob"] > 0:
            ang = (torch.rand(local_batch, device=dev, generator=gens["aug"]) * 2 - 1) * deg
            apply = torch.rand(local_batch, device=dev, generator=gens["aug"]) < cfg["rotate_prob"]
            real = torch.where(apply[:, None, None, None], rotate_images(real, ang), real)
        G.requires_grad_(False)
        D.requires_grad_(True)
        z, z2 = latents(local_batch)
        with torch.no_grad(), autocast():
            fake = synth(_mixed_ws(G, z, z2, mix, gens["latent"]), noise_mode, noise_gen)
        with autocast():
            real_logits, fake_logits = run_D(real), run_D(fake)
            loss_D = d_logistic_loss(real_logits, fake_logits)
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        _sync_grads(D, world)
        opt_D.step()
        track("loss_D", loss_D)
        track("real_logit", real_logits.mean())
        track("fake_logit", fake_logits.mean())
        track("blur_sigma", torch.tensor(sigma))
        # ---- D: lazy R1 on the reals, weighted by the interval
        if cfg["r1_gamma"] > 0 and it % cfg["r1_interval"] == 0:
            with autocast():
                r1 = r1_penalty(lambda img: D(blur_images(img, sigma)), real)
            opt_D.zero_grad(set_to_none=True)
            (r1.mean() * (cfg["r1_gamma"] / 2) * cfg["r1_interval"]).backward()
            _sync_grads(D, world)
            opt_D.step()
            track("r1", r1.mean())
        # ---- G: non-saturating loss with style mixing
        G.requires_grad_(True)
        D.requires_grad_(False)
        z, z2 = latents(local_batch)
        with autocast():
            ws = _mixed_ws(G, z, z2, mix, gens["latent"])
            fake_logits = run_D(synth(ws, noise_mode, noise_gen))
            loss_G = g_nonsaturating_loss(fake_logits)
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        _sync_grads(G, world)
        opt_G.step()
        track("loss_G", loss_G)
        with torch.no_grad():  # tracked mean w from the unmixed codes, averaged over ranks
            w_mean = ws[:, 0].detach().float().mean(dim=0)
            if world > 1:
                dist.all_reduce(w_mean)
                w_mean /= world
            G.mapping.update_w_avg(w_mean)
        # ---- G: lazy path-length regularisation
        if cfg["pl_weight"] > 0 and it % cfg["pl_interval"] == 0:
            z, z2 = latents(max(1, local_batch // cfg["pl_batch_shrink"]))
            with autocast():
                ws = _mixed_ws(G, z, z2, mix, gens["latent"])
                pen, pl_mean = path_length_penalty(G, ws, pl_mean, gens["noise"], noise_mode,
                                                   cfg["pl_decay"], world)
            opt_G.zero_grad(set_to_none=True)
            (pen.mean() * cfg["pl_weight"] * cfg["pl_interval"]).backward()
            _sync_grads(G, world)
            opt_G.step()
            pl_mean = pl_mean.detach()
            track("pl", pen.mean())
        # ---- EMA of G (half-life ema_kimg thousand images, optionally ramped up)
        done = it + 1
        ema_nimg = cfg["ema_kimg"] * 1000
        if cfg["ema_rampup"] is not None:
            ema_nimg = min(ema_nimg, done * batch * cfg["ema_rampup"])
        beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.detach().lerp(p_ema, beta))
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)
        bar.update(1)

        if done % cfg["log_interval"] == 0 or done == cfg["iterations"]:
            now = time.perf_counter()
            rec = {"iteration": done, "kimg": done * batch / 1000,
                   **{k: float(torch.stack(v).mean()) for k, v in sorted(stats.items())},
                   "sec_per_iter": (now - t_last) / max(done - it_last, 1),
                   "images_per_s": batch * (done - it_last) / max(now - t_last, 1e-9)}
            stats.clear()
            t_last, it_last = now, done
            records.append(rec)
            if rank == 0:
                atomic_write(workdir / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in records))
                say(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
                bar.set_postfix(loss_G=f"{rec['loss_G']:.3f}", loss_D=f"{rec['loss_D']:.3f}")
        if rank == 0 and (done % cfg["sample_interval"] == 0 or done == cfg["iterations"]):
            with torch.no_grad():
                _save_grid(G_ema(sample_z, noise_mode=sample_mode), workdir / f"samples_{done:06d}.png")
        if done % cfg["checkpoint_interval"] == 0 or done == cfg["iterations"]:
            if rank == 0:
                payload = {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
                           "G_opt": opt_G.state_dict(), "D_opt": opt_D.state_dict(),
                           "iteration": done, "pl_mean": pl_mean.detach().cpu(),
                           "config": json.dumps(cfg), "generator_config": json.dumps(G.config()),
                           "seed": int(seed), "world_size": world,
                           **{f"rng_{k}": g.get_state() for k, g in gens.items()}}
                with atomic_path(ckpt_path) as tmp:
                    torch.save(payload, tmp)
            if world > 1:
                dist.barrier()
    bar.close()
    return G_ema.eval().requires_grad_(False)
