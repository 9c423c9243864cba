"""Benchmark grid files: parse, validate and expand into cells (one run each).

A grid file (YAML, ``benchmarks/*.yaml``) names::

    name: table1                 # the grid folder's name (default: the file's stem)
    train_on: openbhb            # training dataset: a name or {name, data_root, config};
                                 # left out: each test dataset's own healthy train split
    datasets: [brats, atlas]     # test datasets: names or {name, data_root, config}
    seeds: [0, 1, 2]
    preset: paper                # default preset of every method (``--preset`` overrides)
    settings:                    # --set items for every cell; ``<method>.key`` for one method
      runner.batch_size: 256
      mediclip.clip_weights: /ckpt/ViT-B-16.safetensors
    sweep:                       # every combination is a cell; ``<method>.key`` sweeps one
      scrps.l2: [0, 3, 6, 9, 12] # method's config key, ``runner.``/``dataset.``/``train.``/
                                 # ``preprocess.`` keys sweep every method
    methods:
      - zscore                   # a bare name
      - name: scrps              # or a mapping:
        preset: paper            #   its own preset
        config: {l1: 6}          #   method config overrides (bare keys, like --set l1=6)
        sweep: {k2: [5, 10]}     #   this method's sweeps (bare keys = method config)
        variants:                #   tied values: one cell per entry (crossed with sweeps)
          - {k2: 5, k1: 25}
        resources: {num_gpus: 1, num_cpus: 4}   # a Ray task's requirement

A grid is validated whole before anything runs: an unknown method or dataset, an unknown
config key, or a bad value is a :class:`GridError` (a ConfigError: ``adbench`` exits 2) that
names the grid file, the entry and the valid names. Every cell is resolved with
:func:`adbench.runner.resolve`, the same path as ``adbench run``, so a grid cell and the
equivalent ``adbench run --set ...`` command are one leaderboard cell.
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adbench.config import SECTIONS
from adbench.errors import ConfigError
from adbench.plugins import Registry, UnknownNameError, get_registry

__all__ = ["Cell", "Grid", "GridError", "load_grid", "read_grid_file"]

TOP_KEYS = ("name", "description", "train_on", "datasets", "seeds", "preset", "settings", "sweep",
            "methods", "device", "resources")
METHOD_KEYS = ("name", "preset", "config", "sweep", "variants", "resources")
DATASET_KEYS = ("name", "data_root", "config")
#: --set prefixes that address every method's run (not a method's own config)
SHARED_SECTIONS = tuple(s for s in SECTIONS if s != "method")


class GridError(ConfigError):
    """A grid file that cannot run: the message names the file and the entry."""


@dataclass(frozen=True)
class Cell:
    """One run of a grid: the arguments of :func:`adbench.runner.resolve`, plus ``varied``,
    the (key, value) pairs the grid's sweeps and variants chose (for labels and plots)."""

    index: int
    method: str
    dataset: str
    train_on: str | None
    preset: str | None
    seed: int
    sets: tuple[str, ...]
    data_root: str | None = None
    train_root: str | None = None
    device: str = "cpu"
    varied: tuple[tuple[str, Any], ...] = ()
    resources: tuple[tuple[str, float], ...] = ()

    def resolve_kwargs(self) -> dict[str, Any]:
        return {"method": self.method, "dataset": self.dataset, "train_on": self.train_on,
                "preset": self.preset, "seed": self.seed, "sets": list(self.sets),
                "data_root": self.data_root, "train_root": self.train_root,
                "device": self.device}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sets"], d["varied"] = list(self.sets), [list(kv) for kv in self.varied]
        d["resources"] = dict(self.resources)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        return cls(**{**d, "sets": tuple(d["sets"]), "varied": tuple(map(tuple, d["varied"])),
                      "resources": tuple(sorted(d.get("resources", {}).items()))})

    def label(self) -> str:
        extra = ", ".join(f"{k}={_show(v)}" for k, v in self.varied)
        return f"{self.method}" + (f" ({extra})" if extra else "")


@dataclass
class Grid:
    """A parsed grid: its name, source file and cells in file order (methods, then sweep
    combinations, then test datasets, then seeds)."""

    name: str
    path: Path
    cells: list[Cell]
    #: method -> the keys its sweeps and variants vary, in file order
    varied_keys: dict[str, list[str]] = field(default_factory=dict)


