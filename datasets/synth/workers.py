"""Worker processes that never outlive their parent (parallel synth generation).

A parent killed by SIGKILL, or by SIGTERM's default action, runs no cleanup; workers of a
plain ``ProcessPoolExecutor`` then stay alive and idle for ever (each holds both ends of the
task queue, so it never reads end-of-file), about 0.8 GB each for synth. :func:`worker_pool`
ties them to the parent instead.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Any, Iterator

__all__ = ["worker_pool"]


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[Any]:
    """A process pool whose workers never outlive this process.

    - an exception here (Ctrl-C included) ends the workers at once: a plain ``with
      ProcessPoolExecutor`` would first wait for every queued volume;
    - SIGTERM or SIGKILL of this process ends them through :func:`_worker_init`.
    "spawn" keeps torch's threads and locks out of the workers.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        _end_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _end_workers(pool: Any) -> None:
    procs = list((getattr(pool, "_processes", None) or {}).values())  # no public API before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(5)
        if p.is_alive():  # pragma: no cover - SIGTERM has no handler in a worker
            p.kill()
            p.join(5)


def _worker_init(parent_pid: int) -> None:
    """Bind a worker's life to its parent's (runs first in every worker).

    Ctrl-C signals the whole process group; the parent handles it by ending the pool, so a
    worker ignores SIGINT instead of dying mid-volume with a traceback of its own. On Linux
    the kernel kills the worker when its parent dies, by any signal (``PR_SET_PDEATHSIG``; it
    fires when the *thread* that started the worker ends, and :func:`worker_pool` is entered
    and left by one thread); elsewhere a daemon thread polls for the parent's death. A parent
    that died before this ran is caught by the ``getppid`` check.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _set_pdeathsig():
        import threading

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="adbench-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)


def _set_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        return libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return False
