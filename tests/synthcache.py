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
