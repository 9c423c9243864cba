"""StyleGAN2 generator and discriminator for single-channel brain slices (paper §2.1, §3.1).

The generator starts from a learned constant at the base resolution (5x4 for 160x128) and
doubles it ``k`` times (five blocks for 160x128). Latent codes are W+ codes ``ws`` of shape
(B, num_ws, w_dim); for 160x128 ``num_ws == 12`` with the index table of architecture §7:

====================  ======================================================================
W+ index              drives
====================  ======================================================================
0                     conv at 5x4
1, 3, 5, 7, 9         ToRGB of the previous resolution and the upsampling conv of the next
2, 4, 6, 8, 10        second conv at 10x8, 20x16, 40x32, 80x64, 160x128
11                    ToRGB at 160x128
====================  ======================================================================

Checkpoints are plain state dicts plus :meth:`Generator.config` (JSON); rebuild with
:func:`generator_from_config`.
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adbench.errors import DataError
from adbench.io import json_tensor, load_tensors, save_tensors, tensor_json
from adbench.methods.scrps.stylegan2_layers import (EqualConv2d, EqualLinear, blur_filter, lrelu,
                                                    modulated_conv2d, upsample2d)

__all__ = ["MappingNetwork", "SynthesisLayer", "ToRGBLayer", "SynthesisBlock", "SynthesisNetwork",
           "Generator", "Discriminator", "generator_from_config", "discriminator_from_config",
           "resolution_levels", "channel_table", "tensor_hash", "generator_state",
           "generator_from_state", "save_generator", "load_generator"]

NOISE_MODES = ("random", "const", "none")


def resolution_levels(img_resolution: tuple[int, int]) -> list[tuple[int, int]]:
    """[(h0, w0), (2h0, 2w0), ..., (H, W)]: halve (H, W) while both stay even and h0 >= 4.

    (160, 128) -> [(5, 4), (10, 8), (20, 16), (40, 32), (80, 64), (160, 128)].
    """
    h, w = (int(v) for v in img_resolution)
    if h < 4 or w < 4:
        raise ValueError(f"img_resolution: got {(h, w)}, expected both sides >= 4")
    levels = [(h, w)]
    while h % 2 == 0 and w % 2 == 0 and h // 2 >= 4 and w // 2 >= 4:
        h, w = h // 2, w // 2
        levels.append((h, w))
    if len(levels) < 2:
        raise ValueError(f"img_resolution: got {tuple(img_resolution)}, expected a base resolution "
                         "times a power of two >= 2 (e.g. 160x128 = 5x4 * 2^5)")
    return levels[::-1]


def channel_table(levels: list[tuple[int, int]], channel_base: int, channel_max: int,
                  channels: dict | None = None) -> dict[str, int]:
    """Feature maps per resolution, keyed "HxW": ``channels`` if given, else
    ``min(channel_max, channel_base // 2**level)`` (level 0 = base resolution).

    Full width (channel_base=4096, channel_max=512): 512 up to 40x32, 256 at 80x64, 128 at
    160x128.
    """
    keys = [f"{h}x{w}" for h, w in levels]
    if channels is not None:
        missing = [k for k in keys if k not in channels]
        if missing:
            raise ValueError(f"channels: missing resolutions {missing}; expected keys {keys}")
        return {k: int(channels[k]) for k in keys}
    return {k: max(1, min(channel_max, channel_base // 2 ** i)) for i, k in enumerate(keys)}


class MappingNetwork(nn.Module):
    """z (B, z_dim) -> ws (B, num_ws, w_dim): normalise z, ``num_layers`` FC + lrelu (lr x0.01).

    Tracks the mean w (``w_avg``, EMA with ``w_avg_beta``) for truncation and as the start of
    GAN inversion.
    """

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, *,
                 num_layers: int = 8,          # StyleGAN2 default 8
                 lr_mul: float = 0.01,         # mapping learns 100x slower
                 w_avg_beta: float = 0.995,    # decay of the tracked mean w
                 ):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul=lr_mul, activation="lrelu")
                                    for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                update_w_avg: bool = False) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"mapping: z has shape {tuple(z.shape)}, expected (B, {self.z_dim})")
        x = z.float() * (z.float().square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for layer in self.layers:
            x = layer(x)
        x = x.float()
        if update_w_avg:
            self.update_w_avg(x.detach().mean(dim=0))
        if truncation_psi != 1.0:
            x = self.w_avg.lerp(x, truncation_psi)
        return x[:, None, :].expand(-1, self.num_ws, -1)

    @torch.no_grad()
    def update_w_avg(self, batch_mean: torch.Tensor) -> None:
        """w_avg <- beta w_avg + (1 - beta) batch_mean (the caller may all-reduce the mean)."""
        self.w_avg.copy_(batch_mean.lerp(self.w_avg, self.w_avg_beta))


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + noise + bias + lrelu, optionally 2x upsampling first."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: tuple[int, int], *,
                 up: bool = False,          # True: first conv of a block (transposed conv + blur)
                 fused_modconv: bool = True,  # grouped conv over the batch (see modulated_conv2d)
                 ):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution))
        self.register_buffer("resample_filter", blur_filter(), persistent=False)
        self.up, self.resolution, self.fused_modconv = up, tuple(resolution), fused_modconv

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                generator: torch.Generator | None = None) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles, demodulate=True, up=self.up,
                             resample_filter=self.resample_filter, fused=self.fused_modconv)
        if tuple(x.shape[2:]) != self.resolution:
            raise RuntimeError(f"SynthesisLayer: output {tuple(x.shape[2:])}, expected {self.resolution}")
        if noise_mode == "random":
            noise = torch.randn((x.shape[0], 1, *self.resolution), device=x.device,
                                generator=generator).to(x.dtype)
            x = x + noise * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        # "none": b = 0, the SCRPS setting (§3.1), adds nothing
        return lrelu(x + self.bias.to(x.dtype)[None, :, None, None])


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, not demodulated (StyleGAN2 Fig. 7)."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int, *, fused_modconv: bool = True):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.fused_modconv = fused_modconv

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=self.fused_modconv)
        return x + self.bias.to(x.dtype)[None, :, None, None]


class SynthesisBlock(nn.Module):
    """One resolution: [const | upsampling conv] -> conv -> ToRGB, image skip added.

    Consumes ``num_conv + 1`` W+ codes: the first block (constant input) has ``num_conv = 1``,
    later ones 2; the ToRGB code is shared with the next block's first conv.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: tuple[int, int],
                 img_channels: int, *, is_first: bool, fused_modconv: bool = True):
        super().__init__()
        self.is_first, self.resolution = is_first, tuple(resolution)
        if is_first:
            self.const = nn.Parameter(torch.randn(out_channels, *resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True,
                                        fused_modconv=fused_modconv)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution,
                                    fused_modconv=fused_modconv)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, fused_modconv=fused_modconv)
        self.register_buffer("resample_filter", blur_filter(), persistent=False)
        self.num_conv = 1 if is_first else 2

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str, generator: torch.Generator | None):
        """ws (B, num_conv + 1, w_dim); x, img from the previous block (None for the first)."""
        if self.is_first:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
            x = self.conv1(x, ws[:, 0], noise_mode, generator)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, generator)
            x = self.conv1(x, ws[:, 1], noise_mode, generator)
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else upsample2d(img, self.resample_filter).to(y.dtype) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> img (B, img_channels, H, W)."""

    def __init__(self, w_dim: int, img_resolution: tuple[int, int], img_channels: int,
                 channels: dict[str, int], *, fused_modconv: bool = True):
        super().__init__()
        self.levels = resolution_levels(img_resolution)
        self.w_dim, self.img_channels = w_dim, img_channels
        blocks, prev = [], 0
        for i, (h, w) in enumerate(self.levels):
            ch = channels[f"{h}x{w}"]
            blocks.append(SynthesisBlock(prev, ch, w_dim, (h, w), img_channels, is_first=(i == 0),
                                         fused_modconv=fused_modconv))
            prev = ch
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = sum(b.num_conv for b in blocks) + 1

    def forward(self, ws: torch.Tensor, noise_mode: str = "const",
                generator: torch.Generator | None = None) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"synthesis: ws has shape {tuple(ws.shape)}, expected "
                             f"(B, {self.num_ws}, {self.w_dim})")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode: got {noise_mode!r}, expected one of {NOISE_MODES}")
        x = img = None
        w_idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode, generator)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """StyleGAN2 generator G(z) = synthesis(mapping(z)) (paper §2.1, Fig. 1a)."""

    def __init__(self, z_dim: int = 512, w_dim: int = 512,
                 img_resolution: tuple[int, int] = (160, 128),
                 img_channels: int = 1,
                 channels: dict | None = None,   # {"5x4": 512, ...}; None: from base/max
                 mapping_layers: int = 8,
                 channel_base: int = 4096,       # width at level k: min(channel_max, base // 2**k)
                 channel_max: int = 512,
                 mapping_lr_mul: float = 0.01,
                 w_avg_beta: float = 0.995,
                 fused_modconv: bool = True,     # grouped-conv modulation (False: scale activations)
                 ):
        super().__init__()
        self.z_dim, self.w_dim, self.img_channels = z_dim, w_dim, img_channels
        self.img_resolution = tuple(int(v) for v in img_resolution)
        levels = resolution_levels(self.img_resolution)
        self.channels = channel_table(levels, channel_base, channel_max, channels)
        self._config = dict(z_dim=z_dim, w_dim=w_dim, img_resolution=list(self.img_resolution),
                            img_channels=img_channels, channels=dict(self.channels),
                            mapping_layers=mapping_layers, channel_base=channel_base,
                            channel_max=channel_max, mapping_lr_mul=mapping_lr_mul,
                            w_avg_beta=w_avg_beta, fused_modconv=fused_modconv)
        self.synthesis = SynthesisNetwork(w_dim, self.img_resolution, img_channels, self.channels,
                                          fused_modconv=fused_modconv)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, num_layers=mapping_layers,
                                      lr_mul=mapping_lr_mul, w_avg_beta=w_avg_beta)

    def config(self) -> dict:
        """JSON-able constructor arguments (``generator_from_config`` inverts this)."""
        return {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
                for k, v in self._config.items()}

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: str = "random",
                generator: torch.Generator | None = None) -> torch.Tensor:
        """z (B, z_dim) -> img (B, img_channels, H, W), roughly in [-1, 1]."""
        return self.synthesis(self.mapping(z, truncation_psi), noise_mode, generator)


def generator_from_config(cfg: dict) -> Generator:
    """Build a :class:`Generator` from :meth:`Generator.config` output."""
    cfg = dict(cfg)
    cfg["img_resolution"] = tuple(cfg.get("img_resolution", (160, 128)))
    return Generator(**cfg)


def generator_state(G: Generator, prefix: str = "generator.") -> dict[str, torch.Tensor]:
    """The weights (``generator.<name>``) and constructor config (``generator_config_json``)
    of ``G`` as one flat dict of tensors: the format of a generator file and of SCRPS's state."""
    return {**{prefix + k: v.detach().cpu() for k, v in G.state_dict().items()},
            _config_key(prefix): json_tensor(G.config())}


