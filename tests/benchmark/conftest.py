"""Fixtures of the benchmark-grid tests: one synth cache for all of them, small grid files."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def grid_cache(tmp_path_factory, synth_volumes):
    """One ADBENCH_CACHE for every grid test, on the session's synth volumes."""
    from synthcache import cache_with_synth

    return cache_with_synth(tmp_path_factory.mktemp("grid_cache"), synth_volumes)


@pytest.fixture
def shared_cache(grid_cache, monkeypatch):
    monkeypatch.setenv("ADBENCH_CACHE", str(grid_cache))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return grid_cache


def write_grid(folder: Path, text: str, name: str = "grid.yaml") -> Path:
    path = Path(folder) / name
    path.write_text(textwrap.dedent(text))
    return path


#: zscore at the smoke preset, eps swept (a predict key: one fit per seed), no figures
ZSCORE_2X2 = """\
    name: {name}
    datasets: [synth]
    seeds: [0, 1]
    preset: smoke
    settings: {{runner.figures: false, runner.write_maps: false}}
    methods: [zscore]
    sweep:
      zscore.eps: [0.05, 5.0]
"""
