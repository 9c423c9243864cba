"""Reading run folders (architecture §5) for tables and figures.

A run folder ``runs/<dataset>/<method>/<run-id>/`` holds config.yaml, per_volume.csv,
summary.json, maps/ and figures/. :func:`find_runs` accepts run folders or any folder above
them; :func:`load_run` reads one and fails with the file name when something is missing.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from adbench.errors import RunDirError
from adbench.evaluation.volume import read_per_volume
from adbench.io import read_yaml

__all__ = ["RunRecord", "RunDirError", "load_run", "find_runs", "weights_key",
           "definitions_key", "map_subjects", "load_map_volume", "write_run"]

SIDECARS = ("_image", "_brain", "_lesion")


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


def load_run(path: str | Path) -> RunRecord:
    """Read summary.json, per_volume.csv and (if present) config.yaml of one run folder."""
    path = Path(path)
    summary_p, pv_p, cfg_p = path / "summary.json", path / "per_volume.csv", path / "config.yaml"
    for p in (summary_p, pv_p):
        if not p.is_file():
            raise RunDirError(f"{p}: missing; a run folder needs summary.json and per_volume.csv "
                              "(an interrupted run? re-run the same command to complete it)")
    try:
        summary = json.loads(summary_p.read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(f"{summary_p}: not valid JSON ({e})") from e
    try:
        per_volume = read_per_volume(pv_p)
    except ValueError as e:
        raise RunDirError(str(e)) from e
    config = read_yaml(cfg_p) if cfg_p.is_file() else {}
    return RunRecord(path=path, summary=summary, config=config or {}, per_volume=per_volume)


def find_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Every run folder at or below ``paths`` (a folder holding summary.json), sorted by path."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise RunDirError(f"{p}: no such run folder or folder of runs")
        if (p / "summary.json").is_file():
            found[p.resolve()] = None
            continue
        hits = sorted(q.parent.resolve() for q in p.rglob("summary.json"))
        if not hits:
            raise RunDirError(f"{p}: no run folder below it (no summary.json found); pass "
                              "runs/<dataset>/<method>/<run-id>/ or a folder above such folders")
        found.update(dict.fromkeys(hits))
    return [load_run(p) for p in sorted(found)]


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
    d = run.path / "maps"
    if not d.is_dir():
        return []
    names = [p.name[:-len(".nii.gz")] for p in d.glob("*.nii.gz")]
    return sorted(n for n in names if not n.endswith(SIDECARS))


def load_map_volume(run: RunRecord, subject: str, *, with_image: bool = True) -> dict:
    """{"subject", "map", "lesion", "brain"[, "image"]} (H, W, Z) arrays from a run's maps/."""
    import nibabel as nib

    d = run.path / "maps"
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
    from adbench.evaluation.volume import write_per_volume
    from adbench.io import write_json, write_yaml

    run_dir = Path(run_dir)
    if (run_dir / "summary.json").exists():
        raise FileExistsError(f"{run_dir}: already holds a complete run (summary.json); "
                              "choose a new folder, runs are never overwritten")
    cfg = {"method": method, "dataset": dataset, "train_on": train_on or dataset, "seed": seed,
           "preset": None, "source": "adbench evaluate (external maps)", **(config or {})}
    write_yaml(run_dir / "config.yaml", cfg)
    write_per_volume(run_dir / "per_volume.csv", rows)
    summary = {"method": method, "dataset": dataset, "train_on": train_on or dataset,
               "seed": seed, "n_volumes": len(rows), **summarize(rows),
               "definitions": definitions or _definitions(slice_rule), "weights": weights,
               **(extra or {})}
    write_json(run_dir / "summary.json", summary)
    return run_dir
