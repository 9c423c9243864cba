"""Sample-quality metrics of a generator: KID and FID on network features, and SWD.

All three compare a set of generated slices with a set of real ones; lower is better and
0 means the two sets are alike.

* **KID** (Bińkowski et al., ICLR 2018, "Demystifying MMD GANs"): the unbiased estimate of
  the squared maximum mean discrepancy between the two feature distributions with the cubic
  polynomial kernel ``k(x, y) = (xᵀy / d + 1)³`` (d the feature dimension), averaged over
  ``subsets`` random subsets of ``m`` samples of each set (Eq. of their §4, the "KID" of
  NVlabs' StyleGAN2 metrics). Unbiased: its expectation is 0 for one distribution, so small
  negative values occur.
* **FID** (Heusel et al., NeurIPS 2017): the Fréchet distance between Gaussians fitted to the
  features, ``‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^{1/2})``. The trace of the matrix root is
  computed from eigenvalues: ``Tr((Σ₁Σ₂)^{1/2}) = Σᵢ √λᵢ(Σ₁^{1/2} Σ₂ Σ₁^{1/2})``, a symmetric
  PSD matrix, so no complex ``sqrtm`` and no ill-conditioning when ``n < d`` (singular Σ).
  FID is biased upwards for small ``n``: compare values computed with the same counts only.
* **SWD** (Karras et al., ICLR 2018, ProGAN §5 and App. D): the sliced Wasserstein distance
  between 7×7 patch descriptors of the Laplacian pyramids of the two sets, per level; it
  needs no network.

**Features.** The standard FID/KID use Inception-v3 pool features, whose weights cannot be
had offline. By default both are computed on ImageNet VGG16 features instead
(:class:`VGGFeatures`: the grey slice replicated to three channels, ImageNet normalisation,
the block-5 output ``relu5_3`` averaged over space, 512-d), through the same weights path as
the perceptual score (:func:`adbench.nn.weights.resolve_vgg16`): their values are called
``kid_vgg`` / ``fid_vgg`` and are not comparable with published Inception numbers. Given the
path of a torchvision ``inception_v3`` state dict (:class:`InceptionFeatures`), the Inception
pool3 features (2048-d, slices resized to 299×299) give ``kid_inception`` / ``fid_inception``
too; torchvision's architecture is used, not the TF graph of the original FID code, so values
are close to but not identical with TF-FID.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adbench.nn.backbones import GrayToRGB, VGG16Trunk, check_slices
from adbench.nn.weights import resolve_vgg16

__all__ = ["polynomial_kernel", "kid", "gaussian_stats", "frechet_distance", "fid",
           "laplacian_pyramid", "swd", "VGGFeatures", "InceptionFeatures", "extract_features",
           "QualityEvaluator"]


# ----------------------------------------------------------------------------- KID

def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``k(x, y) = (xᵀy / d + 1)³`` for rows of a (n, d) and b (m, d) → (n, m), float64."""
    k = np.asarray(a, np.float64) @ np.asarray(b, np.float64).T / np.shape(a)[1] + 1.0
    return k * k * k


def _mmd2_unbiased(kaa: np.ndarray, kbb: np.ndarray, kab: np.ndarray) -> float:
    """Unbiased MMD² from the kernel matrices of two samples of one size m: the means of the
    off-diagonal k(a, a') and k(b, b') terms minus twice the mean of k(a, b)."""
    m = kaa.shape[0]
    off = (kaa.sum() - np.trace(kaa) + kbb.sum() - np.trace(kbb)) / (m * (m - 1))
    return float(off - 2.0 * kab.mean())


