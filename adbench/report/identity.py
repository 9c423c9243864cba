"""Which runs are one leaderboard cell, and how rows that differ are labelled.

A run's *identity* is its whole resolved configuration (``config.yaml``), ``--set`` overrides
included, less what does not change its numbers: the seed (seeds of one cell aggregate into
one row), the paths in :data:`NOT_IDENTITY`, and the dataset keys that only say where files
are (:data:`adbench.data.cache.LOCATION_PARAMS` and names ending in ``_root``, ``_dir`` or
``_path``, the rule the slice cache keys by). Two runs of one method on one dataset are the
same cell exactly when their identities are equal.

Identity keys are named as ``--set`` names them: method keys bare (``l2``), the other
sections prefixed (``dataset.n_test``, ``train.n_subjects``, ``preprocess.size``,
``runner.max_test_volumes``), top-level keys as they are (``preset``, ``train_on``,
``strict``). ``train_on`` is ``own`` when a run trained on its test dataset's train split, so
such rows line up across datasets; its ``train.*`` keys are then the ``dataset.*`` ones.

Rows line up across datasets (columns): a row holds, of the ``dataset.*`` keys, only those
whose values differ among that method's runs on that dataset. A row's label is the method
plus the keys whose values differ among the method's rows in its table (:func:`row_labels`).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from adbench.data.cache import LOCATION_SUFFIXES, LOCATION_PARAMS
from adbench.rundir import RunRecord

__all__ = ["NOT_IDENTITY", "identity", "identity_key", "row_keys", "row_labels", "format_item",
           "key_name", "natural_key", "SMOKE", "SMOKE_LABEL", "UNSET", "MAX_LABEL_KEYS"]

#: Paths into config.yaml that do not change a run's numbers, left out of its identity.
NOT_IDENTITY = frozenset({
    "seed",                    # seeds of one cell aggregate into one row
    "device",                  # cpu and cuda runs of one config are one cell
    "versions",                # package versions: recorded, not compared
    "weights",                 # a copy of runner.weights (the weights themselves: weights_key)
    "runner.batch_size",       # slices per predict call: the built-in methods give the same maps
    "runner.write_maps",       # whether maps/ is written
    "runner.native_maps",      # whether maps_native/ is written
    "runner.figures",          # whether figures/ is written
    "dataset_config.progress", "train_config.progress",   # progress bars
    "dataset_config.generate", "train_config.generate",   # synth: which files it generates
})

SMOKE = "smoke"
SMOKE_LABEL = "smoke: pipeline check"
#: the value of a key one run has and another lacks (e.g. written by an older adbench)
UNSET = "<unset>"
#: config.yaml section → the prefix of its keys (method keys are bare)
_SECTIONS = {"method_config": "method", "dataset_config": "dataset", "train_config": "train",
             "preprocess": "preprocess", "runner": "runner"}
#: label order: training set, preset, method keys, then the other sections, then the rest
_ORDER = {"train_on": 0, "preset": 1, "method": 2, "train": 3, "dataset": 4, "preprocess": 5,
          "runner": 6}
MAX_LABEL_KEYS = 3
_MAX_VALUE_CHARS = 30

Key = tuple[str, str]   # (section, name): ("method", "l2"), ("dataset", "n_test"), ("", "preset")


def _norm(v: Any) -> Any:
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return int(v)          # 5 and 5.0 are one value of a float key
    if isinstance(v, dict):
        return {str(k): _norm(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def _canon(v: Any) -> str:
    return UNSET if v is UNSET else json.dumps(_norm(v), sort_keys=True, default=str)


def _location(name: str) -> bool:
    return name in LOCATION_PARAMS or name.endswith(LOCATION_SUFFIXES)


def identity(run: RunRecord, *, everything: bool = False) -> dict[Key, Any]:
    """The run's identity: (section, name) → value, in config order.

    ``everything`` keeps the keys of :data:`NOT_IDENTITY` and the location keys too (to say
    how two runs of one identity differ)."""
    cfg = run.config
    own = run.train_on == run.dataset
    out: dict[Key, Any] = {("", "train_on"): "own" if own else run.train_on,
                           ("", "preset"): cfg.get("preset")}
    for top, value in cfg.items():
        if top in ("method", "dataset", "train_on", "preset"):
            continue
        if top in NOT_IDENTITY and not everything:
            continue
        if top == "train_config" and own:
            continue          # the test dataset's own config, already under dataset.*
        section = _SECTIONS.get(top, top if isinstance(value, dict) else "")
        if not isinstance(value, dict):
            out[("", top)] = value
            continue
        for name, v in value.items():
            if not everything and (f"{top}.{name}" in NOT_IDENTITY
                                   or (section in ("dataset", "train") and _location(name))):
                continue
            out[(section, str(name))] = v
    return out


def identity_key(run: RunRecord) -> tuple:
    """The run's whole identity, hashable: equal for two runs of one cell."""
    items = sorted((k, _canon(v)) for k, v in identity(run).items())
    return (run.method, run.dataset, tuple(items))


def _sort_key(k: Key) -> int:
    return _ORDER.get(k[1] if k[0] == "" else k[0], 7)


