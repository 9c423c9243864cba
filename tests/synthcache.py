"""A fresh ADBENCH_CACHE on the session's shared synth volumes (fixture ``synth_volumes``)."""
from __future__ import annotations

from pathlib import Path


def cache_with_synth(cache, synth_volumes):
    """A fresh ADBENCH_CACHE folder whose ``synth/`` is the session's generated volumes: the
    data are shared, the slice and model caches are the folder's own, so which test fits a
    model first never changes what another test sees."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "synth").symlink_to(synth_volumes, target_is_directory=True)
    return cache


def use_synth_cache(monkeypatch, cache, synth_volumes) -> Path:
    """:func:`cache_with_synth` as this test's ADBENCH_CACHE, offline (nothing downloads)."""
    cache = cache_with_synth(cache, synth_volumes)
    monkeypatch.setenv("ADBENCH_CACHE", str(cache))
    monkeypatch.setenv("ADBENCH_OFFLINE", "1")
    return cache


def benchmark_script(name: str):
    """``benchmarks/perf/<name>.py`` loaded as a module (the folder is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "perf" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