def kid(a: np.ndarray, b: np.ndarray, *, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> float:
    """Kernel Inception Distance of feature sets a (n_a, d) and b (n_b, d).

    Each of ``subsets`` rounds draws ``m = min(n_a, n_b, subset_size)`` rows of each set
    without replacement (numpy generator seeded by ``seed``) and takes the unbiased MMD²;
    the result is the mean over rounds. When both sets have exactly ``m`` rows every round is
    the same, so one is computed. Up to 4,096 rows per set the kernel matrices are computed
    once and the rounds index them.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"kid: expected feature sets (n, d) of one d, got {a.shape} and {b.shape}")
    na, nb = a.shape[0], b.shape[0]
    m = min(na, nb, int(subset_size))
    if m < 2:
        raise ValueError(f"kid: needs at least 2 samples per set, got {na} and {nb}")
    if na == m and nb == m:
        return _mmd2_unbiased(polynomial_kernel(a, a), polynomial_kernel(b, b),
                              polynomial_kernel(a, b))
    rng = np.random.default_rng(seed)
    full = max(na, nb) <= 4096
    if full:
        kaa, kbb, kab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    vals = []
    for _ in range(int(subsets)):
        i, j = rng.choice(na, m, replace=False), rng.choice(nb, m, replace=False)
        if full:
            vals.append(_mmd2_unbiased(kaa[np.ix_(i, i)], kbb[np.ix_(j, j)], kab[np.ix_(i, j)]))
        else:
            x, y = a[i], b[j]
            vals.append(_mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y),
                                       polynomial_kernel(x, y)))
    return float(np.mean(vals))


# ----------------------------------------------------------------------------- FID

def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) (ddof = 1) of features (n, d), float64."""
    f = np.asarray(feats, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"gaussian_stats: expected features (n >= 2, d), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """``‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2 Tr((Σ₁Σ₂)^{1/2})`` (the Fréchet / 2-Wasserstein
    distance of two Gaussians), with the root's trace from the eigenvalues of the symmetric
    ``Σ₁^{1/2} Σ₂ Σ₁^{1/2}`` (its eigenvalues are those of Σ₁Σ₂), clipped at 0."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    r1 = _psd_sqrt(s1)
    lam = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_root = np.sqrt(np.clip(lam, 0, None)).sum()
    return float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_root)


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (n_a, d) and b (n_b, d)."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


# ----------------------------------------------------------------------------- SWD

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _filter(x: torch.Tensor) -> torch.Tensor:
    """The separable 5×5 binomial filter with mirror borders, as ten shifted adds (a 1-channel
    ``conv2d`` is several times slower on the CPU)."""
    k = _BINOMIAL.tolist()
    h, w = x.shape[-2:]
    p = F.pad(x, (2, 2, 0, 0), mode="reflect")
    x = sum(k[t] * p[..., :, t:t + w] for t in range(5))
    p = F.pad(x, (0, 0, 2, 2), mode="reflect")
    return sum(k[t] * p[..., t:t + h, :] for t in range(5))


def laplacian_pyramid(x: torch.Tensor, min_size: int = 16) -> list[torch.Tensor]:
    """Laplacian pyramid of x (N, C, H, W), finest level first (ProGAN's SWD pyramid).

    Levels halve H and W while the smaller side stays >= ``min_size``; the 5×5 binomial filter
    does the smoothing. Level ℓ < last is ``g_ℓ − up(g_{ℓ+1})`` (``up``: zero insertion, then
    the filter times 4), the last level is the Gaussian ``g_last`` itself, so summing the
    upsampled levels rebuilds x exactly. H and W must stay even down to the last level.
    """
    levels, g = [], x.float()
    while min(g.shape[-2:]) // 2 >= min_size:
        if g.shape[-2] % 2 or g.shape[-1] % 2:
            raise ValueError(f"laplacian_pyramid: level {tuple(g.shape[-2:])} has an odd side; "
                             f"the slice size {tuple(x.shape[-2:])} must halve evenly down to "
                             f"min_size={min_size}")
        down = _filter(g)[..., ::2, ::2]
        levels.append(g - _upsample(down))
        g = down
    levels.append(g)
    return levels


def _upsample(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x
    return _filter(up) * 4


def _descriptors(level: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, patch: int):
    """(N, C, h, w) level, patch corners (N, P) → (N·P, C·patch²) descriptors, normalised by
    this set's per-channel mean and std over all descriptors and pixels (ProGAN)."""
    n, c = level.shape[:2]
    win = level.unfold(2, patch, 1).unfold(3, patch, 1)         # (N, C, h', w', p, p)
    d = win[torch.arange(n)[:, None], :, ys, xs]                 # (N, P, C, p, p)
    d = d.reshape(-1, c, patch, patch)
    std = d.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)   # a constant set: zeros, not NaN
    d = (d - d.mean(dim=(0, 2, 3), keepdim=True)) / std
    return d.reshape(d.shape[0], -1)


def swd(a: torch.Tensor, b: torch.Tensor, *, patch: int = 7, patches_per_image: int = 128,
        repeats: int = 4, directions: int = 128, min_size: int = 16, seed: int = 0) -> dict:
    """ProGAN's sliced Wasserstein distance of two image sets a, b (N, C, H, W), same N.

    Per pyramid level (:func:`laplacian_pyramid`): ``patches_per_image`` random 7×7
    neighbourhoods per image (the same positions for both sets, drawn from ``seed``: identical
    sets give exactly 0), each set normalised by its own per-channel statistics; then
    ``repeats`` × ``directions`` random unit directions; along each, the 1-D Wasserstein-1
    distance of the projected descriptors is the mean absolute difference of the sorted
    projections. Returns {"swd": mean over levels, "levels": {"HxW": value}}, in ProGAN's
    reporting unit (× 10³). Own-set normalisation makes it blind to a global affine change of
    intensity per level, as ProGAN's is.
    """
    if a.shape != b.shape:
        raise ValueError(f"swd: the two sets must have one shape (N, C, H, W), got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    g = torch.Generator().manual_seed(int(seed))
    out = {}
    for la, lb in zip(laplacian_pyramid(a.cpu(), min_size), laplacian_pyramid(b.cpu(), min_size)):
        n, _, h, w = la.shape
        if h < patch or w < patch:
            raise ValueError(f"swd: level {h}x{w} is smaller than the {patch}x{patch} patch")
        ys = torch.randint(h - patch + 1, (n, patches_per_image), generator=g)
        xs = torch.randint(w - patch + 1, (n, patches_per_image), generator=g)
        da, db = _descriptors(la, ys, xs, patch), _descriptors(lb, ys, xs, patch)
        dists = []
        for _ in range(int(repeats)):
            dirs = torch.randn(da.shape[1], int(directions), generator=g)
            dirs = dirs / dirs.norm(dim=0, keepdim=True)
            # (directions, descriptors) rows: numpy sorts contiguous rows far faster than torch
            pa = np.sort((dirs.T @ da.T).numpy(), axis=1)
            pb = np.sort((dirs.T @ db.T).numpy(), axis=1)
            dists.append(np.abs(pa - pb).mean(dtype=np.float64))
        out[f"{h}x{w}"] = float(np.mean(dists)) * 1e3
    return {"swd": float(np.mean(list(out.values()))), "levels": out}


# ----------------------------------------------------------------------------- features

class VGGFeatures(nn.Module):
    """(B, 1, H, W) in [-1, 1] → (B, C_j) globally averaged VGG16 block-``block`` features.

    The grey slice is replicated to RGB with ImageNet normalisation (``GrayToRGB.imagenet``,
    the perceptual score's input); block j is the ReLU before the j-th max-pool (5: relu5_3,
    512 channels). ``weights``: "imagenet" | "random" (tests) | a state-dict path, resolved
    by :func:`adbench.nn.weights.resolve_vgg16` (provenance in ``weights_info``).
    """

    def __init__(self, weights: str = "imagenet", block: int = 5, seed: int = 0):
        super().__init__()
        state, info = resolve_vgg16(weights, seed=seed)
        self.to_rgb = GrayToRGB.imagenet()
        self.trunk = VGG16Trunk(state, (int(block),))
        self.weights_info = {**info, "layer": f"block{int(block)}", "pool": "mean"}
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_slices(x, "VGGFeatures input")
        return self.trunk(self.to_rgb(x))[0].float().mean(dim=(2, 3))


class InceptionFeatures(nn.Module):
    """(B, 1, H, W) in [-1, 1] → (B, 2048) Inception-v3 pool3 features, for the standard FID.

    ``path``: a ``torch.save`` of torchvision's ``inception_v3`` state dict (with or without
    the ``AuxLogits.*`` keys; e.g. torchvision's ``inception_v3_google-0cc3c7bd.pth``), read
    with ``weights_only=True``. The slice is replicated to RGB with ImageNet normalisation and
    resized bilinearly to 299×299; ``transform_input=True`` maps that to the normalisation the
    Google weights expect, as torchvision does for its pretrained model.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        import torchvision

        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Inception checkpoint {str(path)!r} (StyleGAN2 setting "
                                    f"stylegan_config.quality_inception) does not exist; give the "
                                    f"path of a "
                                    f"torchvision inception_v3 state dict, or leave the key "
                                    f"unset (null) for the VGG16 metrics alone")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        aux = any(str(k).startswith("AuxLogits.") for k in state)
        net = torchvision.models.inception_v3(weights=None, aux_logits=aux, init_weights=False,
                                              transform_input=True)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"Inception checkpoint {str(path)!r} is not a torchvision "
                             f"inception_v3 state dict: {exc}") from None
        net.fc = nn.Identity()
        self.net = net
        self.to_rgb = GrayToRGB.imagenet()
        self.weights_info = {"backbone": "inception_v3", "source": "path", "path": str(path)}
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "InceptionFeatures":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_slices(x, "InceptionFeatures input")
        x = F.interpolate(self.to_rgb(x.float()), size=(299, 299), mode="bilinear",
                          align_corners=False)
        return self.net(x).float()


@torch.no_grad()
def extract_features(net: nn.Module, images: torch.Tensor, *, batch_size: int = 32,
                     device: str | torch.device = "cpu") -> np.ndarray:
    """``net`` over images (N, 1, H, W) in batches → (N, d) float64 numpy (bf16 on CUDA)."""
    dev = torch.device(device)
    out = []
    for i in range(0, images.shape[0], int(batch_size)):
        x = images[i:i + int(batch_size)].to(dev, torch.float32)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            out.append(net(x).float().cpu())
    return torch.cat(out).double().numpy()


class QualityEvaluator:
    """Scores generated slices against one fixed set of real slices.

    reals (N, 1, H, W) in [-1, 1]; their features are computed once, here. ``weights`` /
    ``block``: :class:`VGGFeatures`; ``inception``: None or an Inception checkpoint path
    (:class:`InceptionFeatures`); ``swd_min_size``: the coarsest pyramid side (None: no SWD).
    ``__call__(fakes)`` → {"kid_vgg", "fid_vgg", "swd", ["kid_inception", "fid_inception"],
    "quality_s"} (floats; "quality_s": seconds the call took). KID subsets, SWD patches and
    directions come from ``seed``, so a call's result is a function of its inputs alone.
    """

    def __init__(self, reals: torch.Tensor, *, weights: str = "imagenet", block: int = 5,
                 inception: str | Path | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 32, kid_subsets: int = 100, kid_subset_size: int = 1000,
                 swd_min_size: int | None = 16, seed: int = 0, weights_seed: int = 0):
        check_slices(reals, "QualityEvaluator reals")
        self.device = torch.device(device)
        self.batch_size, self.seed, self.swd_min_size = int(batch_size), int(seed), swd_min_size
        self.kid_args = dict(subsets=int(kid_subsets), subset_size=int(kid_subset_size))
        self.reals = reals.detach().float().cpu()
        self.nets = {"vgg": VGGFeatures(weights, block, seed=weights_seed).to(self.device)}
        if inception is not None:
            self.nets["inception"] = InceptionFeatures(inception).to(self.device)
        self.weights_info = {k: n.weights_info for k, n in self.nets.items()}
        self.real_features = {k: self._features(n, self.reals) for k, n in self.nets.items()}

    def _features(self, net: nn.Module, x: torch.Tensor) -> np.ndarray:
        return extract_features(net, x, batch_size=self.batch_size, device=self.device)

    def __call__(self, fakes: torch.Tensor) -> dict[str, float]:
        check_slices(fakes, "QualityEvaluator fakes")
        t0 = time.perf_counter()
        fakes = fakes.detach().float().cpu().clamp(-1, 1)
        out: dict[str, float] = {}
        for k, net in self.nets.items():
            f = self._features(net, fakes)
            out[f"kid_{k}"] = kid(self.real_features[k], f, seed=self.seed, **self.kid_args)
            out[f"fid_{k}"] = fid(self.real_features[k], f)
        if self.swd_min_size is not None:  # SWD pairs equal counts: the first n of each set
            n = min(self.reals.shape[0], fakes.shape[0])
            out["swd"] = swd(self.reals[:n], fakes[:n], min_size=self.swd_min_size,
                             seed=self.seed)["swd"]
        out["quality_s"] = time.perf_counter() - t0
        return out
