"""benchmarks/perf/inversion_init.py end to end at the smoke preset: its JSON is consistent
with itself and its evidence figures are written."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


@pytest.mark.slow
def test_smoke_measurement_json_and_figures(tmp_path, synth_volumes, monkeypatch, capsys):
    from synthcache import benchmark_script, use_synth_cache

    use_synth_cache(monkeypatch, tmp_path / "cache", synth_volumes)
    budget, n = 6, 3
    script = benchmark_script("inversion_init")
    assert script.main(["--preset", "smoke", "--n-slices", str(n), "--budget", str(budget),
                        "--workdir", str(tmp_path / "w"), "--set", 'weights="random"',
                        "--out", str(tmp_path / "m.json"), "--figure", str(tmp_path / "ev"),
                        "--figure-slices", "2"]) == 0
    out = json.loads((tmp_path / "m.json").read_text())
    assert out == json.loads(capsys.readouterr().out)      # printed and written alike
    assert out["n_slices"] == n and out["budget_steps"] == budget
    assert "not the paper's 2,000" in out["budget_note"]
    for name in ("mean", "encoder"):
        c = out["curves"][name]
        assert c["step"][0] == 0 and c["step"][-1] == budget - 1
        assert c["mean"][0] == pytest.approx(out["start_loss"][name])
        assert c["mean"][-1] == pytest.approx(out["final_loss"][name])
        assert all(lo <= mid <= hi for lo, mid, hi in zip(c["p10"], c["p50"], c["p90"]))
        m = out["maps"][f"{name}_init"]
        assert 0 <= m["auroc"] <= 1 and 0 <= m["dice_max"] <= 1
    stm = out["steps_to_match"]
    assert len(stm["per_slice"]) == n and all(-1 <= s < budget for s in stm["per_slice"])
    reached = [s for s in stm["per_slice"] if s >= 0]
    assert stm["fraction_reached"] == pytest.approx(len(reached) / n)
    r = out["maps"]["pearson_per_slice"]["values"]
    assert len(r) == n and all(math.isnan(v) or -1 - 1e-9 <= v <= 1 + 1e-9 for v in r)
    assert [Path(p).name for p in out["figures"]] == ["ev-curves.png", "ev-maps.png"]
    assert all(Path(p).stat().st_size > 1000 for p in out["figures"])
