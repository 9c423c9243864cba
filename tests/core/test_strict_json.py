"""Strict JSON everywhere: no bare NaN or Infinity in any JSON file a run writes (JavaScript's
JSON.parse rejects them), and NaN metrics come back as NaN."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import toydata

import adbench.plugins as plugins
from adbench.cli import main
from adbench.io import nan_from_null, strict_json
from adbench.rundir import load_run, read_summary


def _reject(name):
    raise ValueError(f"non-standard JSON constant {name}")


def test_strict_json_writes_null_for_non_finite_values():
    obj = {"a": math.nan, "b": [np.float32(np.inf), -math.inf, 1.5], "c": {"d": np.float64("nan")},
           "e": (1, 2), "f": np.bool_(True)}
    text = strict_json(obj)
    back = json.loads(text, parse_constant=_reject)
    assert back == {"a": None, "b": [None, None, 1.5], "c": {"d": None}, "e": [1, 2], "f": True}
    again = nan_from_null(back, lambda k: k in ("a", "d"))
    assert math.isnan(again["a"]) and math.isnan(again["c"]["d"]) and again["b"][0] is None


def test_every_json_file_of_a_run_is_strict(tmp_path, monkeypatch):
    reg = plugins.build_registry(extra_plugins=[("toy", toydata, "adbench-tests 0")])
    monkeypatch.setattr(plugins, "_REGISTRY", reg)
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    assert main(["run", "-m", "zscore", "-d", "toy", "--preset", "smoke", "-o", str(out),
                 "-q"]) == 0
    files = sorted(p for p in tmp_path.rglob("*.json*") if p.is_file() and
                   p.suffix in (".json", ".jsonl"))
    assert any(p.name == "summary.json" for p in files)
    for p in files:
        for line in (p.read_text().splitlines() if p.suffix == ".jsonl" else [p.read_text()]):
            json.loads(line, parse_constant=_reject)   # raises on NaN / Infinity
    (run_dir,) = out.glob("toy/zscore/*")
    raw = json.loads((run_dir / "summary.json").read_text())
    assert raw["slice_auroc"] is None      # undefined under the lesion slice rule
    assert math.isnan(read_summary(run_dir / "summary.json")["slice_auroc"])
    assert math.isnan(load_run(run_dir).summary["slice_auroc"])


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_write_json_never_raises_on_non_finite_numbers(tmp_path, value):
    from adbench.io import write_json
    write_json(tmp_path / "x.json", {"v": value, "arr": np.array([value, 1.0])})
    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=_reject) == \
        {"v": None, "arr": [None, 1.0]}
