"""PaDiM (Defard et al., "PaDiM: a Patch Distribution Modeling Framework", ICPR 2021).

fit      embeddings = the backbone layers aligned on the first layer's grid (VGG16 blocks
         3-5 → 1280 channels on 40x32 at 160x128, paper §3.2), reduced to a random subset of
         ``n_features`` channels drawn once at fit time (PaDiM §3.2, "random dimensionality
         reduction") and saved; one Gaussian per grid position (:mod:`.gaussian`, Eq. 1).
predict  Mahalanobis distance per position (Eq. 2), upsampled bilinearly to H x W and smoothed
         with a Gaussian of sigma 4; image score = max of the map.

Storage at 160x128: 1280 positions x d x d x 4 bytes for the inverse covariances
(d = 100: 51 MB; d = 550: 1.55 GB) plus 1280 x d x 4 for the means.
"""
from __future__ import annotations

from typing import Sequence

import torch

from adbench import Context, Detector, Prediction, SliceSet
from adbench.data.sampling import index_batches, spread_subset
from adbench.nn.extractor import Backbone, check_extractor_state, extractor_state, make_extractor
from adbench.params import Fraction, NonNegativeFloat, PositiveInt
from adbench.nn.gaussian import GaussianAccumulator, mahalanobis
from adbench.nn.maps import grid_to_map

__all__ = ["PaDiM"]


class PaDiM(Detector):
    """PaDiM on a frozen backbone (VGG16 blocks 3-5 by default, as paper §3.2).

    backbone     the frozen feature extractor: "vgg16" (paper §3.2) | "resnet18" |
                 "wide_resnet50_2" | "timm/<model>" (e.g. "timm/wide_resnet50_2" with layers
                 ["layer1", "layer2", "layer3"], as the PaDiM paper's WRN-50).
    layers       the backbone's layers whose features are used (VGG16: "block1".."block5";
                 torchvision ResNets and timm: their module names, e.g. "layer2").
    weights      the backbone's weights: "imagenet" | path of a state dict | "random".
    batch_size   slices per forward pass.
    n_features   d, size of the random channel subset (100 for VGG16's 1280 channels; the
                 PaDiM paper used 100 for ResNet18 and 550 for WideResNet-50); None = all.
    eps          ridge added to every covariance (PaDiM: 0.01).
    shrinkage    a in [0, 1]: Sigma ← (1 - a) Sigma + a tr(Sigma)/d I before the ridge (0: off).
    sigma        Gaussian smoothing of the map, pixels (0 disables).
    max_train_slices  fit on at most this many training slices, evenly spread (None: all).
    """

    def __init__(self, backbone: Backbone = "vgg16",
                 layers: Sequence[str] = ("block3", "block4", "block5"),
                 weights: str = "imagenet", batch_size: PositiveInt = 32,
                 n_features: PositiveInt | None = 100, eps: NonNegativeFloat = 0.01,
                 shrinkage: Fraction = 0.0, sigma: NonNegativeFloat = 4.0,
                 max_train_slices: PositiveInt | None = None):
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.batch_size = batch_size
        self.n_features = n_features
        self.eps = eps
        self.shrinkage = shrinkage
        self.sigma = sigma
        self.max_train_slices = max_train_slices

    def _extractor(self, device: str):
        ext = getattr(self, "_ext", None)
        if ext is None:
            ext = make_extractor(self.backbone, self.layers, self.weights, self.extractor_seed_,
                                 device)
            self._ext = ext
            self.weights_info_ = dict(ext.weights_info)
        return ext.to(device)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, device: str = "cpu") -> torch.Tensor:
        """Selected embedding channels: (B, 1, H, W) → (B, P, d) with P = h * w, on ``device``."""
        f = self._extractor(device).aligned(x.to(device, torch.float32))
        f = f.index_select(1, self.channel_index_.to(f.device))
        return f.flatten(2).transpose(1, 2)

    def _fit(self, train: SliceSet, ctx: Context) -> None:
        self._ext = None
        self.extractor_seed_ = int(ctx.seed)
        ext = self._extractor(ctx.device)
        train = spread_subset(train, self.max_train_slices)
        total = ext.out_channels
        d = total if self.n_features is None else int(self.n_features)
        if not 1 <= d <= total:
            raise ValueError(f"PaDiM: n_features={self.n_features!r} must be in 1..{total} (the "
                             f"channels of layers {tuple(self.layers)} of {self.backbone}), or None")
        perm = torch.randperm(total, generator=ctx.generator(0))
        self.channel_index_ = perm[:d].sort().values
        with torch.no_grad():
            grid = tuple(ext.aligned(train.images[:1].to(ctx.device)).shape[-2:])
        acc = GaussianAccumulator(grid[0] * grid[1], d, device=ctx.device)
        batches = index_batches(len(train), int(self.batch_size))
        if ctx.progress:
            from tqdm import tqdm
            batches = tqdm(batches, total=-(-len(train) // int(self.batch_size)), desc="PaDiM")
        for idx in batches:
            acc.update(self.embed(train.images[idx], ctx.device))
        mean, inv = acc.finalize(float(self.eps), float(self.shrinkage))
        self.mean_, self.inv_cov_ = mean.cpu(), inv.cpu()
        self._device_stats = None
        self.grid_ = grid
        self._extractor_state = extractor_state(ext, self.extractor_seed_)
        ctx.log.info("PaDiM: %d slices, %d positions x %d channels, inverse covariances %.1f MB",
                     acc.n, grid[0] * grid[1], d, self.inv_cov_.numel() * 4 / 2**20)

    @torch.no_grad()
    def distance_grid(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Mahalanobis distance per grid position: (B, 1, H, W) → (B, h, w) (Eq. 2)."""
        stats = getattr(self, "_device_stats", None)
        if stats is None or stats[0].device != torch.device(ctx.device):
            stats = (self.mean_.to(ctx.device), self.inv_cov_.to(ctx.device))
            self._device_stats = stats
        out = [mahalanobis(self.embed(x[idx], ctx.device), *stats)
               for idx in index_batches(x.shape[0], int(self.batch_size))]
        return torch.cat(out).view(x.shape[0], *self.grid_)

    def _predict(self, x: torch.Tensor, ctx: Context) -> Prediction:
        maps = grid_to_map(self.distance_grid(x, ctx), tuple(x.shape[-2:]),
                           float(self.sigma)).to(x.device)
        return Prediction(maps=maps, extras={"score": maps.flatten(1).amax(1)})

    def _state_dict(self) -> dict[str, torch.Tensor]:
        return {"channel_index": self.channel_index_, "mean": self.mean_,
                "inv_cov": self.inv_cov_, "grid": torch.tensor(self.grid_, dtype=torch.int64),
                **self._extractor_state}

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        need = {"channel_index", "mean", "inv_cov", "grid", "extractor.seed",
                "extractor.fingerprint"}
        if need - set(state):
            raise KeyError(f"PaDiM.load_state_dict: missing {sorted(need - set(state))}; got "
                           f"{sorted(state)}. Was this state saved by PaDiM?")
        self._ext = None
        self._device_stats = None
        self.channel_index_ = state["channel_index"].long().cpu()
        self.mean_ = state["mean"].float().cpu()
        self.inv_cov_ = state["inv_cov"].float().cpu()
        self.grid_ = tuple(int(v) for v in state["grid"])
        self.extractor_seed_ = int(state["extractor.seed"])
        saved = {k: v for k, v in state.items() if k.startswith("extractor.")}
        check_extractor_state(self._extractor("cpu"), saved, "PaDiM", self.weights)
        self._extractor_state = saved  # saved again as loaded
