"""Small I/O helpers: cache location, atomic writes, verified reads, NIfTI and safe loading.

Every file adbench writes goes through :func:`atomic_write` or :func:`atomic_path` (write to a
temporary name in the same folder, then ``os.replace``), so an interruption never leaves a
half-written file under the final name. Files get the mode the process umask gives
(0644 under umask 022), like files of any other tool, although the temporary file is 0600.

A cached artefact (model state, training checkpoint, repository chunk, cache manifest) is
written with ``checksum=True``: a sidecar ``<file>.sha256`` records the sha256 of its bytes.
:func:`load_verified` checks it and turns any failure to read the file into a
:class:`CorruptCacheError` naming the file; the caller then moves the file aside with
:func:`quarantine` (renamed to ``<file>.corrupt-<time>``, with a one-line warning) and
rebuilds it, as the slice cache does with its entries. Files written before sidecars existed
are verified by loading them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import yaml

from adbench.errors import DataError

__all__ = ["show_progress", "cache_dir", "atomic_path", "atomic_write", "write_json", "strict_json",
           "nan_from_null", "write_yaml", "read_yaml",
           "save_tensors", "load_tensors", "save_nifti", "json_tensor", "tensor_json",
           "file_sha256", "safe_filename", "CorruptCacheError", "UnreadableFileError",
           "NotAFileError", "checksum_path", "verify_checksum", "load_verified",
           "read_json_verified", "quarantine", "created_mode"]

log = logging.getLogger("adbench")


class CorruptCacheError(DataError):
    """A cached file that cannot be trusted: unreadable, truncated, or not matching the
    checksum recorded beside it. ``path`` is the file, ``reason`` what is wrong with it."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


class UnreadableFileError(DataError, PermissionError):
    """A file this process may not read. A DataError (a subject is skipped, the command line
    exits 2 with the message) and a PermissionError (callers catching that still do)."""


class NotAFileError(DataError, IsADirectoryError):
    """A directory where a file is expected (e.g. a folder named like an OpenBHB ``.npy``)."""


