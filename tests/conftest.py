"""Shared test fixtures. Every test runs offline with private, temporary caches."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _offline_private_caches(monkeypatch, tmp_path_factory):
    """No test may download (ADBENCH_OFFLINE=1) or write to the user's caches.

    TORCH_HOME (torchvision's weights cache, ``torch.hub.get_dir()``) and ADBENCH_CACHE point
    at fresh temporary folders, outside the test's own ``tmp_path`` so its listing stays clean.
    """
    monkeypatch.setenv("ADBENCH_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path_factory.mktemp("adbench_cache")))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: small convolutions oversubscribe a 2-core
    machine badly (about 10x slower) when several processes share it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def synth_volumes(tmp_path_factory):
    """One folder of generated synth volumes for the whole session (generated lazily, by the
    first test that reads them; content-keyed, so every preset finds its own set); give it to a
    test with :func:`synthcache.cache_with_synth`."""
    return tmp_path_factory.mktemp("synth_volumes")

