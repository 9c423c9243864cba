"""Installable beside other tools: ranges in the package metadata, the tested torch pair only
in the constraints file that README's install command (and so CI) uses."""
from __future__ import annotations

import re
from importlib.metadata import requires
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
EXACT = re.compile(r"(===|==|~=)")


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return reqs


def test_package_metadata_has_no_exact_pins():
    pinned = [r for r in _requirements() if EXACT.search(r.split(";")[0])]
    assert not pinned, f"exact pins in pyproject.toml: {pinned}"
    installed = [r for r in (requires("adbench") or []) if EXACT.search(r.split(";")[0])]
    assert not installed, f"exact pins in the installed metadata: {installed}"


def test_torch_ranges_start_at_a_version_not_above_the_tested_pair():
    reqs = {re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0]: r for r in _requirements()}
    assert re.fullmatch(r"torch>=\d+\.\d+(\.\d+)?", reqs["torch"])
    assert re.fullmatch(r"torchvision>=\d+\.\d+(\.\d+)?", reqs["torchvision"])
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))

    def v(s):
        return tuple(int(x) for x in s.split("."))
    assert v(reqs["torch"].split(">=")[1]) <= v(pins["torch"])
    assert v(reqs["torchvision"].split(">=")[1]) <= v(pins["torchvision"])


def test_the_tested_pair_is_what_readme_and_ci_install():
    pins = (ROOT / "constraints.txt").read_text()
    assert "torch==2.14.1" in pins.splitlines() and "torchvision==0.29.1" in pins.splitlines()
    install = 'pip install -c constraints.txt -e ".[dev]"'
    assert install in (ROOT / "README.md").read_text()
    assert install in (ROOT / ".ci" / "run").read_text()
