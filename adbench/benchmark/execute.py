"""Run a grid's cells: the ``local`` executor (in this process, or one worker process per
GPU) and the ``ray`` executor (one Ray task per cell).

Every executor calls :func:`run_cell` on each cell, which runs the cell exactly as
``adbench run`` would (:func:`adbench.runner.execute`) into the grid's run root, and
returns a small JSON-able record: status, run folder, seconds and, for a failure, the
traceback. A cell's exception never escapes :func:`run_cell` (failure isolation), except
Ctrl-C/SIGTERM, which stops the grid.

Data, models and results travel through the filesystem, never through Ray's object store:
run folders, the model cache and the slice cache are files that the local executor uses
too, so a grid moves between executors and resumes; a Ray object would copy checkpoints of
GBs through the object store and vanish with the cluster. Ray workers therefore need the
run root and ``$ADBENCH_CACHE`` on a shared filesystem (the driver passes the paths).

Scheduling (all executors): the cells that fit a model run first (``first``), then the
cells that reuse one, so a worker does not sit waiting on the model cache's fit lock.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from adbench.benchmark.grid import Cell

__all__ = ["ENV_KEYS", "run_cell", "run_gpus", "run_local", "run_ray"]

#: environment passed to every worker: where caches and weights live, and offline mode
ENV_KEYS = ("ADBENCH_CACHE", "ADBENCH_OFFLINE", "ADBENCH_VGG16_WEIGHTS", "TORCH_HOME",
            "XDG_CACHE_HOME", "OMP_NUM_THREADS")

Payload = dict[str, Any]
OnResult = Callable[[Payload, dict], None]
#: called when a cell starts in a worker (``"running"``) or is handed to Ray (``"submitted"``)
OnStart = Callable[[Payload, str], None]


def _started(on_start: OnStart | None, p: Payload, status: str) -> None:
    if on_start is not None:
        on_start(p, status)


def payload(cell: Cell, cell_id: str, runs_root: Path) -> Payload:
    """What a worker needs to run a cell (JSON-able: crosses process and Ray boundaries)."""
    return {"cell": cell.to_dict(), "id": cell_id, "runs_root": str(Path(runs_root).resolve()),
            "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ}}


def _run_folders(base: Path) -> set[Path]:
    return {p for p in base.iterdir() if p.is_dir()} if base.is_dir() else set()


def run_cell(p: Payload) -> dict:
    """Resolve and run one cell; returns {"id", "status": "done"|"failed", "run_dir",
    "seconds", "error", "traceback", "host", "pid", "cuda_visible_devices"}."""
    os.environ.update(p.get("env") or {})
    cell = Cell.from_dict(p["cell"])
    root = Path(p["runs_root"])
    base = root / cell.dataset / cell.method
    before = _run_folders(base)
    out = {"id": p["id"], "host": socket.gethostname(), "pid": os.getpid(),
           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "error": None,
           "traceback": None}
    t0 = time.time()
    try:
        from adbench.runner import execute, resolve
        spec = resolve(**cell.resolve_kwargs())
        out.update(status="done", run_dir=str(execute(spec, output=root, quiet=True)))
    except Exception as exc:  # noqa: BLE001 - isolated: recorded in the grid report, the grid goes on
        new = sorted(_run_folders(base) - before)
        out.update(status="failed", run_dir=str(new[-1]) if new else None,
                   error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    out["seconds"] = round(time.time() - t0, 3)
    return out


def _waves(items: list[Payload], first: set[str]) -> list[list[Payload]]:
    a = [p for p in items if p["id"] in first]
    b = [p for p in items if p["id"] not in first]
    return [w for w in (a, b) if w]


def run_local(items: list[Payload], on_result: OnResult, on_start: OnStart | None = None) -> None:
    """Sequentially in this process (the plan's order already trains before reusing)."""
    for p in items:
        _started(on_start, p, "running")
        on_result(p, run_cell(p))


def _bind_gpu(gpu: str) -> None:
    # before torch initialises CUDA in this worker: it then sees one device, cuda:0
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def run_gpus(items: list[Payload], gpus: list[str], on_result: OnResult, first: set[str],
             on_start: OnStart | None = None) -> None:
    """One worker process per GPU (``--gpus 0,1``), each with ``CUDA_VISIBLE_DEVICES`` set
    to its GPU; a lane thread per GPU feeds its worker one cell at a time. The cells that
    fit run in the first wave, the cells that reuse a model after all fits are done."""
    ctx = multiprocessing.get_context("spawn")   # no CUDA state inherited from the parent
    pools = [cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=_bind_gpu, initargs=(g,))
             for g in gpus]
    lock = threading.Lock()
    try:
        for wave in _waves(items, first):
            queue = list(wave)

            def lane(pool, queue=queue):
                while True:
                    with lock:
                        if not queue:
                            return
                        p = queue.pop(0)
                        _started(on_start, p, "running")
                    try:
                        result = pool.submit(run_cell, p).result()
                    except Exception as exc:  # noqa: BLE001 - the worker died (e.g. the OOM killer)
                        result = {"id": p["id"], "status": "failed", "run_dir": None,
                                  "error": f"worker process failed: {type(exc).__name__}: {exc}",
                                  "traceback": traceback.format_exc(), "seconds": None}
                    with lock:
                        on_result(p, result)

            threads = [threading.Thread(target=lane, args=(pool,), daemon=True) for pool in pools]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        for pool in pools:
            pool.shutdown(cancel_futures=True)


