"""The run folder (architecture §5): its file names, how each file is written, how it is read.

``runs/<dataset>/<method>/<run-id>/`` holds, written in this order:

==================  =========================================================================
``running.json``    while the run is in progress: the pid, host and start of its process
``config.yaml``     the fully resolved config, before any work
``log.txt``         the run's log
``model/``          ``model.json``: where the fitted model lives in the model cache
``maps/``           ``<subject>.nii.gz`` anomaly map; ``_image``, ``_brain``, ``_lesion`` beside it
``maps_native/``    ``<subject>.nii.gz`` the same map on the source scan's grid and affine
                    (:mod:`adbench.data.native`; overlays on the original scan)
``figures/``        overlay.png and roc_pr.png (ROC and precision-recall)
``per_volume.csv``  one row per test volume (floats in shortest round-trip form)
``summary.json``    last: its presence marks the run complete
``error.txt``       instead of summary.json when the run failed: the traceback; its first
                    line is "interrupted ..." when SIGINT or SIGTERM stopped it
==================  =========================================================================

:class:`RunFolder` creates a fresh folder (never reused) and writes these files atomically;
:func:`find_runs` and :func:`load_run` read them back and fail with the file name;
:func:`scan_runs` reads the complete ones and returns the state of the others instead.
:func:`run_state` tells the state of a folder without ``summary.json``: ``running``,
``killed`` (its marker names a process that is gone), ``interrupted``, ``failed``, or
``incomplete`` (no marker: stopped before markers existed).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import yaml

from adbench.errors import RunDirError
from adbench.evaluation.volume import ROW_KEYS
from adbench.io import (atomic_write, nan_from_null, read_yaml, safe_filename, save_nifti,
                        write_json, write_yaml)

__all__ = ["RunFolder", "RunRecord", "RunDirError", "RunState", "load_run", "find_runs",
           "scan_runs", "run_state", "unfinished_runs", "weights_key", "definitions_key",
           "map_subjects", "load_map_volume", "write_run", "write_per_volume", "read_per_volume",
           "PER_VOLUME_COLUMNS", "read_summary"]

CONFIG, LOG, PER_VOLUME, SUMMARY, ERROR = ("config.yaml", "log.txt", "per_volume.csv",
                                           "summary.json", "error.txt")
RUNNING = "running.json"
MAPS, FIGURES, MODEL = "maps", "figures", "model"
SIDECARS = ("_image", "_brain", "_lesion")
PER_VOLUME_COLUMNS = ("subject", *ROW_KEYS)


class RunFolder:
    """One run's folder, and the only writer of its files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, output: str | Path, dataset: str, method: str, seed: int) -> "RunFolder":
        """A new ``<output>/<dataset>/<method>/<timestamp>-seed<seed>[-i]`` (exclusive mkdir:
        two runs never share, or overwrite, a folder)."""
        base = Path(output) / dataset / method
        base.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for i in range(1000):
            d = base / (f"{stamp}-seed{seed}" + (f"-{i}" if i else ""))
            try:
                d.mkdir()
            except FileExistsError:
                continue
            folder = cls(d)
            write_json(d / RUNNING, process_identity())
            return folder
        raise RuntimeError(f"could not create a fresh run folder under {base}")

    @property
    def log_file(self) -> Path:
        return self.path / LOG

    @property
    def figures(self) -> Path:
        return self.path / FIGURES

    def write_config(self, config: dict) -> None:
        write_yaml(self.path / CONFIG, config)

    def write_model(self, info: dict) -> None:
        write_json(self.path / MODEL / "model.json", info)

    def write_map(self, subject: str, amap, image, brain, lesion, affine) -> None:
        """The anomaly map with the image and masks beside it, on the preprocessed grid."""
        d, sid = self.path / MAPS, safe_filename(subject)
        save_nifti(d / f"{sid}.nii.gz", np.asarray(amap, np.float32), affine)
        save_nifti(d / f"{sid}_image.nii.gz", np.asarray(image, np.float32), affine)
        save_nifti(d / f"{sid}_brain.nii.gz", np.asarray(brain).astype(np.uint8), affine)
        save_nifti(d / f"{sid}_lesion.nii.gz", np.asarray(lesion).astype(np.uint8), affine)

    def write_native_map(self, subject: str, amap, grid, *, slices=None) -> float:
        """The anomaly map on the source scan's grid (``grid``: a NativeGrid), in
        ``maps_native/``; returns the background value (:mod:`adbench.data.native`)."""
        from adbench.data.native import MAPS_NATIVE, write_native_map
        return write_native_map(self.path / MAPS_NATIVE / f"{safe_filename(subject)}.nii.gz",
                                amap, grid, slices=slices)

    def write_rows(self, rows: list[dict]) -> None:
        write_per_volume(self.path / PER_VOLUME, rows)

    def check_not_complete(self) -> None:
        """A folder with summary.json is complete and is never written again."""
        if (self.path / SUMMARY).exists():
            raise FileExistsError(f"{self.path}: already holds a complete run ({SUMMARY}); "
                                  "choose a new folder, runs are never overwritten")

    def write_summary(self, summary: dict) -> None:
        """Last: its presence marks the run complete."""
        self.check_not_complete()
        write_json(self.path / SUMMARY, summary)
        (self.path / RUNNING).unlink(missing_ok=True)

    def write_error(self, exc: BaseException) -> None:
        """``error.txt``: the traceback, under a first line "interrupted by SIGTERM ..." when
        a signal stopped the run (SIGINT raises KeyboardInterrupt, SIGTERM the runner's
        subclass of it)."""
        text = "".join(traceback.format_exception(exc))
        if isinstance(exc, KeyboardInterrupt):
            how = str(exc) or "interrupted by SIGINT (Ctrl-C)"
            text = (f"{how} at {time.strftime('%Y-%m-%d %H:%M:%S')}; the run is incomplete. "
                    f"Run the same command again: a new run folder, and the model cache "
                    f"resumes an interrupted fit.\n\n{text}")
        atomic_write(self.path / ERROR, text)
        (self.path / RUNNING).unlink(missing_ok=True)


