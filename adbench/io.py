"""Small I/O helpers: cache location, atomic writes, NIfTI and safe loading.

Every file adbench writes goes through :func:`atomic_write` or :func:`atomic_path` (write to a
temporary name in the same folder, then ``os.replace``), so an interruption never leaves a
half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import yaml

__all__ = ["show_progress", "cache_dir", "atomic_path", "atomic_write", "write_json", "write_yaml", "read_yaml",
           "save_tensors", "load_tensors", "save_nifti", "json_tensor", "tensor_json",
           "file_sha256", "safe_filename"]


def show_progress(asked: bool | None = None) -> bool:
    """Whether to draw progress bars: ``asked`` when given (``--progress`` / ``--quiet``),
    else only when stderr is a terminal, so logs of batch jobs get no bar redraws."""
    if asked is not None:
        return bool(asked)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def cache_dir(*parts: str) -> Path:
    """``$ADBENCH_CACHE`` (default ``~/.cache/adbench``) joined with ``parts``; created."""
    root = os.environ.get("ADBENCH_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "adbench"
    p = base.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | Path, data: bytes | str) -> None:
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_yaml(path: str | Path, obj: Any) -> None:
    atomic_write(path, yaml.safe_dump(json.loads(json.dumps(obj, default=_jsonable)), sort_keys=False))


def read_yaml(path: str | Path) -> Any:
    with open(path) as f:
        return yaml.safe_load(f)


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save a flat dict of tensors atomically (torch format, loaded with weights_only)."""
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in tensors.items()}, tmp)


def load_tensors(path: str | Path, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """Load tensors saved by :func:`save_tensors`; never unpickles code."""
    return torch.load(path, map_location=map_location, weights_only=True)


def json_tensor(obj: Any) -> torch.Tensor:
    """A JSON-able object as a uint8 tensor, so it can live in a ``weights_only`` state dict."""
    return torch.tensor(list(json.dumps(obj).encode("utf-8")), dtype=torch.uint8)


def tensor_json(t: torch.Tensor) -> Any:
    """Inverse of :func:`json_tensor`."""
    return json.loads(bytes(t.tolist()).decode("utf-8"))


def safe_filename(name: str) -> str:
    """``name`` with every character other than letters, digits, ``-``, ``_`` and ``.``
    replaced by ``_`` (subject ids become file names)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, computed once per (path, size, mtime) in this process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def save_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write a NIfTI (.nii or .nii.gz) atomically."""
    import nibabel as nib

    path = Path(path)
    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    with atomic_path(path) as tmp:
        target = tmp.with_name(tmp.name + suffix)
        nib.save(img, target)
        os.replace(target, tmp)
