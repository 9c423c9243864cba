"""GANomaly detector: train G = (G_E, G_D, E) and D adversarially on healthy slices, then
reconstruct x̂ = G_D(G_E(x)) and score the latent distance of paper Eq. 5.

The runner localises with the shared perceptual score A_per of (x, x̂) by default. With
``runner.localisation=native`` the map is the per-pixel L1 residual |x - x̂| (the pixel
term of the paper's contextual loss, Eq. 2: GANomaly itself scores whole images only) and
``extras["score"]`` the paper's image-level score A(x) (Eq. 5).
"""
from __future__ import annotations

from typing import Annotated, Literal

import torch

from adbench.data.volume import SliceSet
from adbench.detector import Context, Prediction, ReconstructionDetector
from adbench.io import json_tensor, tensor_json
from adbench.params import NonNegativeFloat, PositiveFloat, PositiveInt, Range
from adbench.training import epoch_iterations, work_folder

from .losses import latent_score
from .networks import LEVELS, GANomalyGenerator, network_config
from .training import train_ganomaly, training_digest

__all__ = ["GANomaly"]

_PREFIX = "generator."


class GANomaly(ReconstructionDetector):
    """GANomaly (Akçay, Atapour-Abarghouei and Breckon, ACCV 2018; code
    github.com/samet-akcay/ganomaly). Defaults are the authors' settings; "code" is their
    ``options.py`` / ``lib/model.py``:

    nz                   latent length (100, code ``--nz``)
    ngf, ndf             channels after the first level of G's and D's networks (64, code
                         ``--ngf``/``--ndf``)
    channel_max          cap on the channels (1024: none over five levels, as the code's
                         pyramid, which doubles until its 4 x 4 grid)
    w_adv, w_con, w_enc  weights of Eq. 4 (1, 50, 1: code ``--w_adv``/``--w_con``/``--w_enc``;
                         the paper's experiments weight the contextual loss 50 too)
    lr, beta1, beta2     Adam for G and D (2e-4, 0.5, 0.999: code ``--lr``, ``--beta1``, and
                         its ``optim.Adam(..., betas=(beta1, 0.999))``)
    batch_size           slices per iteration, global over ranks (64, code ``--batchsize``);
                         also the predict chunk
    epochs               length when ``iterations`` is None: epochs x floor(N / batch_size)
                         iterations on N training slices (15, code ``--niter``; the code drops
                         the last incomplete batch)
    iterations           length in iterations (None: from ``epochs``)
    d_reinit_threshold   re-initialise D when its loss falls below this (1e-5, code
                         ``optimize_params``; 0: never)
    precision            training precision ("auto": bf16 autocast on CUDA, fp32 on the CPU)
    checkpoint_interval, log_interval, sample_interval   iterations between checkpoints,
                         loss-log records and sample grids (the loop's; not the code's)
    num_samples          fixed training slices whose reconstructions form ``samples_*.png``

    Differences from the code, all for this benchmark: 160 x 128 single-channel slices through
    five levels to a 5 x 4 grid instead of square 32 x 32 three-channel images; prediction in
    eval mode (batch-norm running statistics; the code's ``test()`` leaves the networks in
    train mode, so a score depends on its batch); no per-test-set rescaling of the score;
    uniform batches with replacement (the shared loop) instead of epochs of shuffled batches;
    no ``--extralayers`` (its default is 0).
    """

    def __init__(self, nz: PositiveInt = 100, ngf: PositiveInt = 64, ndf: PositiveInt = 64,
                 channel_max: PositiveInt = 1024, w_adv: NonNegativeFloat = 1.0,
                 w_con: NonNegativeFloat = 50.0, w_enc: NonNegativeFloat = 1.0,
                 lr: PositiveFloat = 2e-4, beta1: Annotated[float, Range(0, 1, hi_open=True)] = 0.5,
                 beta2: Annotated[float, Range(0, 1, hi_open=True)] = 0.999,
                 batch_size: PositiveInt = 64, epochs: PositiveInt = 15,
                 iterations: PositiveInt | None = None,
                 d_reinit_threshold: NonNegativeFloat = 1e-5,
                 precision: Literal["auto", "fp32", "bf16"] = "auto",
                 checkpoint_interval: PositiveInt = 500, log_interval: PositiveInt = 50,
                 sample_interval: PositiveInt = 500, num_samples: PositiveInt = 8):
        self.nz = nz
        self.ngf = ngf
        self.ndf = ndf
        self.channel_max = channel_max
        self.w_adv = w_adv
        self.w_con = w_con
        self.w_enc = w_enc
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.batch_size = batch_size
        self.epochs = epochs
        self.iterations = iterations
        self.d_reinit_threshold = d_reinit_threshold
        self.precision = precision
        self.checkpoint_interval = checkpoint_interval
        self.log_interval = log_interval
        self.sample_interval = sample_interval
        self.num_samples = num_samples

    # -- configuration ---------------------------------------------------------------------
    def n_iterations(self, n_train: int) -> int:
        """``iterations``, or ``epochs`` x floor(N / batch_size) (at least one per epoch)."""
        return epoch_iterations(self.iterations, self.epochs, n_train, self.batch_size)

    def training_config(self, images: torch.Tensor) -> dict:
        """The whole training config for slices ``images`` (N, 1, H, W): stored in the
        checkpoint, its digest names the work folder (a changed recipe starts afresh, a longer
        run resumes a shorter one)."""
        n, _, h, w = images.shape
        keys = ("nz", "ngf", "ndf", "channel_max", "w_adv", "w_con", "w_enc", "lr", "beta1",
                "beta2", "batch_size", "d_reinit_threshold", "precision", "checkpoint_interval",
                "log_interval", "sample_interval", "num_samples")
        return {**{k: getattr(self, k) for k in keys}, "iterations": self.n_iterations(n),
                "image_shape": [int(h), int(w)], "n_train": int(n)}

    # -- fit -------------------------------------------------------------------------------
    def _fit(self, train: SliceSet, ctx: Context) -> None:
        images = train.images
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"GANomaly.fit: training images of shape {tuple(images.shape)}, "
                             "expected (N, 1, H, W)")
        network_config(tuple(images.shape[2:]), self.nz, self.ngf, self.ndf, self.channel_max)
        cfg = self.training_config(images)
        ctx.log.info("GANomaly: %d iterations of batch %d on %d training slices",
                     cfg["iterations"], cfg["batch_size"], len(train))
        with work_folder(ctx.workdir, f"ganomaly-{training_digest(cfg)}") as work:
            G = train_ganomaly(images, cfg, work, device=ctx.device, seed=ctx.seed,
                               progress=ctx.progress, log=ctx.log)
        self.generator_ = G

    # -- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def _forward(self, x: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 1, H, W) -> (x̂ (B, 1, H, W) in [-1, 1], A(x) (B,)), in chunks of batch_size,
        in eval mode on ctx.device; returned on x's device."""
        self.check_fitted()
        G = self.generator_.to(torch.device(ctx.device)).eval()
        size = tuple(G.cfg["size"])
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, *size):
            raise ValueError(f"GANomaly was fitted on (1, {size[0]}, {size[1]}) slices, got "
                             f"x of shape {tuple(x.shape)}")
        recs, scores = [], []
        for start in range(0, x.shape[0], int(self.batch_size)):
            xb = x[start:start + int(self.batch_size)].to(ctx.device, torch.float32)
            x_hat, z, z_hat = G(xb)
            recs.append(x_hat.float().clamp(-1, 1).to(x.device))
            scores.append(latent_score(z, z_hat).to(x.device))
        return torch.cat(recs), torch.cat(scores)

    def reconstruct(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        """x (B, 1, H, W) in [-1, 1] -> x̂ = G_D(G_E(x)) (B, 1, H, W) in [-1, 1]."""
        return self._forward(x, ctx)[0]

    def _reconstruct_with_extras(self, x: torch.Tensor, ctx: Context):
        """x̂ and ``extras["score"]`` = A(x) (B,), paper Eq. 5 (higher = more anomalous)."""
        rec, score = self._forward(x, ctx)
        return rec, {"score": score.float().cpu()}

    def _predict(self, x: torch.Tensor, ctx: Context) -> Prediction:
        """The native map is the L1 residual |x - x̂| (B, H, W) (the runner's default A_per
        replaces it); reconstructions and ``extras["score"]`` as above."""
        pred = super()._predict(x, ctx)
        pred.maps = (x.float() - pred.reconstructions).abs()[:, 0]
        return pred

    # -- state -----------------------------------------------------------------------------
    def _state_dict(self) -> dict[str, torch.Tensor]:
        state = {_PREFIX + k: v for k, v in self.generator_.state_dict().items()}
        state["network_json"] = json_tensor(self.generator_.cfg)
        return state

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "network_json" not in state:
            raise KeyError("GANomaly state: no 'network_json' entry; expected the state_dict() "
                           "of a fitted GANomaly")
        cfg = tensor_json(state["network_json"])
        if int(cfg.get("levels", LEVELS)) != LEVELS:
            raise ValueError(f"GANomaly state: network config {cfg} has levels != {LEVELS}")
        with torch.random.fork_rng(devices=[]):   # construction draws; the weights are replaced
            G = GANomalyGenerator(cfg)
        G.load_state_dict({k[len(_PREFIX):]: v for k, v in state.items() if k.startswith(_PREFIX)})
        self.generator_ = G.eval().requires_grad_(False)

