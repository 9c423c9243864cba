"""MemAE detector: train the memory-augmented autoencoder on healthy slices, reconstruct.

``fit`` trains :class:`~adbench.methods.memae.networks.MemAENet` with the shared loop
(:mod:`adbench.methods.memae.training`) in ``<workdir>/memae-<config digest>``, so an
interrupted fit resumes with the same command. ``reconstruct`` is x̂ = decoder(memory(
encoder(x))) with the memory fixed (abstract: "the learned memory will be fixed" at test
time). The runner scores (x, x̂) with the shared perceptual score A_per; with
``runner.localisation=native`` the map is MemAE's own: the squared residual (x - x̂)², and
``extras["score"]`` its mean over the slice, the reconstruction error the paper uses as the
anomaly score (§3.5).
"""
from __future__ import annotations

from typing import Annotated, Literal

import torch

from adbench.data.volume import SliceSet
from adbench.detector import Context, Prediction, ReconstructionDetector
from adbench.io import json_tensor, tensor_json
from adbench.params import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range
from adbench.training import work_folder

from .networks import MemAENet
from .training import network_config, train_memae, training_digest

__all__ = ["MemAE"]


class MemAE(ReconstructionDetector):
    """Memory-augmented deep autoencoder (Gong et al., "Memorizing Normality to Detect Anomaly",
    ICCV 2019; code github.com/donggong1/memae-anomaly-detection).

    Where each default comes from (paper = the ICCV paper, code = the authors' repository):

    memory_size         N = 2000: paper §4 (video datasets; image sets used 100 and 500),
                        code ``--MemDim 2000``
    shrink_threshold    λ of Eq. 7; None = 1/N: the low end of the paper's advice, λ in
                        [1/N, 3/N] (§3.3). The code's 0.0025 (= 5/N) pairs with its dot-product
                        addressing: under cosine addressing (softmax of values in [-1, 1]) no
                        weight may reach 5/N and the memory would read nothing. 0 = no shrinkage
    addressing          "cosine": Eq. 4 (paper); "dot": z m_iᵀ without normalisation (code)
    entropy_weight      α = 0.0002 of Eq. 10 (paper §4; code ``--EntropyLossWeight``)
    levels, base_channels, channel_max
                        four stride-2 levels to 256 channels: the code's 16x downsampling and
                        item length 256 (its 96/128/256/256 widths, here 64/128/256/256 from the
                        shared DCGAN encoder); a 10x8 grid of memory reads at 160x128
    lr                  Adam, 1e-4 (code ``--LR``; Adam's default betas, as in the code)
    batch_size          10 (code: ``train_video_MemAE.sh --BatchSize 10``)
    iterations          50,000: the code trains 100 epochs; 50,000 x 10 slices is ~100 epochs of
                        a ~5,000-slice healthy training set (not in the paper)
    precision, compile  loop switches ("auto": bf16 autocast on CUDA, fp32 on CPU; the memory
                        addressing always runs in fp32)
    checkpoint_interval, log_interval, sample_interval, num_samples
                        checkpoint / JSONL log / sample-grid cadence and the number of fixed
                        training slices shown (with their reconstructions) in each grid
    predict_batch_size  slices per forward pass in ``reconstruct``
    """

    def __init__(self, memory_size: PositiveInt = 2000,
                 shrink_threshold: Annotated[float, Range(0, 1, hi_open=True)] | None = None,
                 addressing: Literal["cosine", "dot"] = "cosine",
                 entropy_weight: NonNegativeFloat = 0.0002,
                 levels: Annotated[int, Range(1, 5)] = 4, base_channels: PositiveInt = 64,
                 channel_max: PositiveInt = 256, lr: PositiveFloat = 1e-4,
                 batch_size: PositiveInt = 10, iterations: NonNegativeInt = 50_000,
                 precision: Literal["auto", "fp32", "bf16"] = "auto", compile: bool = False,
                 checkpoint_interval: PositiveInt = 1000, log_interval: PositiveInt = 100,
                 sample_interval: PositiveInt = 1000, num_samples: PositiveInt = 8,
                 predict_batch_size: PositiveInt = 64):
        self.memory_size = memory_size
        self.shrink_threshold = shrink_threshold
        self.addressing = addressing
        self.entropy_weight = entropy_weight
        self.levels = levels
        self.base_channels = base_channels
        self.channel_max = channel_max
        self.lr = lr
        self.batch_size = batch_size
        self.iterations = iterations
        self.precision = precision
        self.compile = compile
        self.checkpoint_interval = checkpoint_interval
        self.log_interval = log_interval
        self.sample_interval = sample_interval
        self.num_samples = num_samples
        self.predict_batch_size = predict_batch_size

    # -- configuration ---------------------------------------------------------------------
    def training_config(self, size: tuple[int, int]) -> dict:
        """The whole training config for slices of ``size`` (H, W), as JSON data."""
        return {"size": [int(size[0]), int(size[1])], "levels": int(self.levels),
                "base": int(self.base_channels), "channel_max": int(self.channel_max),
                "memory_size": int(self.memory_size),
                "shrink_threshold": (None if self.shrink_threshold is None
                                     else float(self.shrink_threshold)),
                "addressing": self.addressing, "entropy_weight": float(self.entropy_weight),
                "lr": float(self.lr), "batch_size": int(self.batch_size),
                "iterations": int(self.iterations), "precision": self.precision,
                "compile": bool(self.compile), "checkpoint_interval": int(self.checkpoint_interval),
                "log_interval": int(self.log_interval), "sample_interval": int(self.sample_interval),
                "num_samples": int(self.num_samples)}

    # -- fit -------------------------------------------------------------------------------
    def _fit(self, train: SliceSet, ctx: Context) -> None:
        self.__dict__.pop("network_", None)
        cfg = self.training_config(tuple(train.images.shape[2:]))
        net_cfg = network_config(cfg)
        ctx.log.info("MemAE: training on %d slices for %d iterations (N=%d, λ=%s, %s addressing)",
                     len(train), cfg["iterations"], cfg["memory_size"],
                     "1/N" if net_cfg["shrink_threshold"] is None else net_cfg["shrink_threshold"],
                     cfg["addressing"])
        with work_folder(ctx.workdir, f"memae-{training_digest(cfg)}") as work:
            net = train_memae(train.images, cfg, work, seed=ctx.seed, device=ctx.device,
                              progress=ctx.progress, log=ctx.log)
        self.network_ = net.cpu().eval().requires_grad_(False)

    # -- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        """x (B, 1, H, W) in [-1, 1] -> x̂ (B, 1, H, W) in [-1, 1] on x's device, float32."""
        self.check_fitted()
        size = tuple(self.network_.config()["size"])
        if tuple(x.shape[2:]) != size:
            raise ValueError(f"MemAE was fitted on {size[0]}x{size[1]} slices, got "
                             f"{tuple(x.shape[2:])}")
        dev = torch.device(ctx.device)
        net = self.network_.to(dev).eval()
        out = []
        for start in range(0, x.shape[0], int(self.predict_batch_size)):
            xb = x[start:start + int(self.predict_batch_size)].to(dev, torch.float32)
            out.append(net(xb)[0].float().clamp(-1, 1).to(x.device))
        return torch.cat(out)

    def _predict(self, x: torch.Tensor, ctx: Context) -> Prediction:
        """Maps: the squared residual (x - x̂)² (the base class's native map); extras["score"]
        (B,): its mean over the slice, MemAE's native image-level score (paper §3.5; the
        authors' ``script_testing.py`` averages |x - x̂| instead, the same ranking per pixel)."""
        pred = super()._predict(x, ctx)
        pred.extras["score"] = pred.maps.mean(dim=(1, 2))
        return pred

    # -- state -----------------------------------------------------------------------------
    def _state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"network.{k}": v for k, v in self.network_.state_dict().items()}
        state["network_config"] = json_tensor(self.network_.config())
        return state

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "network_config" not in state:
            raise KeyError(f"MemAE state: no 'network_config' entry (keys: {sorted(state)[:5]}...); "
                           "is this a MemAE state_dict()?")
        with torch.random.fork_rng(devices=[]):   # the constructor's init draws are overwritten
            net = MemAENet(**tensor_json(state["network_config"]))
        weights = {k[len("network."):]: v for k, v in state.items() if k.startswith("network.")}
        net.load_state_dict(weights, strict=True)
        self.network_ = net.eval().requires_grad_(False)
