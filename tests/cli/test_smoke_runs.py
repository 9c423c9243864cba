"""`adbench run --method M --dataset synth --preset smoke` for every built-in method, as CI runs it."""
from __future__ import annotations

import json
import math

import pytest
import yaml

from adbench.cli import main
from synthcache import cache_with_synth


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory, synth_volumes):
    # one cache for the module (every method runs on the same slices), synth generated once
    # per session
    return cache_with_synth(tmp_path_factory.mktemp("smoke_cache"), synth_volumes)


RECONSTRUCTION = ("scrps", "fanogan", "ganomaly", "memae")
HYBRID = ("draem", "realnet", "mediclip")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["zscore", "padim", "patchcore", "scrps", "fanogan", "ganomaly",
                                    "memae", "draem", "realnet", "mediclip"])
def test_smoke_run_on_synth(method, shared_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("ADBENCH_CACHE", str(shared_cache))
    out = tmp_path / "runs"
    argv = ["run", "--method", method, "--dataset", "synth", "--preset", "smoke", "-o", str(out), "-q"]
    if method == "mediclip":  # CLIP weights are never downloaded: random ones by name
        argv += ["--set", "clip_weights=random"]
    assert main(argv) == 0
    (run_dir,) = out.glob(f"synth/{method}/*")
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["n_volumes"] == 3 and s["model"]["status"] == "fitted"
    assert 0.0 <= s["auroc_mean"] <= 1.0 and not math.isnan(s["dice_max_mean"])
    assert len((run_dir / "per_volume.csv").read_text().splitlines()) == 1 + 3
    assert len(list((run_dir / "maps").glob("*_lesion.nii.gz"))) == 3
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["runner"]["weights"] == "random"  # smoke asks for random VGG16 by name
    if method in ("padim", "patchcore", "scrps"):  # VGG16 users record what they used
        assert any(v and v.get("source") == "random" for v in s["weights"].values())
    if method in HYBRID:  # hybrids keep their own segmentation map, and record its weights
        assert s["localisation"] == "native" and "perceptual" not in (s["weights"] or {})
        if method != "draem":  # DRAEM uses no pretrained network
            assert s["weights"]["method"]["source"] == "random"
    if method in RECONSTRUCTION:  # reconstructions are scored by the shared perceptual score
        assert s["localisation"].startswith("perceptual")
    if method in RECONSTRUCTION[1:]:  # and the native score of the method's paper on request
        assert main(argv + ["--set", "runner.localisation=native"]) == 0
        (native,) = [d for d in out.glob(f"synth/{method}/*") if d != run_dir]
        s2 = json.loads((native / "summary.json").read_text())
        assert s2["localisation"] == "native" and s2["model"]["status"] == "cached"
        assert not math.isnan(s2["auroc_mean"]) and s2["extra_score_mean"] >= 0
    if method == "zscore":  # the same command again reuses the cached data and model
        assert main(argv) == 0
        second = [d for d in out.glob("synth/zscore/*") if d != run_dir][0]
        s2 = json.loads((second / "summary.json").read_text())
        assert s2["model"]["status"] == "cached"
        assert (second / "per_volume.csv").read_text() == (run_dir / "per_volume.csv").read_text()
