"""benchmarks/perf/scrps_limits.py end to end at the smoke preset: the healthy counterparts
are paired with the test slices (the truth reference is the truth, the lesion is where the
input differs from it), and every reference is scored and drawn."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_smoke_limits_json_and_figure(tmp_path, synth_volumes, monkeypatch, capsys):
    from synthcache import benchmark_script, use_synth_cache

    use_synth_cache(monkeypatch, tmp_path / "cache", synth_volumes)
    n = 3
    mod = benchmark_script("scrps_limits")
    assert mod.main(["--preset", "smoke", "--n-slices", str(n), "--budget", "4",
                     "--workdir", str(tmp_path / "w"), "--set", 'weights="random"',
                     "--out", str(tmp_path / "l.json"), "--figure", str(tmp_path / "ev"),
                     "--figure-slices", "2"]) == 0
    out = json.loads((tmp_path / "l.json").read_text())
    assert out == json.loads(capsys.readouterr().out)
    assert out["n_slices"] == n and out["generator_best_steps"] == 4
    refs = out["references"]
    assert list(refs) == list(mod.REFERENCES)
    assert refs["healthy_truth"]["mse_to_truth_brain"] == 0.0      # the truth is the truth
    # the lesion's painted intensities are where the input departs from its counterpart
    iv = out["input_vs_truth"]
    assert iv["mse_lesion"] > 10 * iv["mse_outside_lesion"]
    for m in [*refs.values(), out["zscore"]]:
        assert 0 <= m["auroc"] <= 1 and 0 <= m["dice_max"] <= 1
    assert Path(out["figure"]).name == "ev-limits.png" and Path(out["figure"]).stat().st_size > 1000


def test_counterpart_slices_pair_with_the_test_slices(tmp_path, synth_volumes, monkeypatch):
    """Same subjects, slices and brain masks; outside the lesion the two images agree up to
    the per-volume equalisation (the lesion moves the histogram a little)."""
    import torch
    from synthcache import benchmark_script, use_synth_cache

    use_synth_cache(monkeypatch, tmp_path / "cache", synth_volumes)
    _, test, twin = benchmark_script("scrps_limits").paired_test_slices("smoke")
    assert test.subjects == twin.subjects and test.z.tolist() == twin.z.tolist()
    assert torch.equal(test.brain, twin.brain) and torch.equal(test.lesion, twin.lesion)
    out = test.brain & ~test.lesion
    d = (test.images[:, 0] - twin.images[:, 0]).abs()
    assert float(d[out].mean()) < 0.05 < float(d[test.lesion].mean())