def _show(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _set_item(key: str, value: Any) -> str:
    # JSON is valid YAML flow syntax, so parse_sets reads back exactly this value
    return f"{key}={json.dumps(value)}"


def read_grid_file(path: str | Path) -> dict[str, Any]:
    """The grid file's mapping (YAML, ``safe_load``), with its top-level keys checked."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise GridError(f"grid file {path}: not found") from None
    except yaml.YAMLError as exc:
        raise GridError(f"grid file {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise GridError(f"grid file {path}: expected a mapping with keys {', '.join(TOP_KEYS)}, "
                        f"got {type(data).__name__}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise GridError(f"grid file {path}: unknown key(s) {unknown}; valid keys: "
                        f"{', '.join(TOP_KEYS)}")
    if not data.get("methods"):
        raise GridError(f"grid file {path}: no methods; list them under `methods:`")
    return data



def _named_entry(path, where: str, entry, kind: str, keys) -> dict:
    """A method or dataset entry as a mapping with a ``name``: a bare name is ``{name: ...}``;
    anything else, or an unknown key, is a GridError naming the file and the entry."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise GridError(f"grid file {path}: {where}: expected a {kind} name or a mapping "
                        f"with keys {', '.join(keys)}, got {entry!r}")
    bad = sorted(set(entry) - set(keys))
    if bad:
        raise GridError(f"grid file {path}: {where}: unknown key(s) {bad}; valid keys: "
                        f"{', '.join(keys)}")
    return entry

def _dataset_entry(path: Path, where: str, entry: Any, reg: Registry, split: str,
                   roots: dict[str, str]) -> tuple[str, str | None, dict]:
    """(name, data_root, config overrides) of a dataset entry, the name checked."""
    entry = _named_entry(path, where, entry, "dataset", DATASET_KEYS)
    name = str(entry["name"])
    try:
        spec = reg.dataset(name)
    except UnknownNameError as exc:
        raise GridError(f"grid file {path}: {where}: {exc}") from None
    if split not in spec.splits:
        raise GridError(f"grid file {path}: {where}: dataset {name!r} has no {split!r} split "
                        f"(it provides {list(spec.splits)})")
    root = roots.get(name, entry.get("data_root"))
    root = os.path.expandvars(os.path.expanduser(str(root))) if root is not None else None
    if root is None and "data_root" in spec.default_config and spec.default_config["data_root"] is None:
        raise GridError(f"grid file {path}: {where}: dataset {name!r} reads its files from a "
                        f"folder; pass --root {name}=PATH or give `data_root:` in the entry")
    cfg = entry.get("config") or {}
    if not isinstance(cfg, dict):
        raise GridError(f"grid file {path}: {where}: `config` must be a mapping")
    return name, root, cfg


def _sweep_items(path: Path, where: str, sweep: Any) -> list[tuple[str, list]]:
    if sweep is None:
        return []
    if not isinstance(sweep, dict):
        raise GridError(f"grid file {path}: {where}: expected a mapping key -> list of values")
    out = []
    for k, v in sweep.items():
        if not isinstance(v, list) or not v:
            raise GridError(f"grid file {path}: {where}.{k}: expected a non-empty list of "
                            f"values, got {v!r}")
        out.append((str(k), v))
    return out