def row_keys(runs: list[RunRecord]) -> dict[int, tuple]:
    """id(run) → its row key (method, ((section, name), canonical value), ...) within ``runs``
    (one table).

    Non-dataset keys are compared over the union of the method's keys (a key a run lacks is
    :data:`UNSET`); ``dataset.*`` keys enter only where they differ among the method's runs
    on that dataset, so rows line up across datasets."""
    ids = {id(r): identity(r) for r in runs}
    out: dict[int, tuple] = {}
    for method in {r.method for r in runs}:
        mine = [r for r in runs if r.method == method]
        keys: dict[Key, None] = {}
        for r in mine:
            keys.update(dict.fromkeys(k for k in ids[id(r)] if k[0] != "dataset"))
        for ds in {r.dataset for r in mine}:
            here = [r for r in mine if r.dataset == ds]
            dkeys: dict[Key, None] = {}
            for r in here:
                dkeys.update(dict.fromkeys(k for k in ids[id(r)] if k[0] == "dataset"))
            varying = [k for k in dkeys
                       if len({_canon(ids[id(r)].get(k, UNSET)) for r in here}) > 1]
            for r in here:   # one key order for the method's runs: config order, first seen
                out[id(r)] = (method, tuple((k, _canon(ids[id(r)].get(k, UNSET)))
                                            for k in [*keys, *varying]))
    return out


def format_item(key: Key, value: Any, *, short: bool = False) -> str:
    """``l2=6``, ``dataset.n_test=5``, ``preprocess.size=[96, 80]``, ``train: openbhb``,
    ``preset cpu-quick``; ``short`` cuts a long value to its last characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if value is UNSET:
        text = "unset"
    if short and len(text) > _MAX_VALUE_CHARS:
        text = "…" + text[-(_MAX_VALUE_CHARS - 1):]
    if key == ("", "train_on"):
        return f"train: {text}"
    if key == ("", "preset"):
        if value == SMOKE:
            return SMOKE_LABEL
        return "no preset" if value is None else f"preset {text}"
    return f"{key_name(key)}={text}"


def key_name(key: Key) -> str:
    """The key as ``--set`` names it: ``l2``, ``dataset.n_test``, ``strict``."""
    return key[1] if key[0] in ("", "method") else f"{key[0]}.{key[1]}"


def _explained(k: Key, by: Key, rows: list[dict]) -> bool:
    """Whether ``k`` takes one value within each group of rows that agree on ``by`` (a
    preset or a training set sets many keys at once: its rows need only say the preset)."""
    seen: dict[str, str] = {}
    for r in rows:
        g, v = r.get(by, UNSET), r.get(k, UNSET)
        if seen.setdefault(g, v) != v:
            return False
    return True


def row_labels(keys: list[tuple], values: dict[tuple, dict[Key, Any]]) -> dict[tuple, dict]:
    """Row key → {"label", "differs": [(key, value), ...], "shortened": bool}.

    ``values``: row key → its raw values (for display). The label is the method plus, in
    order (training set, preset, method keys, train.*, dataset.*, preprocess.*, runner.*,
    others), the keys whose values differ among the method's rows, at most
    :data:`MAX_LABEL_KEYS` of them then "…"; keys that a differing preset or training set
    explains are left out. Smoke rows always say :data:`SMOKE_LABEL`. ``differs`` holds
    every differing key (for the CSV and the footnotes); labels are unique per table.
    """
    out: dict[tuple, dict] = {}
    for method in sorted({k[0] for k in keys}):
        mine = [k for k in keys if k[0] == method]
        canon = {k: dict(k[1]) for k in mine}
        order: dict[Key, None] = {}
        for k in mine:
            order.update(dict.fromkeys(name for name, _ in k[1]))
        differ = sorted((n for n in order
                         if n[0] == "dataset" or len({canon[k].get(n, UNSET) for k in mine}) > 1),
                        key=_sort_key)     # stable: config order within a section
        shown = [n for n in differ if not any(
            by in differ and by != n and n[0] != "" and _explained(n, by, list(canon.values()))
            for by in (("", "preset"), ("", "train_on")))]
        labels = {}
        for k in mine:
            here = [n for n in differ if n in canon[k]]
            parts = [n for n in shown if n in canon[k]]
            smoke = values[k].get(("", "preset")) == SMOKE and ("", "preset") not in parts
            labels[k] = _label(method, k, values, parts, smoke, cap=True)
            out[k] = {"differs": [(n, values[k].get(n, UNSET)) for n in here],
                      "shortened": parts != here}
        for attempt in ("all shown", "all differing", "numbered"):
            dup = {k for k in mine if list(labels.values()).count(labels[k]) > 1}
            if not dup:
                break
            for i, k in enumerate(sorted(dup, key=str)):
                here = [n for n in differ if n in canon[k]]
                parts = [n for n in (shown if attempt == "all shown" else here) if n in canon[k]]
                smoke = values[k].get(("", "preset")) == SMOKE and ("", "preset") not in parts
                labels[k] = _label(method, k, values, parts, smoke, cap=False)
                if attempt == "numbered":
                    labels[k] += f" #{i + 1}"
                out[k]["shortened"] = parts != here
        for k in mine:
            out[k]["label"] = labels[k]
            out[k]["shortened"] = out[k]["shortened"] or "…" in labels[k]
    return out


def _label(method: str, k: tuple, values: dict, parts: list[Key], smoke: bool, *, cap: bool) -> str:
    text = [SMOKE_LABEL] if smoke else []
    cut = cap and len(parts) > MAX_LABEL_KEYS
    text += [format_item(n, values[k].get(n, UNSET), short=True)
             for n in (parts[:MAX_LABEL_KEYS] if cut else parts)]
    if cut:
        text.append("…")
    return method + (f" ({', '.join(text)})" if text else "")


def natural_key(s: str) -> list:
    """Sort key putting ``l2=9`` before ``l2=10``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower())
            for t in re.split(r"(\d+)", s) if t]
