"""Sample-quality metrics: FID, KID and SWD against known answers and direct computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from adbench.nn.quality import (InceptionFeatures, QualityEvaluator, VGGFeatures, fid,
                                frechet_distance, kid, laplacian_pyramid, swd)

pytestmark = pytest.mark.usefixtures("one_thread")


def _kid_loop(a: np.ndarray, b: np.ndarray) -> float:
    """Bińkowski et al.'s unbiased MMD² with k(x, y) = (x·y/d + 1)^3, written as plain loops."""
    m, d = a.shape
    k = lambda x, y: (float(np.dot(x, y)) / d + 1.0) ** 3
    aa = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j)
    bb = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j)
    ab = sum(k(a[i], b[j]) for i in range(m) for j in range(m))
    return aa / (m * (m - 1)) + bb / (m * (m - 1)) - 2 * ab / m ** 2


def _gaussian_mmd2(mu1: np.ndarray, mu2: np.ndarray) -> float:
    """Population MMD² of N(mu1, I) and N(mu2, I) under the cubic kernel, in closed form.

    E k(x, y) = 1 + 3 E[u] + 3 E[u²] + E[u³], u = xᵀy/d, for independent x, y with first,
    second and third moments m, M = I + m mᵀ, T_ijk = m_i m_j m_k + m_i δ_jk + m_j δ_ik + m_k δ_ij.
    """
    d = mu1.size
    eye = np.eye(d)

    def third(m):
        return (np.einsum("i,j,k->ijk", m, m, m) + np.einsum("i,jk->ijk", m, eye)
                + np.einsum("j,ik->ijk", m, eye) + np.einsum("k,ij->ijk", m, eye))

    def ek(m1, m2):
        second = np.trace((eye + np.outer(m1, m1)) @ (eye + np.outer(m2, m2)))
        return 1 + 3 * (m1 @ m2) / d + 3 * second / d ** 2 + np.sum(third(m1) * third(m2)) / d ** 3

    return ek(mu1, mu1) + ek(mu2, mu2) - 2 * ek(mu1, mu2)


def test_frechet_distance_matches_closed_form_and_scipy():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    # diagonal covariances: Tr(S1 + S2 - 2 (S1 S2)^1/2) = sum (sqrt(v1) - sqrt(v2))^2
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want, rel=1e-10)
    linalg = pytest.importorskip("scipy.linalg")
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_fid_on_gaussian_samples():
    rng = np.random.default_rng(1)
    n, d = 4000, 4
    a, same = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    shift = np.array([1.0, 0.5, 0.0, 0.0])
    assert fid(a, same) < 0.02
    # known answers: a mean shift adds |delta|^2 = 1.25; doubling the std adds d (2 - 1)^2 = 4
    assert fid(a, same + shift) == pytest.approx(1.25, abs=0.1)
    assert fid(a, 2 * same) == pytest.approx(4.0, rel=0.05)


def test_kid_matches_loop_and_known_answer():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(12, 3)), rng.normal(size=(12, 3)) + 0.3
    assert kid(a, b) == pytest.approx(_kid_loop(a, b), rel=1e-10)
    # subset averaging: the mean of the loop over the same seeded subsets
    big_a, big_b = rng.normal(size=(30, 3)), rng.normal(size=(25, 3))
    r = np.random.default_rng(7)
    subs = [(r.choice(30, 10, replace=False), r.choice(25, 10, replace=False)) for _ in range(5)]
    want = np.mean([_kid_loop(big_a[i], big_b[j]) for i, j in subs])
    assert kid(big_a, big_b, subsets=5, subset_size=10, seed=7) == pytest.approx(want, rel=1e-10)

    n, d = 3000, 4         # the cubic kernel is heavy-tailed: the estimate's spread is ~3% here
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    mu = np.full(d, 0.5)
    true = _gaussian_mmd2(np.zeros(d), mu)
    assert true == pytest.approx(1.328125)          # hand-checked value of the closed form
    assert abs(kid(x, y, subset_size=n)) < 0.02     # unbiased: one distribution gives ~0
    assert kid(x, y + mu, subset_size=n) == pytest.approx(true, rel=0.15)
    with pytest.raises(ValueError, match="one d"):
        kid(x, y[:, :3])


