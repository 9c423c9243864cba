"""The f-AnoGAN detector: fit = WGAN-GP then izi_f encoder, reconstruct = G(E(x)).

Schlegl, Seeböck, Waldstein, Langs, Schmidt-Erfurth, "f-AnoGAN: Fast unsupervised anomaly
detection with generative adversarial networks", Medical Image Analysis 54 (2019) 30-44;
the authors' code is github.com/tSchlegl/f-AnoGAN (``wgangp_64x64.py``, ``z_encoding_izif.py``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch

from adbench.data.volume import SliceSet
from adbench.detector import Context, ReconstructionDetector
from adbench.io import json_tensor, tensor_json
from adbench.params import NonNegativeFloat, PositiveFloat, PositiveInt, Range
from adbench.training import config_digest, work_folder

from .networks import build_encoder, build_gan, izif_residuals, network_config
from .training import ENCODER_KEYS, GAN_KEYS, LOG_KEYS, MUTABLE, train_fanogan

__all__ = ["FAnoGAN"]

_PREFIXES = {"generator_": "generator.", "critic_": "critic.", "encoder_": "encoder."}


class FAnoGAN(ReconstructionDetector):
    """f-AnoGAN on single-channel slices (160 x 128 here, not padded to a square).

    Fit trains a WGAN-GP (G: z -> x, critic D) on healthy slices, then the izi_f encoder
    E: x -> z with G and D frozen (see :mod:`.training`). ``reconstruct(x) = G(E(x))``. The
    runner scores reconstructions with the shared A_per by default; with
    ``runner.localisation=native`` the map is f-AnoGAN's own, the pixel residual
    (x - G(E(x)))² (the base class's squared residual), and ``extras["score"]`` (B,) is the
    image score A(x) = A_R(x) + κ A_D(x) (Eq. 8/9; also ``score_residual`` A_R and
    ``score_feature`` A_D). Higher = more anomalous, as for every detector.

    Defaults are the paper's settings as the authors' code sets them (``wgangp_64x64.py``:
    W; ``z_encoding_izif.py``: Z), adapted to 160 x 128 where the paper worked on 64 x 64:

    latent_dim           128, length of z ~ N(0, I) (W, Z: ZDIM = 128; RAND_SAMPLING 'normal')
    base, channel_max    64 channels after the first level, doubling up to 512 (W: DIM = 64,
                         up to 8 DIM); the same widths for G, D and E
    batch_size           64 in both stages (W, Z: BATCH_SIZE = 64)
    gan_epochs           7 passes over the training slices, counted in critic steps of one
                         batch each (W: TRAIN_EPOCHS = 7, ``iteration`` counts critic steps)
    gan_iterations       critic steps; None: ceil(gan_epochs N / batch_size) for N training
                         slices. Presets set it directly
    n_critic             5 critic steps per generator step (W: CRITIC_ITERS; Gulrajani Alg. 1)
    gp_weight            λ = 10 (W: LAMBDA; Gulrajani Alg. 1)
    lr, betas            Adam 1e-4, (0, 0.9) for G and D (W; Gulrajani Alg. 1)
    encoder_iterations   50,000 encoder steps (Z: ITERS_ENC)
    encoder_optimizer    "rmsprop" (Z: tf.train.RMSPropOptimizer, decay 0.9, eps 1e-10) or
                         "adam" (betas 0.9, 0.999; not the authors' choice)
    encoder_lr           5e-5 (Z: ``train_enc_izi(lr=5e-5)``)
    kappa                κ = 1 weighting the feature residual in the loss (Eq. 7) and the
                         score (Eq. 8/9) (Z: kappa=1.0)
    precision            "fp32" (the authors'); "bf16"/"auto" autocast the trainings
    checkpoint_interval, log_interval, sample_interval, num_samples
                         loop bookkeeping (iterations; fixed slices in the sample grid)
    predict_batch_size   slices per forward pass at predict
    """

    def __init__(self, latent_dim: PositiveInt = 128, base: PositiveInt = 64,
                 channel_max: PositiveInt = 512, batch_size: PositiveInt = 64,
                 gan_epochs: PositiveFloat = 7.0, gan_iterations: PositiveInt | None = None,
                 n_critic: PositiveInt = 5, gp_weight: NonNegativeFloat = 10.0,
                 lr: PositiveFloat = 1e-4,
                 betas: Sequence[Annotated[float, Range(0, 1, hi_open=True)]] = (0.0, 0.9),
                 encoder_iterations: PositiveInt = 50000,
                 encoder_optimizer: Literal["rmsprop", "adam"] = "rmsprop",
                 encoder_lr: PositiveFloat = 5e-5, kappa: NonNegativeFloat = 1.0,
                 precision: Literal["fp32", "bf16", "auto"] = "fp32",
                 checkpoint_interval: PositiveInt = 1000, log_interval: PositiveInt = 100,
                 sample_interval: PositiveInt = 1000, num_samples: PositiveInt = 8,
                 predict_batch_size: PositiveInt = 64):
        self.latent_dim = latent_dim
        self.base = base
        self.channel_max = channel_max
        self.batch_size = batch_size
        self.gan_epochs = gan_epochs
        self.gan_iterations = gan_iterations
        self.n_critic = n_critic
        self.gp_weight = gp_weight
        self.lr = lr
        self.betas = betas
        self.encoder_iterations = encoder_iterations
        self.encoder_optimizer = encoder_optimizer
        self.encoder_lr = encoder_lr
        self.kappa = kappa
        self.precision = precision
        self.checkpoint_interval = checkpoint_interval
        self.log_interval = log_interval
        self.sample_interval = sample_interval
        self.num_samples = num_samples
        self.predict_batch_size = predict_batch_size

    # -- configuration ---------------------------------------------------------------------
    def training_config(self, n_train: int) -> dict:
        """The settings of both trainings for ``n_train`` slices (``gan_iterations``
        resolved from ``gan_epochs`` when None)."""
        if len(self.betas) != 2:
            raise ValueError(f"f-AnoGAN betas={list(self.betas)!r}: expected two Adam betas "
                             "(paper: [0.0, 0.9])")
        iters = self.gan_iterations
        if iters is None:
            iters = max(1, math.ceil(float(self.gan_epochs) * int(n_train) / int(self.batch_size)))
        keys = dict.fromkeys(GAN_KEYS + ENCODER_KEYS + LOG_KEYS)
        cfg = {k: getattr(self, k) for k in keys if k != "gan_iterations"}
        cfg.update(gan_iterations=int(iters), gan_epochs=float(self.gan_epochs),
                   betas=[float(b) for b in self.betas])
        return cfg

    # -- fit -------------------------------------------------------------------------------
    def _fit(self, train: SliceSet, ctx: Context) -> None:
        images = train.images
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"f-AnoGAN.fit expects single-channel slices (N, 1, H, W), got "
                             f"{tuple(images.shape)}")
        try:
            net_cfg = network_config(tuple(images.shape[2:]), self.latent_dim, self.base,
                                     self.channel_max)
        except ValueError as exc:
            raise ValueError(f"f-AnoGAN: training slices of {tuple(images.shape[2:])}: "
                             f"{exc}") from None
        cfg = self.training_config(len(train))
        name = f"fanogan-{config_digest({**cfg, 'network': net_cfg}, MUTABLE)}"
        ctx.log.info("f-AnoGAN: %d critic steps, then %d encoder steps, on %d slices",
                     cfg["gan_iterations"], cfg["encoder_iterations"], len(train))
        with work_folder(ctx.workdir, name) as work:
            G, D, E = train_fanogan(images, cfg, net_cfg, work, seed=ctx.seed, device=ctx.device,
                                    progress=ctx.progress, log=ctx.log)
        self.generator_, self.critic_, self.encoder_ = G, D, E
        self.network_config_ = net_cfg

    # -- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def _reconstruct_and_score(self, x: torch.Tensor, ctx: Context):
        """(G(E(x)) (B, 1, H, W) on x's device, {"score", "score_residual", "score_feature"}
        each (B,) on the CPU), in batches of ``predict_batch_size`` on ``ctx.device``."""
        self.check_fitted()
        dev = torch.device(ctx.device)
        G, D, E = (getattr(self, k).to(dev).eval() for k in _PREFIXES)
        recs, a_rs, a_ds = [], [], []
        for start in range(0, x.shape[0], int(self.predict_batch_size)):
            xb = x[start:start + int(self.predict_batch_size)].to(dev, torch.float32)
            rec, a_r, a_d = izif_residuals(G, D, E, xb)
            recs.append(rec.clamp(-1, 1).to(x.device))
            a_rs.append(a_r.float().cpu())
            a_ds.append(a_d.float().cpu())
        a_r, a_d = torch.cat(a_rs), torch.cat(a_ds)
        return torch.cat(recs), {"score": a_r + float(self.kappa) * a_d,
                                 "score_residual": a_r, "score_feature": a_d}

    def reconstruct(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        """x (B, 1, H, W) in [-1, 1] -> G(E(x)) (B, 1, H, W) in [-1, 1]."""
        return self._reconstruct_and_score(x, ctx)[0]

    def _reconstruct_with_extras(self, x: torch.Tensor, ctx: Context):
        """G(E(x)) and the native image scores (one pass). The base class's map, the squared
        pixel residual, is f-AnoGAN's own localisation (Schlegl et al. 2019, Fig. 1)."""
        return self._reconstruct_and_score(x, ctx)

    # -- state -----------------------------------------------------------------------------
    def _state_dict(self) -> dict[str, torch.Tensor]:
        state = {"network_config_json": json_tensor(self.network_config_)}
        for attr, prefix in _PREFIXES.items():
            state.update({prefix + k: v for k, v in getattr(self, attr).state_dict().items()})
        return state

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "network_config_json" not in state:
            raise KeyError("f-AnoGAN state: no 'network_config_json' entry; expected the "
                           "state_dict() of a fitted FAnoGAN")
        net_cfg = tensor_json(state["network_config_json"])
        G, D = build_gan(net_cfg, seed=0)       # initial weights are overwritten below
        modules = {"generator_": G, "critic_": D, "encoder_": build_encoder(net_cfg, seed=0)}
        for attr, m in modules.items():
            prefix = _PREFIXES[attr]
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                m.load_state_dict(sub, strict=True)
            except RuntimeError as exc:
                raise KeyError(f"f-AnoGAN state: entries '{prefix}*' do not fit the network "
                               f"config {net_cfg}: {exc}") from None
            setattr(self, attr, m.eval().requires_grad_(False))
        self.network_config_ = net_cfg
