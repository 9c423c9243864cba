"""The one slice rule: training selection, predicted slices, the evaluation region and
`adbench prepare`'s counts all come from select_slices, so they cannot disagree."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adbench.data.selection import SLICE_RULES, select_slices
from adbench.evaluation.volume import evaluate_volume, region_mask


def test_slice_rules():
    brain = np.zeros((10, 10, 5), bool)
    brain[:, :, 1:4] = True
    brain[:1, :1, 4] = True  # 1% brain: below min_brain_fraction
    lesion = np.zeros_like(brain)
    lesion[5, 5, 2] = True
    assert select_slices(brain, lesion, "lesion").tolist() == [2]
    assert select_slices(brain, lesion, "brain", 0.05).tolist() == [1, 2, 3]
    assert select_slices(brain, lesion, "all").tolist() == [1, 2, 3, 4]     # slices with brain
    assert select_slices(brain, None, "lesion").tolist() == []
    with pytest.raises(ValueError, match="slice rule 'some'"):
        select_slices(brain, lesion, "some")


def test_first_slice_at_one_percent_brain_is_excluded_everywhere():
    # the case that once diverged: prepare counted [1, 2, 3], the evaluation [0, 1, 2, 3]
    brain = np.zeros((10, 10, 4), bool)
    brain[0, 0, 0] = True                  # 1% of the slice
    brain[:, :, 1:] = True
    lesion = np.zeros_like(brain)
    lesion[4:6, 4:6, 2] = True
    amap = np.random.default_rng(0).random(brain.shape)
    assert select_slices(brain, lesion, "brain").tolist() == [1, 2, 3]
    region, n = region_mask(lesion, brain, slice_rule="brain")
    assert n == 3 and not region[:, :, 0].any()
    assert evaluate_volume(amap, lesion, brain, slice_rule="brain")["n_slices"] == 3


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rule=st.sampled_from(SLICE_RULES),
       fraction=st.sampled_from([0.0, 0.01, 0.05, 0.35, 1.0]))
def test_region_and_selection_cannot_diverge(seed, rule, fraction):
    rng = np.random.default_rng(seed)
    z = int(rng.integers(1, 7))
    brain = rng.random((6, 5, z)) < rng.random(z)          # per-slice brain density in [0, 1)
    lesion = brain & (rng.random(brain.shape) < 0.2) & (rng.random(z) < 0.5)
    sel = select_slices(brain, lesion, rule, fraction)
    region, n = region_mask(lesion, brain, slice_rule=rule, min_brain_fraction=fraction)
    mask = np.zeros(z, bool)
    mask[sel] = True
    assert n == len(sel)
    assert np.array_equal(region, brain & mask[None, None, :])
    amap = rng.random(brain.shape)
    assert evaluate_volume(amap, lesion, brain, slice_rule=rule,
                           min_brain_fraction=fraction)["n_slices"] == len(sel)
