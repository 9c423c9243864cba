"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

fit      locally aware patch features of the healthy training slices (§3.1) → greedy coreset
         memory bank M (§3.2, see :mod:`.memory_bank` for the memory bound).
predict  s*(p) = min_{m in M} ||p - m||_2 for every test patch p (Eq. 6), the patch grid
         (40x32 for VGG16 block3 at 160x128) upsampled bilinearly to H x W and smoothed with
         a Gaussian of sigma 4 (§3.3); image score = max of the map.

Training patches: only patches whose cell lies within ``brain_margin`` cells of the brain are
candidates, plus every patch of one all-background slice (background = -1). Background is
constant, so its patches are near-duplicates: keeping them all would spend coreset slots and
selection time on one point, while the all-background slice gives the coreset the
background appearance (including the zero-padding border effects) to pick from.
"""
from __future__ import annotations

from typing import Annotated, Literal, Sequence

import torch

from adbench import Context, Detector, Prediction, SliceSet
from adbench.data.sampling import index_batches, spread_subset
from adbench.methods.patchcore.knn import KNN_BACKENDS, nearest_distances
from adbench.methods.patchcore.memory_bank import build_memory_bank
from adbench.methods.patchcore.patch_features import keep_mask, locally_aware
from adbench.nn.extractor import Backbone, check_extractor_state, extractor_state, make_extractor
from adbench.params import NonNegativeFloat, NonNegativeInt, PositiveInt, Range
from adbench.nn.maps import grid_to_map

__all__ = ["PatchCore"]


class PatchCore(Detector):
    """PatchCore on a frozen backbone (VGG16 blocks 3-5 by default, as paper §3.2).

    backbone         the frozen feature extractor: "vgg16" (paper §3.2) | "resnet18" |
                     "wide_resnet50_2" | "timm/<model>" (e.g. "timm/wide_resnet50_2" with
                     layers ["layer2", "layer3"], PatchCore §4.1).
    layers           the backbone's layers whose features are used (VGG16: "block1".."block5";
                     torchvision ResNets and timm: their module names, e.g. "layer2").
    weights          the backbone's weights: "imagenet" | path of a state dict | "random".
    batch_size       slices per forward pass (fit and predict).
    coreset_ratio    bank size as a fraction of the candidate patches (PatchCore: 0.1 or 0.01).
    max_bank_size    upper bound on the bank size (None: ratio only). The bank takes
                     max_bank_size x D x 4 bytes and each test patch is compared with all of it.
    projection_dim   JL dimension used by the coreset selection (None: exact distances).
    max_pool         bound on the projected candidate pool (see :mod:`.memory_bank`).
    pool_reduction   "random" (seeded sample; CPU-practical) or "greedy" (per-batch coreset)
                     when the candidates exceed max_pool.
    max_cache_mb     host memory for keeping candidate features between the two passes.
    neighbourhood    p of the p x p local aggregation (Eq. 2).
    embed_dim        None: D = sum of layer channels (1280 for VGG16 3-5); else pooled to it.
    brain_margin     cells of background around the brain kept as candidates (None: all).
    sigma            Gaussian smoothing of the map, pixels (0 disables).
    knn              "torch" (exact, tiled, on ctx.device), "faiss" (exact flat L2) or "auto".
    max_train_slices  fit on at most this many training slices, evenly spread (None: all).
    """

    def __init__(self, backbone: Backbone = "vgg16",
                 layers: Sequence[str] = ("block3", "block4", "block5"),
                 weights: str = "imagenet", batch_size: PositiveInt = 32,
                 coreset_ratio: Annotated[float, Range(0, 1, lo_open=True)] = 0.1,
                 max_bank_size: PositiveInt | None = 20_000,
                 projection_dim: PositiveInt | None = 128, max_pool: PositiveInt | None = 200_000,
                 pool_reduction: Literal["random", "greedy"] = "random",
                 max_cache_mb: NonNegativeFloat = 1024, neighbourhood: PositiveInt = 3,
                 embed_dim: PositiveInt | None = None, brain_margin: NonNegativeInt | None = 3,
                 sigma: NonNegativeFloat = 4.0, knn: Literal["torch", "faiss", "auto"] = "torch",
                 max_train_slices: PositiveInt | None = None):
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.batch_size = batch_size
        self.coreset_ratio = coreset_ratio
        self.max_bank_size = max_bank_size
        self.projection_dim = projection_dim
        self.max_pool = max_pool
        self.pool_reduction = pool_reduction
        self.max_cache_mb = max_cache_mb
        self.neighbourhood = neighbourhood
        self.embed_dim = embed_dim
        self.brain_margin = brain_margin
        self.sigma = sigma
        self.knn = knn
        self.max_train_slices = max_train_slices

    # -- features ------------------------------------------------------------------------
    def _extractor(self, device: str, seed: int | None = None):
        ext = getattr(self, "_ext", None)
        if ext is None:
            ext = make_extractor(self.backbone, self.layers, self.weights,
                                 self.extractor_seed_ if seed is None else seed, device)
            self._ext = ext
            self.weights_info_ = dict(ext.weights_info)
        return ext.to(device)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, device: str = "cpu") -> torch.Tensor:
        """Locally aware patch features: (B, 1, H, W) → (B, D, h, w) on ``device``."""
        ext = self._extractor(device)
        feats = ext(x.to(device, torch.float32))
        return locally_aware([feats[n] for n in ext.layers], int(self.neighbourhood),
                             self.embed_dim)

    # -- Detector ------------------------------------------------------------------------
    def _fit(self, train: SliceSet, ctx: Context) -> None:
        if self.knn not in KNN_BACKENDS:
            raise ValueError(f"PatchCore: knn={self.knn!r} is not one of {KNN_BACKENDS}")
        self._ext = None
        self._bank_cache = None
        self.extractor_seed_ = int(ctx.seed)
        ext = self._extractor(ctx.device)
        train = spread_subset(train, self.max_train_slices)
        # One all-background slice (index N) stands in for the dropped background patches.
        background = torch.full_like(train.images[:1], -1.0)
        images = torch.cat([train.images, background])
        with torch.no_grad():
            grid = tuple(self.embed(background, ctx.device).shape[-2:])
        keep = torch.cat([keep_mask(train.brain, grid, self.brain_margin),
                          torch.ones(1, *grid, dtype=torch.bool)])

        def embed_slices(idx: torch.Tensor) -> torch.Tensor:
            return self.embed(images[idx], ctx.device)

        bank, info = build_memory_bank(
            embed_slices, keep, ratio=float(self.coreset_ratio),
            projection_dim=self.projection_dim, max_pool=self.max_pool,
            max_bank=self.max_bank_size, batch_size=int(self.batch_size),
            generator=ctx.generator(0), device=ctx.device,
            max_cache_bytes=int(float(self.max_cache_mb) * 2**20), progress=ctx.progress,
            pool_reduction=self.pool_reduction)
        self.memory_bank_ = bank
        self.grid_ = grid
        self.bank_info_ = info
        self._extractor_state = extractor_state(ext, self.extractor_seed_)
        ctx.log.info("PatchCore: %d candidate patches, pool %d, bank %d x %d (%.1f MB)%s",
                     info["n_patches"], info["n_pool"], bank.shape[0], bank.shape[1],
                     bank.numel() * 4 / 2**20, ", pool reduced per batch" if info["pool_reduced"]
                     else "")

    @torch.no_grad()
    def patch_scores(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Nearest-bank-patch distance of every patch: (B, 1, H, W) → (B, h, w) (Eq. 6)."""
        bank = self._bank_on(ctx.device)
        out = []
        for idx in index_batches(x.shape[0], int(self.batch_size)):
            f = self.embed(x[idx], ctx.device)                        # (b, D, h, w)
            b, d, h, w = f.shape
            q = f.permute(0, 2, 3, 1).reshape(-1, d)
            out.append(nearest_distances(q, bank, backend=self.knn).view(b, h, w))
        return torch.cat(out)

    def _predict(self, x: torch.Tensor, ctx: Context) -> Prediction:
        grid = self.patch_scores(x, ctx)
        maps = grid_to_map(grid, tuple(x.shape[-2:]), float(self.sigma)).to(x.device)
        return Prediction(maps=maps, extras={"score": maps.flatten(1).amax(1)})

    def _bank_on(self, device: str) -> torch.Tensor:
        cached = getattr(self, "_bank_cache", None)
        if cached is None or cached.device != torch.device(device):
            cached = self.memory_bank_.to(device)
            self._bank_cache = cached
        return cached

    # -- state ---------------------------------------------------------------------------
    def _state_dict(self) -> dict[str, torch.Tensor]:
        return {"memory_bank": self.memory_bank_,
                "grid": torch.tensor(self.grid_, dtype=torch.int64),
                **self._extractor_state}

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = {"memory_bank", "grid", "extractor.seed", "extractor.fingerprint"} - set(state)
        if missing:
            raise KeyError(f"PatchCore.load_state_dict: missing {sorted(missing)}; got "
                           f"{sorted(state)}. Was this state saved by PatchCore?")
        self._ext = None
        self._bank_cache = None
        self.memory_bank_ = state["memory_bank"].float().cpu()
        self.grid_ = tuple(int(v) for v in state["grid"])
        self.extractor_seed_ = int(state["extractor.seed"])
        saved = {k: v for k, v in state.items() if k.startswith("extractor.")}
        check_extractor_state(self._extractor("cpu"), saved, "PatchCore", self.weights)
        self._extractor_state = saved  # saved again as loaded
