"""The tidy results table: one row per (run, test volume), every metric a column.

:func:`collect` reads run folders (architecture §5) into a :class:`pandas.DataFrame` for
one's own analyses (groupby, plots, models) and is what the leaderboard is built from
(:func:`adbench.report.tables.build_leaderboard` takes the frame, filtered or not).

Columns, in this order:

==================  =========================================================================
``run_dir``         the run folder, absolute (str)
``method``          method name
``dataset``         test dataset
``train_on``        training dataset (the test dataset's own train split: its name)
``preset``          config preset (``cpu-quick``, ``paper``, ...; None when unset)
``seed``            the run's seed
``overrides``       the config keys whose values differ among the collected runs of this
                    method, as ``--set`` names them: ``"l2=6, dataset.n_test=5"`` ("" if none)
``config.<key>``    one column per such key (``config.l2``, ``config.dataset.n_test``), the
                    run's value (JSON text for lists and mappings; None where the run lacks it)
``subject``         the test volume
...                 every column of the run's per_volume.csv, in its order (``auroc``,
                    ``dice_max``, ``auprc``, counts ``n_*``, and any added later such as
                    ``lesion_ml``): metrics as float with NaN kept, counts as int
==================  =========================================================================

Incomplete or unreadable run folders are skipped, each with a :class:`RunSkipped` warning
naming the folder and its state (as ``adbench leaderboard`` does, :func:`adbench.rundir.
scan_runs`); a path that does not exist is a :class:`~adbench.errors.RunDirError`.

``frame.attrs`` holds ``"runs"`` (run_dir → :class:`~adbench.rundir.RunRecord`, so the
leaderboard needs no second read), ``"skipped"`` (one line per skipped folder) and
``"per_volume_columns"``. A frame read back from a CSV has no attrs: the leaderboard then
re-reads each ``run_dir`` for its config, and takes the per-volume values from the frame.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from adbench.report.identity import UNSET, format_item, identity, key_name, row_keys, row_labels
from adbench.rundir import RunRecord, load_run, scan_runs

__all__ = ["collect", "frame_from_runs", "as_frame", "records", "RunSkipped", "RUN_COLUMNS"]

#: the run-level columns, before ``config.<key>``, ``subject`` and the per-volume columns
RUN_COLUMNS = ("run_dir", "method", "dataset", "train_on", "preset", "seed", "overrides")


class RunSkipped(UserWarning):
    """A run folder left out of :func:`collect` (running, killed, failed, unreadable, ...)."""


def collect(run_dirs: str | Path | Iterable[str | Path], *, warn: bool = True):
    """One row per (run, test volume) of every complete run at or below ``run_dirs``.

    run_dirs: a run folder, a folder above run folders (``runs/``), or several. Returns a
    :class:`pandas.DataFrame` with the columns in the module docstring, rows sorted by run
    folder then in per_volume.csv order. ``warn=False`` skips the :class:`RunSkipped`
    warnings (the lines stay in ``frame.attrs["skipped"]``).
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    runs, skipped = scan_runs(list(run_dirs))
    notes = [f"{st.path}: {st.state}" + (f" ({st.detail})" if st.detail else "") + "; skipped"
             for st in skipped]
    if warn:
        for line in notes:
            warnings.warn(line, RunSkipped, stacklevel=2)
    frame = frame_from_runs(runs)
    frame.attrs["skipped"] = notes
    return frame


def _cell(v):
    if v is UNSET:
        return None
    return json.dumps(v, default=str) if isinstance(v, (list, dict, tuple)) else v


def frame_from_runs(runs: list[RunRecord]):
    """The :func:`collect` frame of runs already read."""
    import pandas as pd

    keys = row_keys(runs)
    values: dict[tuple, dict] = {}
    for r in runs:
        ident = identity(r)
        values.setdefault(keys[id(r)], {n: ident.get(n, UNSET) for n, _ in keys[id(r)][1]})
    info = row_labels(sorted(set(keys.values()), key=str), values)
    pv_cols: list[str] = []
    for r in runs:
        for row in r.per_volume:
            pv_cols.extend(k for k in row if k not in pv_cols)
    cfg_cols: list[str] = []
    rows = []
    for r in sorted(runs, key=lambda x: str(x.path)):
        differs = [(k, v) for k, v in info[keys[id(r)]]["differs"]]
        cfg = {}
        for k, v in differs:
            name = f"config.{key_name(k)}"
            cfg[name] = _cell(v)
            if name not in cfg_cols:
                cfg_cols.append(name)
        base = {"run_dir": str(r.path), "method": r.method, "dataset": r.dataset,
                "train_on": r.train_on, "preset": r.preset, "seed": r.seed,
                "overrides": ", ".join(format_item(k, v) for k, v in differs if v is not UNSET)}
        for pv in r.per_volume:
            rows.append({**base, **cfg, **pv})
    cols = [*RUN_COLUMNS, *cfg_cols, *pv_cols]
    frame = pd.DataFrame(rows, columns=cols)
    for c in pv_cols:   # a column some runs lack (an older adbench): NaN, never a silent 0
        if c != "subject" and not c.startswith("n_") and frame[c].dtype == object:
            num = pd.to_numeric(frame[c], errors="coerce")
            if num.notna().sum() == frame[c].notna().sum():
                frame[c] = num.astype(float)
    frame.attrs.update(runs={str(r.path): r for r in runs}, per_volume_columns=pv_cols,
                       skipped=[])
    return frame


def as_frame(data):
    """``data`` as a :func:`collect` frame: a frame is returned as is, a list of
    :class:`~adbench.rundir.RunRecord` is turned into one."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        missing = [c for c in ("run_dir", "subject") if c not in data.columns]
        if missing:
            raise ValueError(f"the results frame lacks the columns {missing}; expected the "
                             "frame of adbench.report.collect(run_dirs) (columns "
                             f"{list(RUN_COLUMNS)}, subject, metrics)")
        return data
    return frame_from_runs(list(data))


def _value(v):
    if hasattr(v, "item"):
        v = v.item()           # numpy scalar → Python
    if isinstance(v, float) and math.isnan(v):
        return math.nan
    return v


def records(frame) -> list[RunRecord]:
    """One :class:`~adbench.rundir.RunRecord` per ``run_dir`` of the frame, whose per_volume
    holds the frame's rows of that run (only those: a filtered frame gives fewer volumes),
    with the per-volume columns as values; config and summary from ``frame.attrs["runs"]``
    or, for a frame without attrs, read again from the folder."""
    known = frame.attrs.get("runs") or {}
    pv_cols = frame.attrs.get("per_volume_columns")
    if not pv_cols:
        pv_cols = [c for c in frame.columns if c not in RUN_COLUMNS and not c.startswith("config.")]
    pv_cols = [c for c in pv_cols if c in frame.columns]
    out = []
    for path, group in frame.groupby("run_dir", sort=True):
        base = known.get(path) or load_run(path)
        rows = [{c: _value(v) for c, v in zip(pv_cols, vals)}
                for vals in group[pv_cols].itertuples(index=False, name=None)]
        for row in rows:
            row["subject"] = str(row["subject"])
        out.append(replace(base, per_volume=rows))
    return out
