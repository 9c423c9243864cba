"""SCRPS detector: StyleGAN2 + latent repository + coarse-to-fine retrieval + partial swap.

Paper §2 (Fig. 1): ``fit`` trains StyleGAN2 on the healthy slices (a), inverts a random
fraction of them into the repository M (b); ``reconstruct`` inverts a test slice with the
same procedure, retrieves and fuses its K2 nearest healthy codes, swaps layers [L2, L) of
its code with the fused code and generates the pseudo-healthy image G(s̃, b = 0) (c). The
runner scores (slice, reconstruction) with the shared perceptual score A_per (§2.2).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Literal, Sequence

import torch

from adbench.data.volume import SliceSet
from adbench.detector import Context, ReconstructionDetector
from adbench.io import json_tensor, tensor_json
from adbench.methods.scrps.encoder import (encode, encoder_digest, encoder_from_state,
                                           encoder_state, resolve_encoder_config, train_encoder)
from adbench.methods.scrps.inversion import PRECISIONS, invert, step_stats
from adbench.methods.scrps.repository import Repository, build_repository
from adbench.methods.scrps.retrieval import build_index, retrieve, swap
from adbench.methods.scrps.stylegan2 import (generator_from_state, generator_state, load_generator,
                                             tensor_hash)
from adbench.methods.scrps.stylegan_train import STYLEGAN_PRESETS, config_digest, train_stylegan
from adbench.params import (NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                            Range)
from adbench.training import work_folder


__all__ = ["SCRPS"]


class SCRPS(ReconstructionDetector):
    """StyleGAN-based latent Code Retrieval and Partial Swap (Wei et al., MICCAI 2025).

    Every default is the paper's §3.1 setting:

    stylegan               StyleGAN2 preset of ``STYLEGAN_PRESETS`` ("paper": 12,000 iterations,
                           lr 0.002, ±15° rotations, zero noise)
    stylegan_config        overrides of that preset (dict; None: none)
    generator              path of a trained generator file (``generator.pt`` of
                           ``python -m adbench.methods.scrps.train``, e.g. trained on 8 GPUs);
                           None: train StyleGAN2 in the model cache. Given, no StyleGAN2 is
                           trained and ``stylegan``/``stylegan_config`` are not used; the
                           file's sha256 is part of the model-cache key and the summary
    inversion_steps        Adam steps per slice (2,000)
    inversion_init         start of the inversion: "mean" (the paper: the generator's mean w) or
                           "encoder" (W+ codes of an encoder trained after the StyleGAN2 on the
                           generator's samples and the healthy slices, see encoder.py); the
                           repository and the test slices always use the same start
    encoder_config         overrides of the encoder's ENCODER_DEFAULTS (dict: width,
                           max_channels, head_channels, iterations, batch_size, lr,
                           latent_weight, synthetic_weight, real_weight, mixing_prob, ...);
                           used with inversion_init="encoder"; None: the defaults
    inversion_tol          stopping rule: a slice stops when its loss improved by less than this
                           relative tolerance over inversion_window steps (0 = off, the paper)
    inversion_window       steps of the stopping rule's window (50)
    inversion_lr           Adam learning rate of the inversion (0.01)
    mse_weight             λ_mse of Eq. 1 (10)
    perceptual_weight      weight of L_percept in Eq. 1 (1; 0 = MSE-only inversion without VGG16,
                           a cheap non-paper setting for CPU presets)
    perceptual_mode        "lpips" (normalised VGG16 features with the lpips heads, ref. [31])
                           or "eq2" (Eq. 2 literally: raw features, ||·||² / N_j)
    perceptual_blocks      VGG16 blocks of the inversion loss (Eq. 2: all five)
    inversion_batch_size   slices optimised together (batch-independent, see inversion.py)
    repository_fraction    fraction of training slices inverted into M (0.05; 1.0 = all)
    repository_chunk       slices per resumable repository chunk file (rounded up to a multiple
                           of inversion_batch_size)
    k1, k2, l1             retrieval: top K1 on layers [0, L1), top K2 of those on [L1, L) (100, 20, 6)
    l2                     swap start: layers [L2, L) come from the fused code (9; 0 = all fused)
    two_stage              coarse-to-fine retrieval (True) or one-stage top K2 on the whole code
    weights                VGG16 weights of the perceptual loss ("imagenet" | "random" | path)
    precision              "fp32" or "bf16" (autocast) for inversion
    compile                torch.compile the inversion loss
    retrieved_perceptual   also record the Fig. 3(a) quantity (see ``_predict``)
    retrieval_chunk        repository codes per similarity block (memory bound for 10^6 codes)
    """

    def __init__(self, stylegan: Literal["smoke", "cpu-quick", "cpu-long", "gpu-quick", "paper"] = "paper",
                 stylegan_config: dict | None = None, generator: str | None = None,
                 inversion_steps: NonNegativeInt = 2000,
                 inversion_init: Literal["mean", "encoder"] = "mean",
                 encoder_config: dict | None = None, inversion_tol: NonNegativeFloat = 0.0,
                 inversion_window: PositiveInt = 50, inversion_lr: PositiveFloat = 0.01,
                 mse_weight: NonNegativeFloat = 10.0, perceptual_weight: NonNegativeFloat = 1.0,
                 perceptual_mode: Literal["lpips", "eq2"] = "lpips",
                 perceptual_blocks: Sequence[Annotated[int, Range(1, 5)]] = (1, 2, 3, 4, 5),
                 inversion_batch_size: PositiveInt = 32,
                 repository_fraction: Annotated[float, Range(0, 1, lo_open=True)] = 0.05,
                 repository_chunk: PositiveInt = 64, k1: PositiveInt = 100, k2: PositiveInt = 20,
                 l1: NonNegativeInt = 6, l2: NonNegativeInt = 9, two_stage: bool = True,
                 weights: str = "imagenet", precision: Literal["fp32", "bf16"] = "fp32",
                 compile: bool = False, retrieved_perceptual: bool = True,
                 retrieval_chunk: PositiveInt = 65536):
        self.stylegan = stylegan
        self.stylegan_config = stylegan_config
        self.generator = generator
        self.inversion_steps = inversion_steps
        self.inversion_init = inversion_init
        self.encoder_config = encoder_config
        self.inversion_tol = inversion_tol
        self.inversion_window = inversion_window
        self.inversion_lr = inversion_lr
        self.mse_weight = mse_weight
        self.perceptual_weight = perceptual_weight
        self.perceptual_mode = perceptual_mode
        self.perceptual_blocks = perceptual_blocks
        self.inversion_batch_size = inversion_batch_size
        self.repository_fraction = repository_fraction
        self.repository_chunk = repository_chunk
        self.k1 = k1
        self.k2 = k2
        self.l1 = l1
        self.l2 = l2
        self.two_stage = two_stage
        self.weights = weights
        self.precision = precision
        self.compile = compile
        self.retrieved_perceptual = retrieved_perceptual
        self.retrieval_chunk = retrieval_chunk

    # -- configuration ---------------------------------------------------------------------
    def stylegan_settings(self) -> dict:
        """The StyleGAN2 training config: the named preset overlaid with ``stylegan_config``."""
        if self.stylegan not in STYLEGAN_PRESETS:
            raise ValueError(f"SCRPS stylegan={self.stylegan!r}: expected one of "
                             f"{sorted(STYLEGAN_PRESETS)} (set extra keys with stylegan_config)")
        cfg = copy.deepcopy(STYLEGAN_PRESETS[self.stylegan])
        cfg.update(copy.deepcopy(self.stylegan_config or {}))
        # the quality metrics score with the perceptual score's VGG16 unless told otherwise
        # (a logging setting: it never enters the StyleGAN config digest)
        if "quality_weights" not in (self.stylegan_config or {}) and self.weights is not None:
            cfg["quality_weights"] = self.weights
        return cfg

    def _validate(self) -> None:
        if self.perceptual_mode not in ("lpips", "eq2"):
            raise ValueError(f"SCRPS perceptual_mode={self.perceptual_mode!r}: expected 'lpips' or 'eq2'")
        if float(self.perceptual_weight) < 0:
            raise ValueError(f"SCRPS perceptual_weight={self.perceptual_weight}: expected >= 0 (paper: 1)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"SCRPS precision={self.precision!r}: expected one of {PRECISIONS}")
        if self.inversion_init not in ("mean", "encoder"):
            raise ValueError(f"SCRPS inversion_init={self.inversion_init!r}: expected 'mean' "
                             "(the paper) or 'encoder'")
        if float(self.inversion_tol) < 0 or int(self.inversion_window) < 1:
            raise ValueError(f"SCRPS inversion_tol={self.inversion_tol!r} (expected >= 0, 0 = off) "
                             f"and inversion_window={self.inversion_window!r} (expected >= 1 step)")
        if self.inversion_init == "encoder":
            resolve_encoder_config(self.encoder_config)   # unknown keys fail before training
        for name in ("inversion_steps", "inversion_batch_size", "repository_chunk", "k1", "k2"):
            if int(getattr(self, name)) < (0 if name == "inversion_steps" else 1):
                raise ValueError(f"SCRPS {name}={getattr(self, name)!r} must be a positive integer")
        if self.two_stage and self.k2 > self.k1:
            raise ValueError(f"SCRPS k2={self.k2} must not exceed k1={self.k1} (the paper uses K1 = 5 K2)")

    def _validate_layers(self, num_ws: int) -> None:
        """l1 and l2 against the generator's number of W+ layers L (12 at 160x128)."""
        if self.two_stage and not 0 < int(self.l1) < num_ws:
            raise ValueError(f"SCRPS l1={self.l1}: expected 0 < l1 < {num_ws} (the generator's W+ "
                             f"layers) for coarse-to-fine retrieval")
        if not 0 <= int(self.l2) <= num_ws:
            raise ValueError(f"SCRPS l2={self.l2}: expected 0 <= l2 <= {num_ws} (the generator's "
                             f"W+ layers)")

    def _chunk_size(self) -> int:
        """``repository_chunk`` rounded up to a multiple of the inversion batch: a chunk is
        inverted as a unit, so a smaller chunk would cap the batch (and the GPU's throughput)."""
        bs = int(self.inversion_batch_size)
        return -(-int(self.repository_chunk) // bs) * bs

    def _inversion_meta(self) -> dict:
        """What determines a code besides the image (checked when a repository build resumes)."""
        return {"generator_sha256": tensor_hash(self.generator_),
                "steps": int(self.inversion_steps), "lr": float(self.inversion_lr),
                "mse_weight": float(self.mse_weight),
                "perceptual_weight": float(self.perceptual_weight), "perceptual_mode": self.perceptual_mode,
                "perceptual_blocks": [int(b) for b in self.perceptual_blocks],
                "weights": str(self.weights), "precision": self.precision,
                # only when not the paper's: caches of mean-init, no-stop builds stay valid
                **({"init": "encoder", "encoder_sha256": tensor_hash(self.encoder_)}
                   if self.inversion_init == "encoder" else {}),
                **({"tol": float(self.inversion_tol), "window": int(self.inversion_window)}
                   if float(self.inversion_tol) > 0 else {})}

    # -- helpers built lazily (not learned state) ------------------------------------------
    def _module(self, name: str, device: torch.device):
        cache = self.__dict__.setdefault("_modules_cache", {})
        key = (name, str(device))
        if key not in cache:
            from adbench.nn.perceptual import PerceptualLoss, PerceptualScore
            if name == "loss":
                m = PerceptualLoss(weights=self.weights, mode=self.perceptual_mode,
                                   blocks=tuple(int(b) for b in self.perceptual_blocks))
            else:  # the runner's A_per on blocks 3-5, for the Fig. 3(a) quantity
                m = PerceptualScore(weights=self.weights)
            cache[key] = m.to(device)
        return cache[key]

    def _index(self, device: torch.device):
        """The repository prepared for retrieval on ``device`` (norms computed once)."""
        cache = self.__dict__.setdefault("_index_cache", {})
        key = (str(device), int(self.l1), int(self.retrieval_chunk))
        if key not in cache:
            cache.clear()  # one device at a time: the repository can be large
            codes = self.repository_.codes
            # Up to 8 GiB lives on the device; beyond, chunks are copied per query batch.
            if codes.numel() * 4 <= 8 * 2 ** 30:
                codes = codes.to(device)
            split = self.l1 if 0 < self.l1 < codes.shape[1] else 1   # one-stage ignores l1
            cache[key] = build_index(codes, split, chunk=int(self.retrieval_chunk))
        return cache[key]

    def _invert(self, x: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes (B, L, D) and the Adam updates each slice received (B,): the one procedure
        of the repository and the test slices (same start, steps and stopping rule)."""
        dev = torch.device(ctx.device)
        w = float(self.perceptual_weight)
        loss_fn = self._module("loss", dev) if w > 0 else None   # w = 0: no VGG16 at all
        init = None
        if self.inversion_init == "encoder":
            init = encode(self.encoder_.to(dev), x, batch_size=int(self.inversion_batch_size))
        return invert(self.generator_, x, loss_fn, steps=int(self.inversion_steps),
                      lr=float(self.inversion_lr), mse_weight=float(self.mse_weight),
                      perceptual_weight=w,
                      batch_size=int(self.inversion_batch_size), precision=self.precision,
                      compile=bool(self.compile), progress=ctx.progress, init=init,
                      tol=float(self.inversion_tol), window=int(self.inversion_window),
                      return_steps=True)

    def _train_or_load_encoder(self, train: SliceSet, ctx: Context):
        """The inversion's encoder, trained (or resumed) in ``encoder-<digest>/`` of the model
        folder, after the generator and with it frozen."""
        cfg = resolve_encoder_config(self.encoder_config)
        w = float(self.perceptual_weight)
        dev = torch.device(ctx.device)
        identity = {"generator_sha256": tensor_hash(self.generator_),
                    "mse_weight": float(self.mse_weight), "perceptual_weight": w,
                    **({"perceptual_mode": self.perceptual_mode, "weights": str(self.weights),
                        "perceptual_blocks": [int(b) for b in self.perceptual_blocks]} if w > 0 else {})}
        ctx.log.info("SCRPS: training the inversion encoder (%d iterations)", int(cfg["iterations"]))
        with work_folder(ctx.workdir, f"encoder-{encoder_digest(cfg, identity)}") as work:
            return train_encoder(self.generator_, train.images, cfg, work,
                                 loss_fn=self._module("loss", dev) if w > 0 else None,
                                 mse_weight=float(self.mse_weight), perceptual_weight=w,
                                 identity=identity, device=ctx.device, seed=ctx.seed,
                                 progress=ctx.progress, log=ctx.log)

    # -- fit -------------------------------------------------------------------------------
    def _fit(self, train: SliceSet, ctx: Context) -> None:
        self._validate()
        for k in ("_index_cache", "_modules_cache", "_test_steps"):
            self.__dict__.pop(k, None)
        dev = torch.device(ctx.device)
        G = self._train_or_load_generator(train, ctx)
        self.generator_ = G.to(dev).eval().requires_grad_(False)
        self._validate_layers(G.num_ws)
        if self.perceptual_weight > 0:
            self.weights_info_ = self._module("loss", dev).weights_info
        elif self.retrieved_perceptual:
            self.weights_info_ = self._module("score", dev).weights_info
        else:
            self.weights_info_ = {"backbone": None, "source": "none (perceptual_weight=0)"}
        self.encoder_ = (self._train_or_load_encoder(train, ctx)
                         if self.inversion_init == "encoder" else None)
        ctx.log.info("SCRPS: inverting %.1f%% of %d training slices into the latent repository",
                     100 * self.repository_fraction, len(train))
        folder = None if ctx.workdir is None else Path(ctx.workdir) / "repository"
        steps: list[torch.Tensor] = []

        def invert_chunk(imgs: torch.Tensor) -> torch.Tensor:
            codes, k = self._invert(imgs, ctx)
            steps.append(k)
            return codes

        self.repository_ = build_repository(
            train.images, train.subjects, train.z, invert_chunk, folder,
            fraction=float(self.repository_fraction), generator=ctx.generator(offset=1),
            chunk_size=self._chunk_size(), meta=self._inversion_meta(), log=ctx.log)
        # chunks resumed from disk were not inverted now: their counts are not known
        self.inversion_info_ = {
            "init": self.inversion_init, "steps": int(self.inversion_steps),
            "tol": float(self.inversion_tol), "window": int(self.inversion_window),
            "repository_steps": step_stats(torch.cat(steps) if steps else None)}
        if len(self.repository_) < self.k1:
            ctx.log.warning("SCRPS: the repository has %d codes, fewer than k1=%d; retrieval keeps "
                            "min(k, %d)", len(self.repository_), self.k1, len(self.repository_))

    def _train_or_load_generator(self, train: SliceSet, ctx: Context):
        """The given generator file, or a StyleGAN2 trained (or resumed) in the model cache."""
        if self.generator is not None:
            G = load_generator(self.generator)
            want = (train.images.shape[1], *train.shape)
            got = (G.img_channels, *G.img_resolution)
            if tuple(got) != tuple(want):
                raise ValueError(f"SCRPS generator={self.generator}: the generator makes {got} "
                                 f"images, the training slices are {want}")
            ctx.log.info("SCRPS: generator from %s; no StyleGAN2 training", self.generator)
            return G
        cfg = self.stylegan_settings()
        # one folder per training recipe: a preset whose settings changed starts afresh
        # instead of failing on the old checkpoint; a longer run resumes the shorter one
        with work_folder(ctx.workdir, f"stylegan-{config_digest(cfg)}") as work:
            return train_stylegan(train.images, cfg, work, device=ctx.device, seed=ctx.seed,
                                  progress=ctx.progress, log=ctx.log)

    # -- inference -------------------------------------------------------------------------
    def _reconstruct(self, x: torch.Tensor, ctx: Context, extras: bool):
        self._validate()
        self._validate_layers(self.generator_.num_ws)
        dev = torch.device(ctx.device)
        G = self.generator_.to(dev)
        x = x.to(dev, torch.float32)
        codes, steps = self._invert(x, ctx)
        self.__dict__.setdefault("_test_steps", []).append(steps.cpu())
        fused, idx, _, sims = retrieve(codes, self._index(dev), k1=int(self.k1), k2=int(self.k2),
                                       l1=int(self.l1), two_stage=bool(self.two_stage),
                                       chunk=int(self.retrieval_chunk), return_similarity=True)
        with torch.no_grad():
            rec = G.synthesis(swap(codes, fused, int(self.l2)), noise_mode="none").clamp(-1, 1)
        out: dict[str, torch.Tensor] = {}
        if extras:
            out["retrieval_similarity"] = sims.mean(dim=1).float().cpu()
            if float(self.inversion_tol) > 0:     # otherwise every slice runs inversion_steps
                out["inversion_steps"] = steps.float().cpu()
            if self.retrieved_perceptual:
                out["retrieved_perceptual"] = self._retrieved_perceptual(x, idx, dev).cpu()
        return rec, out

    def inversion_summary(self) -> dict:
        """For ``summary.json``: the inversion's start and stopping rule, and the Adam updates
        per slice (n, mean, min, max) of the repository build and of every slice inverted
        since ``fit``/``load_state_dict`` (call it right after the test set)."""
        self.check_fitted()
        seen = self.__dict__.get("_test_steps") or []
        return {**(self.inversion_info_ or {}),
                "test_steps": step_stats(torch.cat(seen) if seen else None)}

    @torch.no_grad()
    def _retrieved_perceptual(self, x: torch.Tensor, idx: torch.Tensor, dev: torch.device) -> torch.Tensor:
        """Fig. 3(a): mean over the K2 retrieved codes of the image-mean A_per between the test
        slice and the image each retrieved code generates. (B,) for x (B, 1, H, W).

        Cost: K2 generator and VGG16 forward passes per slice, against 3 x inversion_steps
        passes for the inversion (about 0.3% at the paper's settings), so it is on by default.
        """
        G, score = self.generator_, self._module("score", dev)
        b, k = idx.shape
        out = torch.zeros(b, device=dev)
        for j in range(k):
            img = G.synthesis(self.repository_.codes[idx[:, j].cpu()].to(dev), noise_mode="none")
            out += score(x, img.clamp(-1, 1)).mean(dim=(1, 2))
        return out / k

    def reconstruct(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        """x (B, 1, H, W) in [-1, 1] → pseudo-healthy G(s̃, b = 0) (B, 1, H, W) in [-1, 1]."""
        self.check_fitted()
        return self._reconstruct(x, ctx, extras=False)[0]

    def _reconstruct_with_extras(self, x: torch.Tensor, ctx: Context):
        """Extras: ``retrieval_similarity`` (B,) mean final-stage cosine similarity of the K2
        retrieved codes, and with ``retrieved_perceptual`` the Fig. 3(a) quantity (B,). The
        map (squared residual) is replaced by the runner's A_per."""
        return self._reconstruct(x, ctx, extras=True)

    # -- state -----------------------------------------------------------------------------
    def _state_dict(self) -> dict[str, torch.Tensor]:
        state = generator_state(self.generator_)
        state["weights_info_json"] = json_tensor(self.weights_info_)
        state.update(self.repository_.to_tensors("repository."))
        state["inversion_info_json"] = json_tensor(self.inversion_info_)
        if self.encoder_ is not None:
            state.update(encoder_state(self.encoder_, "encoder."))
        return state

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator_ = generator_from_state(state, where="SCRPS state")
        self.weights_info_ = tensor_json(state["weights_info_json"])
        self.repository_ = Repository.from_tensors(state, "repository.")
        self.inversion_info_ = (tensor_json(state["inversion_info_json"])
                                if "inversion_info_json" in state else None)
        self.encoder_ = (encoder_from_state(state, "encoder.")
                         if "encoder.config_json" in state else None)
        if self.inversion_init == "encoder" and self.encoder_ is None:
            raise ValueError("SCRPS state: inversion_init='encoder' but the saved model has no "
                             "encoder (it was fitted with inversion_init='mean'); fit again")
        self.__dict__.pop("_index_cache", None)
        self.__dict__.pop("_test_steps", None)
