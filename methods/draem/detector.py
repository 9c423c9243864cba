"""The DRÆM detector: fit trains the reconstructive and discriminative sub-networks on
healthy slices with synthetic anomalies; the map is the discriminative network's softmax
anomaly channel (a hybrid: the runner does not score it with A_per).

Zavrtanik, Kristan and Skočaj, "DRÆM - A discriminatively trained reconstruction embedding
for surface anomaly detection", ICCV 2021; code github.com/VitjanZ/DRAEM.
"""
from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F

from adbench.data.volume import SliceSet
from adbench.detector import Context, Detector, Prediction
from adbench.io import json_tensor, tensor_json
from adbench.nn.synthesis import SynthesisConfig
from adbench.params import NonNegativeFloat, PositiveFloat, PositiveInt, Range
from adbench.training import epoch_iterations, work_folder

from .networks import DiscriminativeNet, ReconstructiveNet, check_size
from .training import train_draem, training_digest

__all__ = ["DRAEM"]

_R, _D = "reconstructive.", "discriminative."


class DRAEM(Detector):
    """DRÆM on single-channel 160 x 128 slices. Defaults are the original's settings
    ("code": the authors' ``train_DRAEM.py`` / ``model_unet.py`` / ``test_DRAEM.py``):

    rec_width            base channels of the reconstructive encoder-decoder (128, code
                         ``ReconstructiveSubNetwork(base_width=128)``)
    disc_width           base channels of the discriminative U-Net (64, code
                         ``DiscriminativeSubNetwork(base_channels=64)``)
    lr                   Adam learning rate for both networks (1e-4, code ``--lr``), x0.2 at
                         80 % and 90 % of training (code ``MultiStepLR``)
    batch_size           slices per iteration (8, code ``--bs``); also the predict chunk
    epochs               length when ``iterations`` is None: epochs x floor(N / batch_size)
                         iterations on N training slices (700, code ``--epochs``)
    iterations           length in iterations (None: from ``epochs``)
    focal_gamma          focal loss gamma (2, code ``FocalLoss``)
    synthesis            pseudo-anomaly settings, a dict of :class:`SynthesisConfig` keys
                         (None: the defaults: p_anomaly 0.5, beta in [0, 0.8], Perlin masks
                         as the code, textures from healthy / procedural / intensity sources;
                         the code's DTD textures need ``{"sources": ["dtd"], "dtd_root": ...}``)
    pool_size            training slices kept as the ``healthy`` texture pool (256)
    score_pool           side of the mean filter over the map for ``extras["score"]``, the
                         image score max(mean-filtered map) (21, code ``test_DRAEM.py``)
    precision            training precision ("auto": bf16 autocast on CUDA, fp32 on CPU)
    checkpoint_interval, log_interval, sample_interval   iterations between checkpoints,
                         loss-log records and sample grids (the loop's)
    num_samples          fixed training slices in ``samples_*.png`` (rows: augmented slice,
                         reconstruction, true mask, predicted map)

    Differences from the original: one grey channel at 160 x 128 (the code: RGB 256 x 256);
    anomalies only inside the brain mask, with textures that exist offline instead of DTD (see
    :mod:`adbench.nn.synthesis`); uniform batches with replacement instead of epochs of
    shuffled batches; SSIM with data range 2 on [-1, 1] (the code's on [0, 1] with range 1:
    the same value).
    """

    def __init__(self, rec_width: PositiveInt = 128, disc_width: PositiveInt = 64,
                 lr: PositiveFloat = 1e-4, batch_size: PositiveInt = 8, epochs: PositiveInt = 700,
                 iterations: PositiveInt | None = None, focal_gamma: NonNegativeFloat = 2.0,
                 synthesis: dict | None = None, pool_size: PositiveInt = 256,
                 score_pool: Annotated[int, Range(1)] = 21,
                 precision: Literal["auto", "fp32", "bf16"] = "auto",
                 checkpoint_interval: PositiveInt = 1000, log_interval: PositiveInt = 100,
                 sample_interval: PositiveInt = 1000, num_samples: PositiveInt = 4):
        self.rec_width = rec_width
        self.disc_width = disc_width
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.iterations = iterations
        self.focal_gamma = focal_gamma
        self.synthesis = synthesis
        self.pool_size = pool_size
        self.score_pool = score_pool
        self.precision = precision
        self.checkpoint_interval = checkpoint_interval
        self.log_interval = log_interval
        self.sample_interval = sample_interval
        self.num_samples = num_samples

    # -- configuration ---------------------------------------------------------------------
    def n_iterations(self, n_train: int) -> int:
        """``iterations``, or ``epochs`` x floor(N / batch_size) (at least one per epoch)."""
        return epoch_iterations(self.iterations, self.epochs, n_train, self.batch_size)

    @classmethod
    def validate_config(cls, cfg: dict) -> None:
        """Before any run folder exists: the ``synthesis`` keys (ConfigError naming the key)."""
        SynthesisConfig.from_dict(cfg.get("synthesis"))

    def training_config(self, images: torch.Tensor) -> dict:
        """The whole training config for ``images`` (N, 1, H, W): stored in the checkpoint;
        its digest names the work folder."""
        n, _, h, w = images.shape
        keys = ("rec_width", "disc_width", "lr", "batch_size", "focal_gamma", "pool_size",
                "precision", "checkpoint_interval", "log_interval", "sample_interval",
                "num_samples")
        return {**{k: getattr(self, k) for k in keys}, "iterations": self.n_iterations(n),
                "synthesis": SynthesisConfig.from_dict(self.synthesis).to_dict(),
                "image_shape": [int(h), int(w)], "n_train": int(n)}

    # -- fit -------------------------------------------------------------------------------
    def _fit(self, train: SliceSet, ctx: Context) -> None:
        images = train.images
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"DRAEM.fit: training images of shape {tuple(images.shape)}, "
                             "expected (N, 1, H, W)")
        check_size(tuple(images.shape[2:]))
        cfg = self.training_config(images)
        ctx.log.info("DRÆM: %d iterations of batch %d on %d training slices",
                     cfg["iterations"], cfg["batch_size"], len(train))
        with work_folder(ctx.workdir, f"draem-{training_digest(cfg)}") as work:
            R, D = train_draem(images, train.brain, cfg, work, device=ctx.device, seed=ctx.seed,
                               progress=ctx.progress, log=ctx.log)
        self.reconstructive_, self.discriminative_ = R, D
        self.size_ = (int(images.shape[2]), int(images.shape[3]))

    # -- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def _predict(self, x: torch.Tensor, ctx: Context) -> Prediction:
        """maps (B, H, W): softmax(D(concat(R(x), x)))[:, 1], the anomaly probability;
        ``extras["score"]`` (B,): max of the map mean-filtered over score_pool x score_pool
        (the code's image score)."""
        if tuple(x.shape[2:]) != self.size_:
            raise ValueError(f"DRÆM was fitted on (1, {self.size_[0]}, {self.size_[1]}) slices, "
                             f"got x of shape {tuple(x.shape)}")
        dev = torch.device(ctx.device)
        R, D = self.reconstructive_.to(dev).eval(), self.discriminative_.to(dev).eval()
        maps, scores = [], []
        k = int(self.score_pool)
        for start in range(0, x.shape[0], int(self.batch_size)):
            xb = x[start:start + int(self.batch_size)].to(dev, torch.float32)
            rec = R(xb)
            prob = torch.softmax(D(torch.cat([rec, xb], dim=1)).float(), dim=1)[:, 1:]
            smooth = F.avg_pool2d(prob, k, stride=1, padding=k // 2, count_include_pad=False) \
                if k > 1 else prob
            maps.append(prob[:, 0].cpu())
            scores.append(smooth.flatten(1).amax(dim=1).cpu())
        return Prediction(maps=torch.cat(maps).float(), extras={"score": torch.cat(scores)})

    # -- state -----------------------------------------------------------------------------
    def _state_dict(self) -> dict[str, torch.Tensor]:
        state = {_R + k: v for k, v in self.reconstructive_.state_dict().items()}
        state.update({_D + k: v for k, v in self.discriminative_.state_dict().items()})
        state["network_json"] = json_tensor({"rec_width": int(self.reconstructive_.out.in_channels),
                                             "disc_width": int(self.discriminative_.out.in_channels),
                                             "size": list(self.size_)})
        return state

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "network_json" not in state:
            raise KeyError("DRÆM state: no 'network_json' entry; expected the state_dict() of "
                           "a fitted DRAEM")
        cfg = tensor_json(state["network_json"])
        with torch.random.fork_rng(devices=[]):   # construction draws; the weights are replaced
            R = ReconstructiveNet(int(cfg["rec_width"]))
            D = DiscriminativeNet(int(cfg["disc_width"]))
        R.load_state_dict({k[len(_R):]: v for k, v in state.items() if k.startswith(_R)})
        D.load_state_dict({k[len(_D):]: v for k, v in state.items() if k.startswith(_D)})
        self.reconstructive_ = R.eval().requires_grad_(False)
        self.discriminative_ = D.eval().requires_grad_(False)
        self.size_ = (int(cfg["size"][0]), int(cfg["size"][1]))