@dataclass
class RunRecord:
    """One run folder, read."""

    path: Path
    summary: dict
    config: dict
    per_volume: list[dict]
    meta: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.summary.get("method") or self.config.get("method") or self.path.parent.name)

    @property
    def dataset(self) -> str:
        return str(self.summary.get("dataset") or self.config.get("dataset")
                   or self.path.parent.parent.name)

    @property
    def train_on(self) -> str:
        return str(self.summary.get("train_on") or self.config.get("train_on") or self.dataset)

    @property
    def seed(self) -> Any:
        return self.summary.get("seed", self.config.get("seed"))

    @property
    def preset(self) -> Any:
        return self.config.get("preset")

    @property
    def definitions(self) -> dict | None:
        return self.summary.get("definitions")

    @property
    def weights(self) -> Any:
        return self.summary.get("weights")

    def values(self, metric: str) -> dict[str, float]:
        """subject → value of ``metric`` (NaN kept) from per_volume.csv."""
        out = {}
        for r in self.per_volume:
            v = r.get(metric, math.nan)
            out[r["subject"]] = float(v) if isinstance(v, (int, float)) else math.nan
        return out


#: summary.json keys whose ``null`` is a NaN metric (strict JSON has no NaN)
NUMERIC_SUMMARY_KEYS = frozenset({"auroc", "dice_max", "auprc", "pooled_dice_max",
                                  "pooled_threshold", "slice_auroc"})


def _numeric_key(key: str) -> bool:
    return (key in NUMERIC_SUMMARY_KEYS or key.endswith(("_mean", "_std"))
            or key.startswith("extra_"))


def read_summary(path: str | Path) -> dict:
    """summary.json with its metrics' ``null`` read back as NaN."""
    return nan_from_null(json.loads(Path(path).read_text()), _numeric_key)


