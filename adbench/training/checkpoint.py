"""Atomic training checkpoints and the resume check by config digest.

A checkpoint is a flat dict of tensors, state dicts and plain values, written with
``torch.save`` to a temporary name and renamed (never half-written) and read back with
``weights_only=True`` (no code is unpickled). A sidecar ``<checkpoint>.sha256`` records its
checksum; a checkpoint that does not match it, or cannot be read, is moved aside with a
warning and training starts again from iteration 0 (no older checkpoint is kept: each would
cost as much disk as the latest), so a damaged file never stops every later run. It records
the training config as JSON; a resume with other settings than those that may change between
runs (the length, the intervals) is an error that names the differing keys.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable

import torch

from adbench.errors import CheckpointError
from adbench.io import CorruptCacheError, atomic_path, load_verified, quarantine

__all__ = ["config_digest", "save_checkpoint", "load_checkpoint", "CheckpointError"]


def _fixed(config: dict, mutable: Iterable[str]) -> dict:
    mutable = set(mutable)
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k not in mutable}


def config_digest(config: dict, mutable: Iterable[str] = ()) -> str:
    """Short hash of the settings that define a training (not those in ``mutable``): equal
    digests can resume each other's checkpoints."""
    return hashlib.sha256(json.dumps(_fixed(config, mutable), sort_keys=True).encode()).hexdigest()[:12]


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path, checksum=True) as tmp:
        torch.save(payload, tmp)


def _read(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in ("config", "seed", "iteration") if k not in state]
    if missing:
        raise KeyError(f"no {missing} entries; not a checkpoint of adbench's training loop")
    state["_config"] = json.loads(state["config"])
    return state


def load_checkpoint(path: Path, config: dict, seed: int, mutable: Iterable[str] = (),
                    log: logging.Logger | None = None) -> dict | None:
    """The checkpoint at ``path``, after checking it was written with ``config`` (up to the
    ``mutable`` keys) and ``seed``; None when there is none, or when it was unreadable (then
    it is moved aside to ``<name>.corrupt-<time>`` with a warning naming it)."""
    path = Path(path)
    try:
        state = load_verified(path, _read)
    except FileNotFoundError:
        return None
    except CorruptCacheError as exc:
        quarantine(path, exc.reason, "training starts again from iteration 0", log)
        return None
    saved, now = _fixed(state.pop("_config"), mutable), _fixed(config, mutable)
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    detail = {k: (saved.get(k), now.get(k)) for k in diff}
    if int(state["seed"]) != int(seed):
        detail["seed"] = (int(state["seed"]), int(seed))
    if detail:
        raise CheckpointError(f"{path}: checkpoint written with different settings (saved, now): "
                              f"{detail}; resume with the same config and seed, or use a new "
                              "workdir")
    return state