def _resources(p: Payload) -> dict[str, float]:
    res = dict(p["cell"].get("resources") or {})
    gpu = str(p["cell"].get("device", "cpu")).startswith("cuda")
    return {"num_cpus": float(res.get("num_cpus", 1)),
            "num_gpus": float(res.get("num_gpus", 1 if gpu else 0))}


def run_ray(items: list[Payload], on_result: OnResult, first: set[str], *,
            address: str | None = None, init_kwargs: dict | None = None,
            on_start: OnStart | None = None) -> None:
    """One Ray task per cell, with its ``num_cpus``/``num_gpus`` (a CUDA cell asks for one GPU
    unless the grid's ``resources`` say otherwise; Ray sets ``CUDA_VISIBLE_DEVICES`` in the
    task). ``address``: an existing cluster (``auto`` inside a Slurm allocation that runs
    a Ray head); None starts a local instance (``init_kwargs``, e.g. ``num_cpus=2``)."""
    try:
        import ray
    except ImportError:
        from adbench.errors import ConfigError
        raise ConfigError('--executor ray needs Ray: pip install "adbench[ray]"') from None
    started = False
    if not ray.is_initialized():
        local = {} if address else {"include_dashboard": False}   # only when starting one
        ray.init(address=address, log_to_driver=False, **local, **(init_kwargs or {}))
        started = True
    try:
        task = ray.remote(max_retries=0)(run_cell)
        for wave in _waves(items, first):
            pending = {task.options(**_resources(p)).remote(p): p for p in wave}
            for p in wave:   # queued in Ray: which one runs when is Ray's to say
                _started(on_start, p, "submitted")
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    p = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - the task's worker died (OOM, node lost)
                        result = {"id": p["id"], "status": "failed", "run_dir": None,
                                  "error": f"ray task failed: {type(exc).__name__}: {exc}",
                                  "traceback": traceback.format_exc(), "seconds": None}
                    on_result(p, result)
    finally:
        if started:
            ray.shutdown()


def run(items: Iterable[Payload], on_result: OnResult, first: set[str], *, executor: str = "local",
        gpus: list[str] | None = None, address: str | None = None,
        init_kwargs: dict | None = None, on_start: OnStart | None = None) -> None:
    """Dispatch to the executor named by ``--executor`` (and ``--gpus`` for local)."""
    items = list(items)
    if executor == "ray":
        run_ray(items, on_result, first, address=address, init_kwargs=init_kwargs,
                on_start=on_start)
    elif gpus:
        run_gpus(items, gpus, on_result, first, on_start=on_start)
    else:
        run_local(items, on_result, on_start=on_start)
