"""Atomic training checkpoints and the resume check by config digest.

A checkpoint is a flat dict of tensors, state dicts and plain values, written with
``torch.save`` to a temporary name and renamed (never half-written) and read back with
``weights_only=True`` (no code is unpickled). It records the training config as JSON; a
resume with other settings than those that may change between runs (the length, the
intervals) is an error that names the differing keys.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import torch

from adbench.errors import CheckpointError
from adbench.io import atomic_path

__all__ = ["config_digest", "save_checkpoint", "load_checkpoint", "CheckpointError"]


def _fixed(config: dict, mutable: Iterable[str]) -> dict:
    mutable = set(mutable)
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k not in mutable}


def config_digest(config: dict, mutable: Iterable[str] = ()) -> str:
    """Short hash of the settings that define a training (not those in ``mutable``): equal
    digests can resume each other's checkpoints."""
    return hashlib.sha256(json.dumps(_fixed(config, mutable), sort_keys=True).encode()).hexdigest()[:12]


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, config: dict, seed: int, mutable: Iterable[str] = ()) -> dict:
    """The checkpoint at ``path``, after checking it was written with ``config`` (up to the
    ``mutable`` keys) and ``seed``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved, now = _fixed(json.loads(state["config"]), mutable), _fixed(config, mutable)
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    detail = {k: (saved.get(k), now.get(k)) for k in diff}
    if int(state["seed"]) != int(seed):
        detail["seed"] = (int(state["seed"]), int(seed))
    if detail:
        raise CheckpointError(f"{path}: checkpoint written with different settings (saved, now): "
                              f"{detail}; resume with the same config and seed, or use a new "
                              "workdir")
    return state