def load_run(path: str | Path) -> RunRecord:
    """Read summary.json, per_volume.csv and (if present) config.yaml of one run folder.

    Any file that is missing, unreadable or of the wrong shape is a RunDirError naming it.
    """
    path = Path(path)
    summary_p, pv_p, cfg_p = path / SUMMARY, path / PER_VOLUME, path / CONFIG
    for p in (summary_p, pv_p):
        if not p.is_file():
            raise RunDirError(f"{p}: missing; a run folder needs summary.json and per_volume.csv "
                              "(an interrupted run? re-run the same command to complete it)")
    try:
        summary = read_summary(summary_p)
    except json.JSONDecodeError as e:
        raise RunDirError(f"{summary_p}: not valid JSON ({e})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{summary_p}: cannot be read ({e})") from e
    try:
        per_volume = read_per_volume(pv_p)
    except OSError as e:
        raise RunDirError(f"{pv_p}: cannot be read ({e})") from e
    except ValueError as e:   # UnicodeDecodeError too
        raise RunDirError(str(e)) from e
    try:
        config = read_yaml(cfg_p) if cfg_p.is_file() else {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{cfg_p}: not readable YAML ({' '.join(str(e).split())})") from e
    for p, obj in ((summary_p, summary), (cfg_p, config or {})):
        if not isinstance(obj, dict):
            raise RunDirError(f"{p}: expected a mapping, got {type(obj).__name__}")
    return RunRecord(path=path, summary=summary, config=config or {}, per_volume=per_volume)


def _run_folders(root: Path) -> Iterator[Path]:
    """Run folders at or below ``root``: folders holding summary.json, running.json,
    error.txt or config.yaml (their maps/ and figures/ are not searched)."""
    for dirpath, dirs, files in os.walk(root):
        if {SUMMARY, RUNNING, ERROR, CONFIG} & set(files):
            dirs[:] = []
            yield Path(dirpath).resolve()
        else:
            dirs.sort()


def find_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Every complete run folder at or below ``paths`` (a folder holding summary.json), read
    and sorted by path. Strict: a path that does not exist, a path with no complete run at
    or below it, or a complete run that cannot be read is a RunDirError naming it
    (:func:`scan_runs` skips the last two instead)."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise RunDirError(f"{p}: no such run folder or folder of runs")
        hits = [d for d in _run_folders(p) if (d / SUMMARY).is_file()]
        if not hits:
            raise RunDirError(f"{p}: no run folder below it (no summary.json found); pass "
                              "runs/<dataset>/<method>/<run-id>/ or a folder above such folders")
        found.update(dict.fromkeys(hits))
    return [load_run(p) for p in sorted(found)]


def scan_runs(paths: Iterable[str | Path]) -> tuple[list[RunRecord], list[RunState]]:
    """Every run folder at or below ``paths``, for a reader that goes on past broken ones.

    Returns (the complete runs, read, sorted by path; the state of every folder left out,
    sorted by path): ``running``, ``killed``, ``interrupted``, ``failed`` or ``incomplete``
    (:func:`run_state`), ``unreadable`` (summary.json present, but a file cannot be read:
    the detail is the RunDirError's message) or ``empty`` (a path given that holds no run
    folder at all). Only a path that does not exist raises RunDirError.
    """
    complete: dict[Path, RunRecord] = {}
    skipped: dict[Path, RunState] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise RunDirError(f"{p}: no such run folder or folder of runs")
        folders = list(_run_folders(p))
        if not folders:
            skipped[p.resolve()] = RunState(p.resolve(), "empty", "no run folder at or below it "
                                            f"(no {SUMMARY}, {CONFIG}, {RUNNING} or {ERROR})")
        for d in folders:
            if d in complete or d in skipped:
                continue
            try:
                st = run_state(d)
            except OSError as e:
                st = RunState(d, "unreadable", f"cannot be read ({e})")
            if st.state != "complete":
                skipped[d] = st
                continue
            try:
                complete[d] = load_run(d)
            except RunDirError as e:
                skipped[d] = RunState(d, "unreadable", " ".join(str(e).split()))
    return ([complete[d] for d in sorted(complete)], [skipped[d] for d in sorted(skipped)])


# -- run state -------------------------------------------------------------------------------
def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (Linux): with the pid, it tells a
    process from a later one that got the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_identity() -> dict:
    """What ``running.json`` records of this process."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "boot_id": _boot_id(),
            "start_ticks": _start_ticks(pid), "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _alive(marker: dict) -> bool | None:
    """Whether the process a marker names still runs: None when it ran on another host."""
    if marker.get("host") != socket.gethostname():
        return None
    if marker.get("boot_id") and _boot_id() and marker["boot_id"] != _boot_id():
        return False  # the machine restarted since
    try:
        pid = int(marker.get("pid", -1))
    except (TypeError, ValueError):
        return False   # a damaged marker names no process
    if pid <= 0:
        return False
    if os.name == "nt":
        return None    # os.kill(pid, 0) would terminate the process on Windows: unknown
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    ticks = _start_ticks(pid)
    return not (marker.get("start_ticks") is not None and ticks is not None
                and ticks != marker["start_ticks"])


@dataclass
class RunState:
    """The state of one run folder: ``complete``, ``running``, ``killed``, ``interrupted``,
    ``failed`` or ``incomplete`` (and, from :func:`scan_runs`, ``unreadable`` or ``empty``),
    and a one-line detail."""

    path: Path
    state: str
    detail: str = ""


def run_state(path: str | Path) -> RunState:
    """Tell a finished, running, killed, interrupted or failed run folder apart."""
    path = Path(path)
    if (path / SUMMARY).is_file():
        return RunState(path, "complete")
    if (path / ERROR).is_file():
        lines = [ln for ln in (path / ERROR).read_text(errors="replace").splitlines() if ln.strip()]
        if lines and lines[0].startswith("interrupted"):
            return RunState(path, "interrupted", lines[0].split(";")[0])
        return RunState(path, "failed", lines[-1].strip() if lines else "empty error.txt")
    if (path / RUNNING).is_file():
        try:
            marker = json.loads((path / RUNNING).read_text())
            who = f"pid {marker['pid']} on {marker['host']}, started {marker.get('started', '?')}"
        except (OSError, ValueError, KeyError, TypeError):
            return RunState(path, "killed", f"{RUNNING} is unreadable")
        alive = _alive(marker)
        if alive is None:
            return RunState(path, "running", f"{who}; cannot check that host from here")
        if alive:
            return RunState(path, "running", who)
        return RunState(path, "killed", f"{who}: that process is gone, and left no "
                                        f"{SUMMARY} or {ERROR}")
    return RunState(path, "incomplete", f"no {SUMMARY}, {ERROR} or {RUNNING} (killed, or "
                                        f"written by an older adbench)")


def unfinished_runs(paths: Iterable[str | Path]) -> list[RunState]:
    """The state of every run folder at or below ``paths`` that has no summary.json (a folder
    holding running.json, error.txt or config.yaml), sorted by path; missing paths are
    skipped (:func:`find_runs` reports them)."""
    found = {d for p in map(Path, paths) if p.exists() for d in _run_folders(p)
             if not (d / SUMMARY).is_file()}
    return [run_state(d) for d in sorted(found)]


def _provenance_dicts(obj: Any, name: str = "") -> Iterator[tuple[str, dict]]:
    if isinstance(obj, dict):
        if "sha256" in obj or "source" in obj:
            yield str(obj.get("backbone") or name or "weights"), obj
        else:
            for k, v in obj.items():
                yield from _provenance_dicts(v, str(k))
    elif isinstance(obj, list):
        for v in obj:
            yield from _provenance_dicts(v, name)


def weights_key(weights: Any) -> tuple[tuple[str, str], ...]:
    """Comparable fingerprint of a run's weights provenance: ((backbone, identity), ...).

    identity is ``sha256:<hex>`` when known (the same file from env, path or torchvision's
    cache is the same weights), else ``source:<source>`` (plus `` seed:<n>`` for seeded random
    weights). Empty for runs without weights.
    """
    out = set()
    for backbone, d in _provenance_dicts(weights):
        ident = f"sha256:{d['sha256']}" if d.get("sha256") else f"source:{d.get('source')}"
        if not d.get("sha256") and d.get("seed") is not None:  # seeded random weights differ by seed
            ident += f" seed:{d['seed']}"
        out.add((backbone, ident))
    return tuple(sorted(out))


# The definitions that change a per-volume number; notes such as how slice AUROC was made do not.
TABLE_DEFINITION_KEYS = ("region_rule", "slice_rule", "min_brain_fraction", "auroc", "dice_variant", "auprc",
                         "nan_policy", "std_ddof")


def definitions_key(definitions: dict | None) -> str:
    """Canonical JSON of the definitions behind per-volume metrics ("unrecorded" when absent)."""
    if not definitions:
        return "unrecorded"
    return json.dumps({k: definitions.get(k) for k in TABLE_DEFINITION_KEYS}, sort_keys=True)


def map_subjects(run: RunRecord) -> list[str]:
    """Subjects with an anomaly map in ``run.path / "maps"`` (sidecars excluded), sorted."""
    d = run.path / MAPS
    if not d.is_dir():
        return []
    names = [p.name[:-len(".nii.gz")] for p in d.glob("*.nii.gz")]
    return sorted(n for n in names if not n.endswith(SIDECARS))


def load_map_volume(run: RunRecord, subject: str, *, with_image: bool = True) -> dict:
    """{"subject", "map", "lesion", "brain"[, "image"]} (H, W, Z) arrays from a run's maps/."""
    import nibabel as nib

    d = run.path / MAPS
    out: dict = {"subject": subject}
    parts = [("map", ""), ("lesion", "_lesion"), ("brain", "_brain")]
    if with_image:
        parts.append(("image", "_image"))
    for key, suffix in parts:
        p = d / f"{subject}{suffix}.nii.gz"
        if not p.is_file():
            raise RunDirError(f"{p}: missing beside the anomaly map of {subject!r}")
        a = np.asanyarray(nib.load(p).dataobj)
        out[key] = a.astype(bool) if key in ("lesion", "brain") else a.astype(np.float32)
    return out


def write_run(run_dir: str | Path, rows: list[dict], *, method: str, dataset: str,
              slice_rule: str = "lesion", train_on: str | None = None, seed: int | None = None,
              weights: Any = None, config: dict | None = None, extra: dict | None = None,
              definitions: dict | None = None) -> Path:
    """Write a run folder from per-volume rows computed elsewhere (e.g. ``adbench evaluate``).

    Writes config.yaml, per_volume.csv and, last, summary.json (whose presence marks a run
    complete), with the same summary keys and metric definitions as the runner, so maps made
    by any tool can join a leaderboard. ``definitions`` overrides the recorded definitions
    (default: :func:`adbench.evaluation.volume.definitions` of ``slice_rule``). Returns the folder.
    """
    from adbench.evaluation.metrics import summarize
    from adbench.evaluation.volume import definitions as _definitions

    folder = RunFolder(run_dir)
    folder.check_not_complete()   # before writing anything
    cfg = {"method": method, "dataset": dataset, "train_on": train_on or dataset, "seed": seed,
           "preset": None, "source": "adbench evaluate (external maps)", **(config or {})}
    folder.write_config(cfg)
    folder.write_rows(rows)
    folder.write_summary({"method": method, "dataset": dataset, "train_on": train_on or dataset,
                          "seed": seed, "n_volumes": len(rows), **summarize(rows),
                          "definitions": definitions or _definitions(slice_rule),
                          "weights": weights, **(extra or {})})
    return folder.path


# -- per_volume.csv ---------------------------------------------------------------------------
def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))  # shortest round-trip form: reading it back gives the same float
    return str(v)


