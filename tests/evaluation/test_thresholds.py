"""Thresholds set on healthy validation voxels (no test labels), Dice at a threshold, the
lesion-size/type breakdowns, and a run that holds validation subjects out of training."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from adbench.data.dataset import hold_out
from adbench.evaluation.thresholds import (check_levels, column_name, dice_at, evenly_spaced,
                                           fpr_thresholds, quantile_threshold,
                                           validation_scores)
from adbench.evaluation.volume import LESION_ML_EDGES, breakdowns, lesion_ml, size_bin


@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_threshold_is_numpys_linear_quantile(n):
    rng = np.random.default_rng(n)
    s = rng.normal(size=n)
    s[: n // 3] = s[0]                       # ties must not matter either
    for a in (0.001, 0.01, 0.05, 0.5, 0.99):
        assert quantile_threshold(s, a) == pytest.approx(np.quantile(s, 1 - a), abs=1e-12)
    assert math.isnan(quantile_threshold([], 0.01))
    with pytest.raises(ValueError, match="non-finite"):
        quantile_threshold([0.0, np.nan], 0.01)


def test_fpr_on_fresh_healthy_data_is_the_level_asked_for():
    """Scores ~ N(0, 1) on healthy voxels: t_α from n validation voxels gives FPR α on m fresh
    voxels, within 4.5 binomial standard deviations (quantile estimate + fresh sample), and
    t_α is near the true quantile Φ⁻¹(1 − α)."""
    rng = np.random.default_rng(0)
    n, m = 200_000, 200_000
    val, fresh = rng.standard_normal(n), rng.standard_normal(m)
    t = fpr_thresholds(val, (0.01, 0.05))
    assert list(t) == ["dice_fpr1", "dice_fpr5"]
    for a, col in ((0.01, "dice_fpr1"), (0.05, "dice_fpr5")):
        fpr = float((fresh >= t[col]).mean())
        sd = math.sqrt(a * (1 - a) * (1 / n + 1 / m))
        assert abs(fpr - a) < 4.5 * sd, (a, fpr)
        # the quantile's standard error is sqrt(a(1-a)/n) / φ(t)
        se = math.sqrt(a * (1 - a) / n) / stats.norm.pdf(stats.norm.ppf(1 - a))
        assert abs(t[col] - stats.norm.ppf(1 - a)) < 4.5 * se


def test_dice_at_threshold_matches_a_direct_count():
    rng = np.random.default_rng(1)
    y = rng.random(5000) < 0.1
    s = rng.normal(size=5000) + 1.5 * y
    for t in (-1.0, 0.5, 1.2, 3.0):
        p = s >= t
        tp = np.sum(p & y)
        expected = 2 * tp / (p.sum() + y.sum())
        assert dice_at(s, y, t) == pytest.approx(expected, rel=1e-12)
        # as sklearn's F1 of the binarised map (same quantity)
        from sklearn.metrics import f1_score
        assert dice_at(s, y, t) == pytest.approx(f1_score(y, p, zero_division=0.0), rel=1e-12)
    assert dice_at(s, y, np.inf) == 0.0                       # nothing predicted, lesion present
    assert math.isnan(dice_at(s, np.zeros(5000, bool), np.inf))   # 0/0
    assert math.isnan(dice_at(s, y, math.nan))                # no threshold estimated


def test_column_names_and_level_errors():
    assert [column_name(a) for a in (0.01, 0.05, 0.005, 0.1)] == [
        "dice_fpr1", "dice_fpr5", "dice_fpr0.5", "dice_fpr10"]
    with pytest.raises(ValueError, match=r"runner.fpr_levels.*\(0, 1\)"):
        check_levels([0.01, 1.0])
    with pytest.raises(ValueError, match="repeats"):
        check_levels([0.01, 0.01])


class _Identity:
    """A detector whose map is the slice itself (so the pooled values are known)."""

    reconstructs = False

    def predict(self, x, ctx):
        from types import SimpleNamespace
        return SimpleNamespace(maps=x[:, 0], reconstructions=None, extras={})


def test_validation_pools_brain_voxels_of_capped_evenly_spaced_slices():
    rng = np.random.default_rng(2)
    vols = []
    for i in range(3):
        img = rng.normal(size=(6, 5, 10)).astype(np.float32)
        brain = rng.random((6, 5, 10)) < 0.5
        vols.append((f"s{i}", img, brain, np.arange(1, 9)))       # 8 candidate slices each
    scores, info = validation_scores(_Identity(), None, None, iter(vols), 4, per_volume=3,
                                     max_slices=7)
    assert info["n_slices"] == 7 and info["subjects"] == ["s0", "s1", "s2"]
    zs = [np.arange(1, 9)[evenly_spaced(8, k)] for k in (3, 3, 1)]
    assert list(zs[0]) == [1, 5, 8] and list(zs[2]) == [1]
    expected = np.concatenate([np.moveaxis(img[:, :, z], -1, 0)[np.moveaxis(b[:, :, z], -1, 0)]
                               for (_, img, b, _), z in zip(vols, zs)])
    np.testing.assert_array_equal(scores, expected.astype(np.float64))
    assert info["n_voxels"] == expected.size


def test_lesion_volume_bins_and_type_breakdown():
    aff = np.array([[-1.2, 0, 0, 3], [0, 0, 1.5, 0], [0, 2.0, 0, 1], [0, 0, 0, 1]])
    les = np.zeros((10, 10, 10), bool)
    les[:5, :4, :3] = True                                    # 60 voxels of 3.6 mm³
    assert lesion_ml(les, aff) == pytest.approx(60 * 3.6 / 1000)
    rng = np.random.default_rng(3)
    ml = np.concatenate([rng.uniform(0, 150, 40), [0.0, 1.0, 100.0, 250.0]])
    rows = [{"lesion_ml": v, "lesion_type": ("HGG", "LGG", "")[i % 3], "auroc": float(i),
             "dice_max": math.nan if i == 0 else 0.5} for i, v in enumerate(ml)]
    b = breakdowns(rows, ("auroc", "dice_max"))
    counts = [x["n"] for x in b["by_lesion_size"]["bins"]]
    edges = np.array(LESION_ML_EDGES)
    assert counts == list(np.bincount(np.digitize(ml, edges[1:-1]), minlength=len(edges) - 1))
    assert b["by_lesion_size"]["edges_ml"][-1] is None                  # inf, strict JSON
    for x in b["by_lesion_size"]["bins"]:
        inside = [float(i) for i, v in enumerate(ml) if size_bin(v) == x["bin"]]
        if inside:
            assert x["auroc_mean"] == pytest.approx(np.mean(inside))
    assert sorted(b["by_lesion_type"]) == ["HGG", "LGG"]
    assert b["by_lesion_type"]["HGG"]["n"] == 15 and b["by_lesion_type"]["LGG"]["n"] == 15
    assert b["by_lesion_type"]["HGG"]["dice_max_n_nan"] == 1           # row 0 (HGG) is NaN


def test_hold_out_is_seeded_disjoint_and_floors_the_fraction():
    subj = [f"s{i:02d}" for i in range(25)]
    tr, va = hold_out(subj, 0.1, seed=0)
    assert len(va) == 2 and sorted(tr + va) == subj and not set(tr) & set(va)
    assert tr == sorted(tr) and hold_out(subj, 0.1, seed=0) == (tr, va)
    assert hold_out(subj, 0.1, seed=1) != (tr, va)
    assert hold_out(subj[:9], 0.1, seed=0) == (subj[:9], [])           # floor(0.9) = 0
    assert hold_out(subj, 0.0, seed=0) == (subj, [])


def test_run_holds_out_validation_subjects_and_writes_dice_at_thresholds(tmp_path, monkeypatch):
    """toy has no "val" split: 2 of its 10 training subjects are held out, never trained on,
    and the dice_fpr columns equal Dice of the written maps at the summary's thresholds."""
    import toydata

    import adbench.plugins as plugins
    from adbench.data.nifti import load_nifti
    from adbench.evaluation.volume import region_mask
    from adbench.rundir import read_per_volume
    from adbench.runner import run

    reg = plugins.build_registry(extra_plugins=[("toy", toydata, "adbench-tests 0")])
    monkeypatch.setattr(plugins, "_REGISTRY", reg)
    d = run("zscore", "toy", output=tmp_path / "runs", quiet=True, registry=reg,
            sets=["dataset.n_train=10", "dataset.n_test=2", "runner.val_holdout=0.2",
                  "runner.figures=false"])
    s = json.loads((d / "summary.json").read_text(),
                   parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    v = s["validation"]
    assert v["source"] == "held out from training" and len(v["subjects"]) == 2
    assert not set(v["subjects"]) & set(s["training_set"]["subjects"])
    assert len(s["training_set"]["subjects"]) == 8 and v["n_slices"] > 0
    t = s["thresholds"]["values"]
    for col, a in (("dice_fpr1", 0.01), ("dice_fpr5", 0.05)):
        assert abs(s["thresholds"]["validation_fpr"][col] - a) < 2 / v["n_voxels"] + 1e-9
    assert t["dice_fpr1"] > t["dice_fpr5"]
    rows = read_per_volume(d / "per_volume.csv")
    for r in rows:
        amap, aff = load_nifti(d / "maps" / f"{r['subject']}.nii.gz", what="map")
        les = load_nifti(d / "maps" / f"{r['subject']}_lesion.nii.gz", what="m")[0] > 0
        brain = load_nifti(d / "maps" / f"{r['subject']}_brain.nii.gz", what="m")[0] > 0
        region, _ = region_mask(les, brain)
        for col in ("dice_fpr1", "dice_fpr5"):
            p, y = amap[region] >= t[col], les[region]
            assert r[col] == pytest.approx(2 * np.sum(p & y) / (p.sum() + y.sum()), abs=1e-6)
        # world volume of the preprocessed mask (inside the brain): |det A| mm³ per voxel
        assert r["lesion_ml"] == pytest.approx(les.sum() * abs(np.linalg.det(aff[:3, :3])) / 1000)
    import csv
    with open(d / "per_volume.csv", newline="") as f:
        raw = list(csv.DictReader(f))
    assert [r["lesion_type"] for r in raw] == ["", ""]                  # toy records none
    assert s["dice_fpr1_n"] == 2 and "breakdowns" in s