def _textures(n: int, smooth: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 32, 32, generator=g)
    if smooth > 1:
        x = torch.nn.functional.avg_pool2d(x, smooth, 1, smooth // 2, count_include_pad=False)
    return x.clamp(-3, 3) / 3


def _ellipses(n: int, seed: int, size: int = 64, scale: float = 1.0) -> torch.Tensor:
    """Bright ellipses of random axes (times ``scale``) on a -1 background, light noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size),
                            indexing="ij")
    ax = scale * (0.5 + 0.4 * torch.rand(2, n, 1, 1, generator=g))
    e = (yy / ax[0]) ** 2 + (xx / ax[1]) ** 2
    img = torch.where(e < 1, 0.8 - e, torch.tensor(-1.0))[:, None]
    return img + 0.05 * torch.randn(img.shape, generator=g)


def test_laplacian_pyramid_rebuilds_the_image_and_swd_separates_textures():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.randn(2, 1, 32, 64, dtype=torch.float64)
    levels = laplacian_pyramid(x, min_size=8)
    assert [tuple(t.shape[-2:]) for t in levels] == [(32, 64), (16, 32), (8, 16)]
    # the coarsest level is the binomial-filtered, decimated image (scipy's "mirror" border)
    k = np.array([1, 4, 6, 4, 1]) / 16
    g = x.numpy()
    for _ in range(2):
        g = ndimage.correlate1d(ndimage.correlate1d(g, k, axis=3, mode="mirror"), k, axis=2,
                                mode="mirror")[..., ::2, ::2]
    np.testing.assert_allclose(levels[-1].numpy(), g, atol=1e-6)
    from adbench.nn.quality import _upsample
    rebuilt = levels[-1]
    for lap in reversed(levels[:-1]):
        rebuilt = lap + _upsample(rebuilt)
    torch.testing.assert_close(rebuilt, x.float(), atol=1e-5, rtol=0)

    a, a2, small = _ellipses(32, 0), _ellipses(32, 1), _ellipses(32, 2, scale=0.5)
    assert swd(a, a, min_size=16) == {"swd": 0.0, "levels": {"64x64": 0.0, "32x32": 0.0,
                                                             "16x16": 0.0}}
    same, other = swd(a, a2, min_size=16)["swd"], swd(a, small, min_size=16)["swd"]
    assert other > 3 * same > 0                     # measured: ~181 against ~31
    assert swd(a, small, min_size=16) == swd(a, small, min_size=16)     # seeded
    with pytest.raises(ValueError, match="one shape"):
        swd(a, a[:8])


def test_evaluator_with_random_vgg_and_an_inception_checkpoint(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    reals = _textures(6, 3, 3)
    ev = QualityEvaluator(reals, weights="random", swd_min_size=8, seed=0)
    assert ev.weights_info["vgg"]["source"] == "random" and ev.real_features["vgg"].shape == (6, 512)
    same = ev(reals.clone())
    assert set(same) == {"kid_vgg", "fid_vgg", "swd", "quality_s"}
    assert same["fid_vgg"] == pytest.approx(0.0, abs=1e-6 * max(1.0, ev.real_features["vgg"].var()))
    assert same["swd"] == 0.0
    other = ev(_textures(6, 1, 4))
    assert other["fid_vgg"] > 0 and other["swd"] > 0
    # the features are block-5 maps averaged over space: 512 channels, ReLU outputs, >= 0
    vgg = ev.nets["vgg"]
    assert isinstance(vgg, VGGFeatures) and vgg.weights_info["layer"] == "block5"
    assert (ev.real_features["vgg"] >= 0).all()
    torch.testing.assert_close(vgg(reals[:2]), vgg(reals)[:2], rtol=1e-4, atol=1e-6)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    path = tmp_path / "inception.pt"
    torch.save(net.state_dict(), path)
    feats = InceptionFeatures(path)(reals[:1])
    assert feats.shape == (1, 2048) and torch.isfinite(feats).all()
    with pytest.raises(FileNotFoundError, match="quality_inception"):
        InceptionFeatures(tmp_path / "missing.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a torchvision inception_v3"):
        InceptionFeatures(tmp_path / "bad.pt")
