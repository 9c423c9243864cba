"""File locks and merge-on-write updates of shared JSON files (cache manifests).

Two runs on one cache each read a manifest, add their entries and write it back; without a
lock the second write drops the first one's entries (a lost update). :func:`update_json`
closes that race: under an exclusive lock on ``<file>.lock`` it re-reads the file, applies
the caller's change to what is on disk *now* and writes the result atomically
(:func:`adbench.io.write_json`), so concurrent writers with distinct entries all keep theirs.

The lock is advisory (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows): it orders
adbench processes, not other programs. The kernel releases it when its holder dies, even by
SIGKILL, so a killed run never leaves a cache locked. Lock files are left in place on
purpose: deleting one while another process waits on it would let a third process lock a
new file of the same name, and two writers would again run at once.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from adbench.io import write_json

__all__ = ["LockTimeout", "file_lock", "lock_path", "read_json", "update_json"]


class LockTimeout(TimeoutError):
    """The lock was not obtained within the timeout (another process holds it)."""


def lock_path(path: str | Path) -> Path:
    """The lock file guarding ``path``: ``<path>.lock`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def file_lock(path: str | Path, *, timeout: float | None = 600.0) -> Iterator[Path]:
    """Hold an exclusive lock guarding ``path`` (on ``<path>.lock``) for the ``with`` block.

    timeout: seconds to wait for a lock held by another process (None: forever). A manifest
    update holds it for milliseconds, so a long wait means a stuck process, which the
    error names.
    """
    lp = lock_path(path)
    lp.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _acquire(fd, lp, timeout)
        try:
            yield lp
        finally:
            _release(fd)
    finally:
        os.close(fd)


def read_json(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; {} when the file is missing, unreadable or not an object
    (a cache manifest is bookkeeping that its owner rebuilds, never a reason to stop)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def update_json(path: str | Path, change: Callable[[dict[str, Any]], dict[str, Any] | None], *,
                timeout: float | None = 600.0) -> dict[str, Any]:
    """Merge-on-write: under the lock, ``change(current)`` edits (or returns a replacement
    for) the object now on disk, which is then written atomically. Returns what was written.

    ``current`` is re-read under the lock, so ``change`` must add or remove only its own
    entries, never write back a copy read earlier.
    """
    with file_lock(path, timeout=timeout):
        current = read_json(path)
        new = change(current)
        obj = current if new is None else new
        write_json(path, obj)
        return obj


if os.name == "nt":  # pragma: no cover - the test machines are POSIX
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _release(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _release(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _acquire(fd: int, lp: Path, timeout: float | None) -> None:
    # polling rather than a blocking flock: a blocking call cannot time out, and a Ctrl-C
    # during it would only be seen once the lock is free
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.001
    while not _try_lock(fd):
        if deadline is not None and time.monotonic() >= deadline:
            raise LockTimeout(f"{lp}: another process has held this lock for over {timeout:g} s "
                              f"(expected milliseconds: it guards a manifest update); find it "
                              f"with `fuser {lp}` and end it if it is stuck")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
