"""The shared pseudo-anomaly synthesis: exact masks inside the brain, determinism by
per-sample seed, the anomaly-free fraction, every texture source, config errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from adbench.errors import ConfigError
from adbench.nn.synthesis import (
    SynthesisConfig,
    perlin_mask,
    perlin_noise,
    sample_seeds,
    synthesize,
)

H, W = 40, 32


def _batch(n: int, seed: int = 0):
    """n ellipse 'brains' with smooth random texture inside, -1 outside."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    brain = (((yy - 20) / 17.0) ** 2 + ((xx - 16) / 13.0) ** 2 < 1)[None, None].expand(n, 1, H, W)
    tex = torch.nn.functional.avg_pool2d(torch.rand(n, 1, H, W, generator=g), 3, 1, 1)
    img = torch.where(brain, tex - 0.2, torch.tensor(-1.0))
    return img.contiguous(), brain.contiguous()


@pytest.mark.parametrize("source", ["healthy", "procedural", "intensity"])
def test_masks_exactly_where_changed_and_inside_brain(source):
    img, brain = _batch(24)
    cfg = SynthesisConfig.from_dict({"sources": [source], "p_anomaly": 1.0})
    pool = _batch(5, 1)[0]
    pool = torch.where(pool > -1, -pool, pool)  # other tissue: darker than the slices' own
    aug, masks = synthesize(img, brain, sample_seeds(3, n=24), config=cfg, pool=pool)
    assert aug.shape == masks.shape == img.shape and masks.dtype == torch.float32
    assert torch.equal(masks.bool(), aug != img)
    assert not (masks.bool() & ~brain).any()
    assert aug.min() >= -1 and aug.max() <= 1
    assert ((aug - img).abs()[masks.bool()] >= cfg.min_change).all()  # no invisible changes
    # p_anomaly = 1: (almost) every sample got an anomaly of at least min_pixels; a sample
    # whose max_tries masks all missed its small 40 x 32 brain is left unchanged
    sizes = masks.sum(dim=(1, 2, 3))
    assert ((sizes == 0) | (sizes >= cfg.min_pixels)).all() and (sizes > 0).sum() >= 21


def test_determinism_and_independence_from_batch():
    img, brain = _batch(6)
    pool = _batch(4, 9)[0]
    seeds = torch.tensor([11, 12, 13, 14, 15, 16])
    a1, m1 = synthesize(img, brain, seeds, config={}, pool=pool)
    a2, m2 = synthesize(img, brain, seeds, config={}, pool=pool)
    assert torch.equal(a1, a2) and torch.equal(m1, m2)
    # sample 4 alone, and in a reversed batch, gives the same result
    a3, m3 = synthesize(img[4:5], brain[4:5], seeds[4:5], config={}, pool=pool)
    assert torch.equal(a3[0], a1[4]) and torch.equal(m3[0], m1[4])
    order = torch.arange(5, -1, -1)
    a4, m4 = synthesize(img[order], brain[order], seeds[order], config={}, pool=pool)
    assert torch.equal(a4, a1[order]) and torch.equal(m4, m1[order])
    # another seed gives another anomaly
    a5, _ = synthesize(img, brain, seeds + 100, config={}, pool=pool)
    assert not torch.equal(a5, a1)


def test_sample_seeds_derivation():
    s = sample_seeds(0, 5, n=4)
    assert s.dtype == torch.int64 and len(set(s.tolist())) == 4 and (s >= 0).all()
    assert torch.equal(s, sample_seeds(0, 5, n=6)[:4])  # index i does not depend on n
    assert not torch.equal(s, sample_seeds(0, 6, n=4))


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_anomaly_free_fraction(p):
    n = 300
    img, brain = _batch(n)
    aug, masks = synthesize(img, brain, sample_seeds(7, n=n),
                            config={"p_anomaly": p, "sources": ["intensity"]})
    free = masks.sum(dim=(1, 2, 3)) == 0
    assert torch.equal(aug[free], img[free])
    # two-sided binomial test against 1 - p (retries on this large brain essentially never fail)
    assert stats.binomtest(int(free.sum()), n, 1 - p).pvalue > 1e-4


def test_perlin_noise_and_mask():
    rng = np.random.default_rng(0)
    noise = perlin_noise((H, W), (4, 4), rng)
    assert noise.shape == (H, W) and np.isfinite(noise).all() and np.abs(noise).max() <= 1.5
    # noise vanishes at the lattice points (Perlin: gradient noise is 0 at integer coords)
    assert np.allclose(noise[:: H // 4, :: W // 4], 0.0, atol=1e-6)
    cfg = SynthesisConfig(threshold=0.5, rotate=0.0)
    m = perlin_mask((H, W), cfg, np.random.default_rng(1))
    assert m.dtype == bool and m.shape == (H, W)


def test_dtd_source_reads_folder(tmp_path):
    from PIL import Image

    sub = tmp_path / "images" / "banded"
    sub.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        arr = (rng.random((20 + i, 25, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(sub / f"t{i}.png")
    img, brain = _batch(8)
    cfg = SynthesisConfig.from_dict({"sources": ["dtd"], "dtd_root": str(tmp_path),
                                     "p_anomaly": 1.0})
    aug, masks = synthesize(img, brain, sample_seeds(1, n=8), config=cfg)
    assert torch.equal(masks.bool(), aug != img) and (masks.sum(dim=(1, 2, 3)) > 0).all()


def test_dtd_missing_or_empty_folder(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        SynthesisConfig.from_dict({"sources": ["dtd"], "dtd_root": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="no images"):
        SynthesisConfig.from_dict({"sources": ["dtd"], "dtd_root": str(tmp_path)})
    with pytest.raises(ConfigError, match="dtd_root"):
        SynthesisConfig.from_dict({"sources": ["dtd"]})


@pytest.mark.parametrize("bad, match", [
    ({"p_anomly": 0.5}, "unknown key.*p_anomly.*valid keys"),
    ({"sources": ["clouds"]}, "synthesis.sources"),
    ({"beta_range": [0.9, 0.1]}, "beta_range"),
    ({"p_anomaly": 1.5}, "p_anomaly"),
    ({"perlin_scale_exp": [0, 12]}, "perlin_scale_exp"),
    ({"max_tries": 0}, "max_tries"),
])
def test_bad_config(bad, match):
    with pytest.raises(ConfigError, match=match):
        SynthesisConfig.from_dict(bad)


def test_config_round_trip_and_healthy_needs_pool():
    cfg = SynthesisConfig.from_dict({"sources": "healthy,intensity", "beta_range": [0.1, 0.5]})
    assert SynthesisConfig.from_dict(cfg.to_dict()) == cfg
    img, brain = _batch(4)
    with pytest.raises(ConfigError, match="pool"):
        synthesize(img, brain, [1, 2, 3, 4], config={"sources": ["healthy"], "p_anomaly": 1.0})