def write_per_volume(path: str | Path, rows: list[dict]) -> None:
    """Write per-volume rows as CSV, atomically; columns :data:`PER_VOLUME_COLUMNS` first.

    Floats are written in their shortest round-trip form and NaN as ``nan``, so the runner and
    ``adbench evaluate`` produce byte-identical files for the same maps. Extra keys present in
    every row follow in the order of the first row.
    """
    extra = [k for k in (rows[0] if rows else {}) if k not in PER_VOLUME_COLUMNS]
    cols = [*PER_VOLUME_COLUMNS, *extra]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        missing = [c for c in cols if c not in r]
        if missing:
            raise ValueError(f"per-volume row for {r.get('subject')!r} lacks {missing}")
        w.writerow([_fmt(r[c]) for c in cols])
    atomic_write(path, buf.getvalue())


def read_per_volume(path: str | Path) -> list[dict]:
    """Rows of a per_volume.csv: metrics as floats (NaN kept), counts as int, subject as str."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "subject" not in reader.fieldnames:
            raise ValueError(f"{path}: not a per-volume CSV (no 'subject' column); "
                             f"expected columns {list(PER_VOLUME_COLUMNS)}")
        rows = []
        for r in reader:
            row: dict = {}
            for k, v in r.items():
                if k == "subject":
                    row[k] = v
                elif k.startswith("n_") and v.lstrip("-").isdigit():
                    row[k] = int(v)
                else:
                    try:
                        row[k] = float(v) if v != "" else math.nan
                    except ValueError:
                        row[k] = v
            rows.append(row)
    return rows
