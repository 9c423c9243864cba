"""`adbench run` with a timm backbone chosen in the config: types, provenance, model cache."""
from __future__ import annotations

import json

import pytest
import yaml

from adbench.cli import main

pytest.importorskip("timm")


@pytest.mark.slow
def test_patchcore_smoke_run_on_a_timm_backbone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # empty: "random" is explicit
    out = tmp_path / "runs"
    base = ["run", "--method", "patchcore", "--dataset", "synth", "--preset", "smoke",
            "-o", str(out), "-q"]
    argv = base + ["--set", "backbone=timm/resnet18", "--set", "layers=[layer2, layer3]"]
    assert main(argv) == 0
    (run_dir,) = out.glob("synth/patchcore/*")
    s = json.loads((run_dir / "summary.json").read_text())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["method_config"]["backbone"] == "timm/resnet18"
    assert cfg["method_config"]["layers"] == ["layer2", "layer3"]
    assert s["model"]["status"] == "fitted" and 0.0 <= s["auroc_mean"] <= 1.0
    recorded = [v for v in s["weights"].values() if v]
    assert any(v.get("backbone") == "timm/resnet18" and v.get("source") == "random"
               for v in recorded), recorded
    # the backbone is part of the model-cache key: the VGG16 default is another model
    from adbench.model_cache import _model_key
    from adbench.runner import resolve

    sets = ["backbone=timm/resnet18", "layers=[layer2, layer3]"]
    timm_spec = resolve("patchcore", "synth", preset="smoke", sets=sets)
    vgg_spec = resolve("patchcore", "synth", preset="smoke")
    assert _model_key(timm_spec, "fp") != _model_key(vgg_spec, "fp")
    # a bad backbone name is refused before anything is written, naming the valid ones
    capsys.readouterr()
    assert main(base + ["--set", "backbone=vit_b16"]) == 2
    err = capsys.readouterr().err
    assert "'vit_b16'" in err and "'timm/<model>'" in err, err
    assert len(list(out.glob("synth/patchcore/*"))) == 1
