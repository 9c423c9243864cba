"""evaluate_volume: the region rule, slice rules and NaN policy on hand-built volumes."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from adbench.evaluation.volume import (DEFINITIONS, ROW_KEYS, definitions, evaluate_volume,
                                       region_mask)


def make_volume(seed=0, shape=(16, 12, 10)):
    rng = np.random.default_rng(seed)
    brain = np.zeros(shape, bool)
    brain[2:14, 2:10, 1:9] = True
    lesion = np.zeros(shape, bool)
    lesion[5:9, 4:7, 3:6] = True
    lesion[0, 0, 4] = True  # a lesion voxel outside the brain: never counted
    amap = (rng.random(shape) + 0.8 * lesion).astype(np.float32)
    amap[~brain] = 10.0  # background would inflate AUROC if it were counted
    return amap, lesion, brain


@pytest.mark.parametrize("rule,slices", [("lesion", [3, 4, 5]), ("brain", list(range(1, 9))),
                                         ("all", list(range(1, 9)))])   # slices with brain
def test_region_and_metrics_match_oracles(rule, slices):
    amap, lesion, brain = make_volume()
    row = evaluate_volume(amap, lesion, brain, slice_rule=rule)
    assert tuple(row) == ROW_KEYS
    sel = np.zeros(amap.shape[2], bool)
    sel[slices] = True
    region = brain & sel
    s, y = amap[region], lesion[region]
    assert row["n_voxels"] == region.sum()
    assert row["n_lesion_voxels"] == y.sum() == 4 * 3 * 3
    assert row["n_slices"] == len(slices)
    assert row["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert row["auprc"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    best = max(2 * np.sum((s >= t) & y) / ((s >= t).sum() + y.sum()) for t in np.unique(s))
    assert row["dice_max"] == pytest.approx(best, abs=1e-12)
    r, n = region_mask(lesion, brain, slice_rule=rule)
    assert (r == region).all() and n == len(slices)


def test_background_is_excluded():
    amap, lesion, brain = make_volume()
    low = amap.copy()
    low[~brain] = -10.0
    assert evaluate_volume(amap, lesion, brain) == evaluate_volume(low, lesion, brain)


def test_one_class_gives_nan_not_error():
    amap, lesion, brain = make_volume()
    row = evaluate_volume(amap, np.zeros_like(lesion), brain, slice_rule="brain")
    assert all(math.isnan(row[k]) for k in ("auroc", "dice_max", "auprc"))
    assert row["n_lesion_voxels"] == 0 and row["n_voxels"] == brain.sum()
    # With the lesion rule and no lesion, no slice is selected: empty region, still NaN.
    row = evaluate_volume(amap, np.zeros_like(lesion), brain)
    assert row["n_voxels"] == 0 and row["n_slices"] == 0 and math.isnan(row["auroc"])


def test_errors_name_the_problem():
    amap, lesion, brain = make_volume()
    with pytest.raises(ValueError, match="lesion shape"):
        evaluate_volume(amap, lesion[:, :, :5], brain)
    with pytest.raises(ValueError, match=r"\(H, W, Z\)"):
        evaluate_volume(amap[:, :, 0], lesion[:, :, 0], brain[:, :, 0])
    bad = amap.copy()
    bad[6, 5, 4] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_volume(bad, lesion, brain)
    bad[6, 5, 4] = 0.0
    bad[0, 0, 0] = np.nan  # outside the region: irrelevant
    evaluate_volume(bad, lesion, brain)
    with pytest.raises(ValueError, match="slice rule"):
        evaluate_volume(amap, lesion, brain, slice_rule="lesions")


def test_definitions_record_the_rules():
    assert DEFINITIONS["slice_rule"] == "lesion" and DEFINITIONS["std_ddof"] == 1
    d = definitions("brain")
    assert d["slice_rule"] == "brain" and d["region_rule"] == DEFINITIONS["region_rule"]
    assert DEFINITIONS["slice_rule"] == "lesion"  # a copy, not a mutation


def test_per_volume_csv_round_trip(tmp_path):
    from adbench.rundir import read_per_volume, write_per_volume
    amap, lesion, brain = make_volume()
    rows = [{"subject": "a", **evaluate_volume(amap, lesion, brain)},
            {"subject": "b", **evaluate_volume(amap, np.zeros_like(lesion), brain, slice_rule="brain")}]
    p = tmp_path / "per_volume.csv"
    write_per_volume(p, rows)
    back = read_per_volume(p)
    assert back[0] == rows[0]  # floats survive exactly
    assert math.isnan(back[1]["auroc"]) and back[1]["n_voxels"] == rows[1]["n_voxels"]
    assert p.read_text().splitlines()[0] == "subject,auroc,dice_max,auprc,n_voxels,n_lesion_voxels,n_slices"