def _config_key(prefix: str) -> str:
    return prefix.rstrip(".") + "_config_json"


def generator_from_state(state: dict[str, torch.Tensor], prefix: str = "generator.",
                         where: str = "state") -> Generator:
    """Inverse of :func:`generator_state`: an eval-mode, frozen :class:`Generator`."""
    if _config_key(prefix) not in state:
        raise KeyError(f"{where}: no {_config_key(prefix)!r}; not a StyleGAN2 generator (write "
                       "one with `python -m adbench.methods.scrps.train`)")
    G = generator_from_config(tensor_json(state[_config_key(prefix)]))
    G.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return G.eval().requires_grad_(False)


def save_generator(path: str | Path, G: Generator) -> None:
    """Write ``G`` as a generator file (atomic; loaded with ``weights_only=True``)."""
    save_tensors(path, generator_state(G))


def load_generator(path: str | Path) -> Generator:
    """Read a generator file written by :func:`save_generator` (the training command's
    ``generator.pt``); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such generator file (train one with `python -m "
                                "adbench.methods.scrps.train ... --out DIR`, then pass "
                                "DIR/generator.pt)")
    try:
        state = load_tensors(path)
        return generator_from_state(state, where=str(path))
    except (KeyError, RuntimeError, ValueError, EOFError, OSError, pickle.UnpicklingError) as exc:
        raise DataError(f"{path}: not a readable StyleGAN2 generator file ({exc})") from None


class DiscriminatorBlock(nn.Module):
    """Residual block: (conv3x3, conv3x3 down) + 1x1 down skip, scaled by sqrt(1/2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation="lrelu", down=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


class MinibatchStd(nn.Module):
    """Append the mean over features of the per-group std as one extra channel."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = min(self.group_size, b)
        if b % g:
            g = math.gcd(b, g)
        y = x.float().reshape(g, -1, c, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()   # (B/g, C, H, W)
        y = y.mean(dim=[1, 2, 3])                                       # (B/g,)
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w).to(x.dtype)      # (B, 1, H, W)
        return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: img (B, C, H, W) -> logits (B,).

    FromRGB at full resolution, one residual block per halving down to the base resolution
    (5x4 for 160x128), then minibatch-std, conv 3x3, FC and the output FC.
    """

    def __init__(self, img_resolution: tuple[int, int] = (160, 128), img_channels: int = 1,
                 channels: dict | None = None, channel_base: int = 4096, channel_max: int = 512,
                 mbstd_group_size: int = 4):
        super().__init__()
        self.img_resolution = tuple(int(v) for v in img_resolution)
        self.img_channels = img_channels
        levels = resolution_levels(self.img_resolution)
        self.channels = channel_table(levels, channel_base, channel_max, channels)
        self._config = dict(img_resolution=list(self.img_resolution), img_channels=img_channels,
                            channels=dict(self.channels), channel_base=channel_base,
                            channel_max=channel_max, mbstd_group_size=mbstd_group_size)
        chs = [self.channels[f"{h}x{w}"] for h, w in levels][::-1]   # top resolution first
        self.fromrgb = EqualConv2d(img_channels, chs[0], 1, activation="lrelu")
        self.blocks = nn.ModuleList(DiscriminatorBlock(a, b) for a, b in zip(chs[:-1], chs[1:]))
        h0, w0 = levels[0]
        c0 = chs[-1]
        self.mbstd = MinibatchStd(mbstd_group_size)
        self.conv = EqualConv2d(c0 + 1, c0, 3, activation="lrelu")
        self.fc = EqualLinear(c0 * h0 * w0, c0, activation="lrelu")
        self.out = EqualLinear(c0, 1)

    def config(self) -> dict:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self._config.items()}

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 4 or tuple(img.shape[1:]) != (self.img_channels, *self.img_resolution):
            raise ValueError(f"discriminator: img has shape {tuple(img.shape)}, expected "
                             f"(B, {self.img_channels}, {self.img_resolution[0]}, {self.img_resolution[1]})")
        x = self.fromrgb(img)
        for block in self.blocks:
            x = block(x)
        x = self.conv(self.mbstd(x))
        x = self.fc(x.flatten(1))
        logits = self.out(x).squeeze(1)
        return logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 under autocast


def discriminator_from_config(cfg: dict) -> Discriminator:
    cfg = dict(cfg)
    cfg["img_resolution"] = tuple(cfg.get("img_resolution", (160, 128)))
    return Discriminator(**cfg)


def tensor_hash(module: nn.Module) -> str:
    """SHA-256 over a module's state dict (names and bytes): equal iff the weights are equal."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.detach().cpu().float().numpy()).tobytes())
    return h.hexdigest()
