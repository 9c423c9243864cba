"""RealNet detector: AFS on frozen VGG16 blocks 3-5, feature reconstruction networks, RRS and
a segmentation head trained on synthetic anomalies; the map is the head's own output.

RealNet is a hybrid: its map is the anomaly probability of its segmentation head at the slice
size (160 x 128), not the shared perceptual score A_per (it has no image reconstruction), so
the runner records ``localisation: native`` for it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F

from adbench.data.sampling import spread_subset
from adbench.data.volume import SliceSet
from adbench.detector import Context, Detector, Prediction
from adbench.errors import ConfigError
from adbench.io import json_tensor, tensor_json
from adbench.nn.extractor import Backbone, check_extractor_state, extractor_state, make_extractor
from adbench.params import NonNegativeFloat, PositiveFloat, PositiveInt, Range, signature_defaults
from adbench.training import epoch_iterations, work_folder

from .anomalies import AnomalySource
from .networks import RealNetModel
from .training import indices_digest, run_afs, train_realnet, training_digest

__all__ = ["RealNet"]

_PREFIX = "model."
#: healthy slices (evenly spread over the training set) that the shared "healthy" texture draws from
POOL_SLICES = 256


class RealNet(Detector):
    """RealNet (Zhang, Xu and Zhou, "RealNet: A Feature Selection Network with Realistic
    Synthetic Anomaly for Anomaly Detection", CVPR 2024; code github.com/cnulab/RealNet).
    "code" below is its ``experiments/*/realnet.yaml`` and ``models/``.

    backbone, layers   the frozen feature extractor: VGG16 blocks 3-5, as the SCRPS paper ran
                       RealNet (the code uses WideResNet-50 layers 1-4)
    weights            the backbone's weights: "imagenet" | path of a state dict | "random"
    afs_channels       channels AFS keeps per layer (code ``planes``: 256, 512, 512, 256 of
                       WRN-50's 256, 512, 1024, 2048; here 256, 256, 256 of VGG16's 256, 512,
                       512: all of the shallowest layer and half of the deeper ones, the code's
                       ratios for its first and third layers)
    afs_batches        batches of anomalous slices AFS averages over (code ``init_bsn`` 64)
    hidden_ratio, channel_mult, num_res_blocks, attention_mult
                       each reconstruction network (code 0.5, (1, 2, 4), 2, (2, 4))
    rrs_modes, rrs_channels
                       RRS: residual channels kept per sample by spatial max and by spatial
                       mean (code [max, mean] and [256, 256]: k = 512)
    residual_layers    residual blocks of the head (code 2)
    w_seg, w_rec       weights of the segmentation cross-entropy and the feature MSE (code 1, 1)
    lr, beta1, beta2   Adam (code 1e-4, 0.9, 0.999)
    batch_size         slices per iteration (code 16); also the AFS and predict batch
    epochs             length when ``iterations`` is None: epochs x floor(N / batch_size)
                       (code ``max_epoch`` 1000)
    iterations         length in iterations (None: from ``epochs``)
    anomaly_source     "shared": :mod:`adbench.nn.synthesis` (default; SDAS's diffusion model
                       is not available offline) | "folder": pre-generated SDAS slices in
                       ``anomaly_folder``, blended as the code does (see :mod:`.anomalies`)
    anomaly_folder     folder of SDAS images for ``anomaly_source: folder``
    synthesis          the shared synthesis config (:class:`~adbench.nn.synthesis.SynthesisConfig`
                       keys; None = its defaults: p_anomaly 0.5 as the code's
                       ``anomaly_types``); with "folder" its Perlin-mask keys and p_anomaly apply
    score_pool         image score = max of the map average-pooled over this many pixels,
                       stride 1 (code evaluator ``avgpool_size`` [16, 16])
    precision, checkpoint_interval, log_interval, sample_interval, num_samples
                       the shared loop's settings
    """

    def __init__(self, backbone: Backbone = "vgg16",
                 layers: Sequence[str] = ("block3", "block4", "block5"),
                 weights: str = "imagenet",
                 afs_channels: Sequence[PositiveInt] = (256, 256, 256),
                 afs_batches: PositiveInt = 64,
                 hidden_ratio: PositiveFloat = 0.5,
                 channel_mult: Sequence[PositiveInt] = (1, 2, 4),
                 num_res_blocks: PositiveInt = 2,
                 attention_mult: Sequence[PositiveInt] = (2, 4),
                 rrs_modes: Sequence[Literal["max", "mean"]] = ("max", "mean"),
                 rrs_channels: Sequence[PositiveInt] = (256, 256),
                 residual_layers: PositiveInt = 2,
                 w_seg: NonNegativeFloat = 1.0, w_rec: NonNegativeFloat = 1.0,
                 lr: PositiveFloat = 1e-4,
                 beta1: Annotated[float, Range(0, 1, hi_open=True)] = 0.9,
                 beta2: Annotated[float, Range(0, 1, hi_open=True)] = 0.999,
                 batch_size: PositiveInt = 16, epochs: PositiveInt = 1000,
                 iterations: PositiveInt | None = None,
                 anomaly_source: Literal["shared", "folder"] = "shared",
                 anomaly_folder: str | None = None,
                 synthesis: dict | None = None,
                 score_pool: PositiveInt = 16,
                 precision: Literal["auto", "fp32", "bf16"] = "auto",
                 checkpoint_interval: PositiveInt = 1000, log_interval: PositiveInt = 50,
                 sample_interval: PositiveInt = 1000, num_samples: PositiveInt = 4):
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.afs_channels = afs_channels
        self.afs_batches = afs_batches
        self.hidden_ratio = hidden_ratio
        self.channel_mult = channel_mult
        self.num_res_blocks = num_res_blocks
        self.attention_mult = attention_mult
        self.rrs_modes = rrs_modes
        self.rrs_channels = rrs_channels
        self.residual_layers = residual_layers
        self.w_seg = w_seg
        self.w_rec = w_rec
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.batch_size = batch_size
        self.epochs = epochs
        self.iterations = iterations
        self.anomaly_source = anomaly_source
        self.anomaly_folder = anomaly_folder
        self.synthesis = synthesis
        self.score_pool = score_pool
        self.precision = precision
        self.checkpoint_interval = checkpoint_interval
        self.log_interval = log_interval
        self.sample_interval = sample_interval
        self.num_samples = num_samples

    # -- configuration ---------------------------------------------------------------------
    @classmethod
    def validate_config(cls, cfg: dict) -> None:
        """Cross-key checks of a resolved config, before anything is written (also run by
        ``fit``): ``synthesis`` keys, the SDAS folder of ``anomaly_source: folder``, one
        ``afs_channels`` entry per layer, as many ``rrs_channels`` as ``rrs_modes``.
        Raises :class:`ConfigError` naming the key."""
        from adbench.nn.synthesis import SynthesisConfig

        from .anomalies import folder_files

        d = {**signature_defaults(cls, "realnet"), **cfg}
        SynthesisConfig.from_dict(d["synthesis"])
        if d["anomaly_source"] == "folder":
            folder_files(d["anomaly_folder"])
        if len(d["afs_channels"]) != len(d["layers"]):
            raise ConfigError(f"realnet: afs_channels {list(d['afs_channels'])} has "
                              f"{len(d['afs_channels'])} entries for {len(d['layers'])} layers "
                              f"{list(d['layers'])}; give one count per layer")
        if len(d["rrs_modes"]) != len(d["rrs_channels"]):
            raise ConfigError(f"realnet: rrs_modes {list(d['rrs_modes'])} and rrs_channels "
                              f"{list(d['rrs_channels'])} must have the same length")

    def n_iterations(self, n_train: int) -> int:
        """``iterations``, or ``epochs`` x floor(N / batch_size) (at least one per epoch)."""
        return epoch_iterations(self.iterations, self.epochs, n_train, self.batch_size)

    def network_config(self, channels: dict[str, int]) -> dict:
        """The JSON config of :class:`RealNetModel` for the backbone's ``channels``."""
        layers = tuple(self.layers)
        self.validate_config(self.get_params())
        return {"layers": list(layers), "channels": [int(channels[n]) for n in layers],
                "afs_channels": [int(k) for k in self.afs_channels],
                "hidden_ratio": float(self.hidden_ratio),
                "channel_mult": [int(m) for m in self.channel_mult],
                "num_res_blocks": int(self.num_res_blocks),
                "attention_mult": [int(a) for a in self.attention_mult],
                "rrs_modes": list(self.rrs_modes), "rrs_channels": [int(k) for k in self.rrs_channels],
                "residual_layers": int(self.residual_layers)}

    def make_source(self, pool: torch.Tensor | None = None) -> AnomalySource:
        from adbench.nn.synthesis import SynthesisConfig

        return AnomalySource(self.anomaly_source, SynthesisConfig.from_dict(self.synthesis),
                             pool=pool, folder=self.anomaly_folder)

    def training_config(self, images: torch.Tensor, net_cfg: dict, afs_digest: str) -> dict:
        """Everything that defines the training of ``images`` (N, 1, H, W): stored in the
        checkpoint; its digest names the work folder."""
        n, _, h, w = images.shape
        keys = ("backbone", "weights", "afs_batches", "w_seg", "w_rec", "lr", "beta1", "beta2",
                "batch_size", "anomaly_source", "anomaly_folder", "precision",
                "checkpoint_interval", "log_interval", "sample_interval", "num_samples")
        return {**{k: getattr(self, k) for k in keys}, "network": net_cfg,
                "synthesis": self.make_source().config.to_dict(), "afs_digest": afs_digest,
                "iterations": self.n_iterations(n), "image_shape": [int(h), int(w)],
                "n_train": int(n)}

    def _extractor(self, device: str):
        ext = getattr(self, "_ext", None)
        if ext is None:
            ext = make_extractor(self.backbone, self.layers, self.weights, self.extractor_seed_,
                                 device)
            self._ext = ext
            self.weights_info_ = dict(ext.weights_info)
        return ext.to(device)

    # -- fit -------------------------------------------------------------------------------
    def _fit(self, train: SliceSet, ctx: Context) -> None:
        images = train.images.float()
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"RealNet.fit: training images of shape {tuple(images.shape)}, "
                             "expected (N, 1, H, W)")
        self.validate_config(self.get_params())    # before the backbone is built
        brain = train.brain.bool()[:, None]
        self._ext, self.extractor_seed_ = None, int(ctx.seed)
        ext = self._extractor(ctx.device)
        net_cfg = self.network_config(ext.channels)
        pool = spread_subset(train, POOL_SLICES).images.float()
        source = self.make_source(pool)
        source.check(tuple(images.shape[-2:]))
        with torch.random.fork_rng(devices=[]):     # the networks' init, from the seed alone
            torch.manual_seed(int(ctx.seed))
            model = RealNetModel(net_cfg)
        keep = dict(zip(net_cfg["layers"], net_cfg["afs_channels"]))
        ctx.log.info("RealNet: AFS over %d batches of %d anomalous slices", self.afs_batches,
                     self.batch_size)
        indices = run_afs(ext, source, images, brain, keep, batches=int(self.afs_batches),
                          batch_size=int(self.batch_size), seed=int(ctx.seed),
                          device=torch.device(ctx.device))
        model.set_indices(indices)
        cfg = self.training_config(images, net_cfg, indices_digest(indices))
        ctx.log.info("RealNet: %d iterations of batch %d on %d training slices",
                     cfg["iterations"], cfg["batch_size"], len(train))
        with work_folder(ctx.workdir, f"realnet-{training_digest(cfg)}") as work:
            model = train_realnet(model, ext, source, images, brain, cfg, work,
                                  device=ctx.device, seed=int(ctx.seed), progress=ctx.progress,
                                  log=ctx.log)
        self.model_ = model
        self._extractor_state = extractor_state(ext, self.extractor_seed_)

    # -- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def probability(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Anomaly probability, softmax channel 1 of the head: (B, 1, H, W) -> (B, H, W), in
        chunks of ``batch_size``, eval mode, on ``ctx.device``; returned on x's device."""
        self.check_fitted()
        ext = self._extractor(ctx.device)
        model = self.model_.to(torch.device(ctx.device)).eval()
        out = []
        for start in range(0, x.shape[0], int(self.batch_size)):
            xb = x[start:start + int(self.batch_size)].to(ctx.device, torch.float32)
            logits = model(ext(xb), tuple(xb.shape[-2:]))[2]
            out.append(logits.float().softmax(dim=1)[:, 1].to(x.device))
        return torch.cat(out)

    def _predict(self, x: torch.Tensor, ctx: Context) -> Prediction:
        maps = self.probability(x, ctx)
        k = min(int(self.score_pool), maps.shape[-2], maps.shape[-1])
        score = F.avg_pool2d(maps[:, None], k, stride=1).flatten(1).amax(1)
        return Prediction(maps=maps, extras={"score": score})

    # -- state -----------------------------------------------------------------------------
    def _state_dict(self) -> dict[str, torch.Tensor]:
        state = {_PREFIX + k: v for k, v in self.model_.state_dict().items()}
        state["network_json"] = json_tensor(self.model_.cfg)
        return {**state, **self._extractor_state}

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        need = {"network_json", "extractor.seed", "extractor.fingerprint"}
        if need - set(state):
            raise KeyError(f"RealNet.load_state_dict: missing {sorted(need - set(state))}; "
                           "expected the state_dict() of a fitted RealNet")
        cfg = tensor_json(state["network_json"])
        with torch.random.fork_rng(devices=[]):   # construction draws; the weights are replaced
            model = RealNetModel(cfg)
        model.load_state_dict({k[len(_PREFIX):]: v for k, v in state.items()
                               if k.startswith(_PREFIX)})
        self.model_ = model.eval().requires_grad_(False)
        self._ext = None
        self.extractor_seed_ = int(state["extractor.seed"])
        saved = {k: v for k, v in state.items() if k.startswith("extractor.")}
        check_extractor_state(self._extractor("cpu"), saved, "RealNet", self.weights)
        self._extractor_state = saved