def load_grid(path: str | Path, *, preset: str | None = None, roots: dict[str, str] | None = None,
              sets: list[str] | None = None, device: str | None = None,
              registry: Registry | None = None) -> tuple[Grid, list]:
    """Parse and validate a grid file; returns the grid and each cell's resolved
    :class:`adbench.runner.RunSpec` (same order).

    preset: overrides every method's preset (``--preset``); roots: dataset name -> folder
    (``--root``); sets: extra ``--set`` items for every cell; device: overrides ``device:``.
    Raises :class:`GridError` naming the file and the entry for anything that would fail
    before a run starts.
    """
    from adbench.runner import resolve

    path = Path(path)
    data = read_grid_file(path)
    reg = registry or get_registry()
    roots = dict(roots or {})
    name = str(data.get("name") or path.stem)
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise GridError(f"grid file {path}: seeds: expected a list of integers, got {seeds!r}")
    tests_raw = data.get("datasets")
    if not isinstance(tests_raw, list) or not tests_raw:
        raise GridError(f"grid file {path}: datasets: expected a non-empty list of test datasets")
    tests = [_dataset_entry(path, f"datasets[{i}]", e, reg, "test", roots)
             for i, e in enumerate(tests_raw)]
    train = None
    if data.get("train_on") is not None:
        train = _dataset_entry(path, "train_on", data["train_on"], reg, "train", roots)
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise GridError(f"grid file {path}: settings: expected a mapping of --set keys")
    global_sweep = _sweep_items(path, "sweep", data.get("sweep"))
    entries = []
    for i, m in enumerate(data["methods"]):
        where = f"methods[{i}]"
        m = _named_entry(path, where, m, "method", METHOD_KEYS)
        try:
            reg.method(str(m["name"]))
        except UnknownNameError as exc:
            raise GridError(f"grid file {path}: {where}: {exc}") from None
        entries.append((where, m))
    names = [str(m["name"]) for _, m in entries]
    for key, _ in global_sweep:
        head = key.split(".", 1)[0]
        if "." not in key or (head not in SHARED_SECTIONS and head not in names):
            raise GridError(f"grid file {path}: sweep.{key}: a top-level sweep key is "
                            f"`<method>.<key>` for one of the grid's methods ({', '.join(names)}) "
                            f"or `<section>.<key>` for every method (sections: "
                            f"{', '.join(SHARED_SECTIONS)})")

    cells, specs, varied_keys = [], [], {}
    for where, m in entries:
        method = str(m["name"])
        mpreset = preset if preset is not None else m.get("preset", data.get("preset"))
        config = m.get("config") or {}
        variants = m.get("variants") or [{}]
        if not isinstance(config, dict) or not isinstance(variants, list) or not all(
                isinstance(v, dict) for v in variants):
            raise GridError(f"grid file {path}: {where}: `config` must be a mapping and "
                            f"`variants` a list of mappings")
        sweep = _sweep_items(path, f"{where}.sweep", m.get("sweep"))
        for key, values in global_sweep:
            head, rest = key.split(".", 1)
            if head == method:
                sweep.append((rest, values))
            elif head in SHARED_SECTIONS:
                sweep.append((key, values))
        keys = list(dict.fromkeys([*(k for v in variants for k in v), *(k for k, _ in sweep)]))
        varied_keys[method] = list(dict.fromkeys([*varied_keys.get(method, []), *keys]))
        resources = m.get("resources", data.get("resources")) or {}
        base = [_set_item(k, v) for k, v in _for_method(settings, method, names).items()]
        base += [_set_item(k, v) for k, v in config.items()]
        mine_sets = [f"{k}={v}" for k, v in _for_method(dict(
            item.split("=", 1) if "=" in item else (item, "") for item in sets or []),
            method, names).items()]
        for variant in variants:
            for combo in itertools.product(*(v for _, v in sweep)):
                chosen = {**variant, **dict(zip((k for k, _ in sweep), combo))}
                for tname, troot, tcfg in tests:
                    for seed in seeds:
                        c = _cell(len(cells), method, mpreset, seed, tname, troot, tcfg, train,
                                  base, mine_sets, chosen, device or data.get("device") or "cpu",
                                  resources)
                        try:
                            specs.append(resolve(**c.resolve_kwargs(), registry=reg))
                        except ConfigError as exc:   # UnknownNameError (presets) too
                            raise GridError(f"grid file {path}: {where} ({method}"
                                            + (f", {c.label()[len(method) + 2:-1]}" if c.varied else "")
                                            + f", dataset {tname}): {exc}") from None
                        cells.append(c)
    return Grid(name=name, path=path, cells=cells, varied_keys=varied_keys), specs


def _for_method(items: dict[str, Any], method: str, names: list[str]) -> dict[str, Any]:
    """The ``settings`` / ``--set`` items for ``method``'s cells: ``<method>.key`` items only
    for that method (as its bare ``key``), other methods' items dropped, the rest as given."""
    out = {}
    for k, v in items.items():
        head, _, rest = str(k).partition(".")
        if rest and head in names and head not in SHARED_SECTIONS:
            if head == method:
                out[rest] = v
        else:
            out[k] = v
    return out


def _cell(index, method, preset, seed, tname, troot, tcfg, train, base, extra, chosen, device,
          resources) -> Cell:
    sets = list(base) + [_set_item(f"dataset.{k}", v) for k, v in tcfg.items()]
    train_on, train_root = None, None
    if train is not None:
        train_on, train_root, train_cfg = train
        if train_on == tname:   # the test dataset's own train split
            troot = troot if troot is not None else train_root
            train_on, train_root = None, None
        else:
            sets += [_set_item(f"train.{k}", v) for k, v in train_cfg.items()]
    sets += [_set_item(k, v) for k, v in chosen.items()]
    sets += list(extra or [])
    return Cell(index=index, method=method, dataset=tname, train_on=train_on, preset=preset,
                seed=int(seed), sets=tuple(sets), data_root=troot, train_root=train_root,
                device=device, varied=tuple(chosen.items()),
                resources=tuple(sorted((str(k), float(v)) for k, v in resources.items())))
