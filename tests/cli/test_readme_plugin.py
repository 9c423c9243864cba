"""The README's plugin example, written out verbatim, installed with pip, listed and run."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- file: (?P<path>[^ ]+) -->\s*```[a-z]*\n(?P<body>.*?)```", re.S)


def readme_files() -> dict[str, str]:
    return {m["path"]: m["body"] for m in BLOCK.finditer(README.read_text())}


def test_readme_has_a_complete_plugin_package():
    files = readme_files()
    assert {"adbench-brightness/pyproject.toml", "adbench-brightness/adbench_brightness/plugin.py"} <= set(files)


@pytest.mark.slow
def test_plugin_from_readme_installs_lists_and_runs(tmp_path):
    for rel, body in readme_files().items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)
    pip = [sys.executable, "-m", "pip"]
    # --no-build-isolation: setuptools is already in the environment, nothing to download
    subprocess.run(pip + ["install", "-q", "--no-deps", "--no-build-isolation", "-e",
                          str(tmp_path / "adbench-brightness")], check=True)
    try:
        adbench = [sys.executable, "-m", "adbench.cli"]
        out = subprocess.run(adbench + ["list"], check=True, capture_output=True, text=True).stdout
        line = next(l for l in out.splitlines() if l.strip().startswith("brightness"))
        assert "brightness from adbench-brightness 0.1.0" in line
        runs = tmp_path / "runs"
        res = subprocess.run(adbench + ["run", "--method", "brightness", "--dataset", "synth", "--preset",
                                        "smoke", "--output", str(runs), "--quiet"],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        (summary,) = runs.glob("synth/brightness/*/summary.json")
        assert json.loads(summary.read_text())["n_volumes"] > 0
    finally:
        subprocess.run(pip + ["uninstall", "-q", "-y", "adbench-brightness"], check=True)