def created_mode() -> int:
    """The mode a new file gets from the process umask: ``0o666 & ~umask``."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # /proc gives the umask without changing it; os.umask can only read it by setting it,
    # which another thread could see for a moment.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


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
def atomic_path(path: str | Path, *, checksum: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The file gets the umask's mode (mkstemp makes it 0600). With ``checksum``, the sha256 of
    the bytes written goes to the sidecar ``<path>.sha256``: the old sidecar is removed before
    the rename and the new one written after it, so a crash in between leaves a file without
    a sidecar (verified by loading), never a file with a stale one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, created_mode())
        digest = _sha256_bytes(tmp_path) if checksum else None
        if checksum:
            checksum_path(path).unlink(missing_ok=True)
        os.replace(tmp_path, path)
        if digest is not None:
            atomic_write(checksum_path(path), f"{digest}  {path.name}\n")
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | Path, data: bytes | str, *, checksum: bool = False) -> None:
    with atomic_path(path, checksum=checksum) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)


def strict_json(obj: Any, **dumps_kwargs: Any) -> str:
    """``json.dumps`` that any strict parser reads (JavaScript's ``JSON.parse``): NaN and
    ±inf become ``null`` (read them back with :func:`nan_from_null`); numpy, torch, Path,
    set and tuple values become JSON types."""
    return json.dumps(_finite(obj), allow_nan=False, **dumps_kwargs)


def _finite(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, set)):
        return [_finite(v) for v in o]
    if isinstance(o, bool) or o is None or isinstance(o, (str, int)):
        return o
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    return _finite(_jsonable(o))


def nan_from_null(obj: Any, keys: Callable[[str], bool]) -> Any:
    """``obj`` read from strict JSON with the ``null`` of every key ``keys(name)`` accepts
    (a numeric field) back as NaN, at any depth."""
    if isinstance(obj, dict):
        return {k: (math.nan if v is None and keys(k) else nan_from_null(v, keys))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_from_null(v, keys) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any, *, checksum: bool = False) -> None:
    atomic_write(path, strict_json(obj, indent=2, sort_keys=False) + "\n", checksum=checksum)


def write_yaml(path: str | Path, obj: Any) -> None:
    atomic_write(path, yaml.safe_dump(json.loads(json.dumps(obj, default=_jsonable)), sort_keys=False))


def read_yaml(path: str | Path) -> Any:
    with open(path) as f:
        return yaml.safe_load(f)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.bool_):
        return bool(o)
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
    """Save a flat dict of tensors atomically (torch format, loaded with weights_only), with
    its ``.sha256`` sidecar."""
    with atomic_path(path, checksum=True) as tmp:
        torch.save({k: v.detach().cpu() for k, v in tensors.items()}, tmp)


def load_tensors(path: str | Path, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """Load tensors saved by :func:`save_tensors`; never unpickles code. A file that does not
    match its sidecar or cannot be read raises :class:`CorruptCacheError` naming it."""
    return load_verified(path, lambda p: torch.load(p, map_location=map_location, weights_only=True))


# -- verified reads -----------------------------------------------------------------------
def checksum_path(path: str | Path) -> Path:
    """The sidecar ``<path>.sha256`` that :func:`atomic_path` writes with ``checksum=True``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _sha256_bytes(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: str | Path) -> bool:
    """Check ``path`` against its sidecar: True when it matches, False when there is no
    sidecar (a file from before sidecars: the caller verifies it by loading it).
    Raises :class:`CorruptCacheError` on a mismatch or an unreadable sidecar."""
    path = Path(path)
    side = checksum_path(path)
    try:
        recorded = side.read_text().split()
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptCacheError(path, f"its checksum file {side.name} is unreadable "
                                      f"({exc})") from None
    if not recorded or len(recorded[0]) != 64:
        raise CorruptCacheError(path, f"its checksum file {side.name} holds no sha256")
    got = _sha256_bytes(path)
    if got != recorded[0]:
        raise CorruptCacheError(path, f"sha256 {got[:12]}… does not match {recorded[0][:12]}… "
                                      f"recorded in {side.name} (the file changed after it was "
                                      f"written: truncated or damaged)")
    return True


def load_verified(path: str | Path, loader):
    """``loader(path)`` after :func:`verify_checksum`; a failure to read the file becomes a
    :class:`CorruptCacheError` naming it. Passed through unchanged, since moving the file
    aside would not help: every OSError (missing, not permitted, an I/O or NFS error),
    MemoryError and allocator failures, and any loader error on a file whose sidecar
    verified (its bytes are the ones written: the fault is elsewhere)."""
    path = Path(path)
    verified = verify_checksum(path)
    try:
        return loader(path)
    except (CorruptCacheError, OSError, MemoryError):
        raise
    except Exception as exc:  # torch, safetensors, zip and json each raise their own types
        if verified or _out_of_memory(exc):
            raise
        detail = (str(exc).splitlines() or [repr(exc)])[0]
        detail = detail if len(detail) <= 160 else detail[:159] + "…"
        raise CorruptCacheError(path, f"unreadable ({type(exc).__name__}: {detail})") from exc


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "out of memory" in text or "not enough memory" in text


def read_json_verified(path: str | Path) -> Any:
    """A JSON file, verified like :func:`load_verified` (write it with ``checksum=True``)."""
    return load_verified(path, lambda p: json.loads(p.read_text()))


def quarantine(path: str | Path, reason: str, action: str,
               logger: logging.Logger | None = None) -> Path | None:
    """Move a corrupt cache file (and its sidecar) aside to ``<name>.corrupt-<time>`` and warn
    in one line: the file, ``reason`` and ``action`` (what happens instead, e.g. "fitting
    again"). Kept, not deleted, so the damage can be looked at. Returns the new path, or None
    when the file was already gone (another process moved it)."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    i = 1
    while target.exists():
        target, i = path.with_name(f"{path.name}.corrupt-{stamp}-{i}"), i + 1
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    side = checksum_path(path)
    with contextlib.suppress(FileNotFoundError):
        os.replace(side, target.with_name(target.name.replace(path.name, side.name, 1)))
    (logger or log).warning("%s: %s; moved aside to %s, %s", path, reason, target.name, action)
    return target


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


_SHA_CACHE: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, computed once per version of the file in this process.

    A version is (path, device, inode, size, mtime, ctime): a replaced file (new inode) or a
    changed mode (new ctime) is hashed again. The file is opened on every call, memo or not,
    so a file that became unreadable raises :class:`UnreadableFileError` instead of being
    reported with its old hash; a directory raises :class:`NotAFileError`.
    """
    p = Path(path).resolve()
    st = p.stat()
    if not os.path.isfile(p):
        what = "a directory" if p.is_dir() else "not a regular file"
        raise NotAFileError(f"{path}: is {what}, expected a file; remove or rename it, or "
                            f"point at the file itself")
    key = (str(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    try:
        with open(p, "rb") as f:
            if key not in _SHA_CACHE:
                h = hashlib.sha256()
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
                _SHA_CACHE[key] = h.hexdigest()
    except PermissionError as exc:
        raise UnreadableFileError(f"{path}: not readable by this user ({exc.strerror}); fix "
                                  f"its permissions (chmod a+r) or run as a user who may read "
                                  f"it") from None
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
