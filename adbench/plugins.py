"""Plugin discovery: one pluggy PluginManager over the ``adbench`` entry-point group.

Built-ins and third-party plugins come through the same path (``pyproject.toml`` of
adbench registers its own methods and datasets as entry points). A plugin that fails to
import (whatever it raises, ``SystemExit`` included) or that implements a hook adbench does
not define is recorded with its error and listed by ``adbench list``; it does not break the
others. A name provided by two plugins is disabled, and only that name: asking for it is an
error naming both distributions, and ``adbench list`` shows the clash.
"""
from __future__ import annotations

import difflib
import importlib.metadata as md
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pluggy

from adbench import hookspecs
from adbench.errors import PluginError, UnknownNameError
from adbench.params import signature_defaults

__all__ = ["hookimpl", "MethodSpec", "DatasetSpec", "Registry", "get_registry",
           "PluginError", "UnknownNameError", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "adbench"
hookimpl = pluggy.HookimplMarker("adbench")


METHOD_KINDS = ("reconstruction", "feature", "hybrid", "baseline")
DATASET_SPLITS = ("train", "test")


@dataclass(frozen=True)
class MethodSpec:
    """A detector method offered by a plugin.

    name            CLI name (``adbench run --method NAME``): lowercase, digits, ``-``/``_``.
    factory         callable(**config) -> adbench.Detector. Its signature is the config:
                    every parameter has a default, and its type hint (see
                    :mod:`adbench.params`) is checked before a run writes anything.
    kind            one of "reconstruction", "feature", "hybrid", "baseline".
    description     one line for ``adbench list``.
    default_config  leave it out: it is derived from ``factory``'s signature (tuples become
                    lists). Give it only for a factory without a signature (``**kwargs``).
    presets         preset name → partial config overriding ``default_config``
                    (e.g. "smoke" for CI, "paper" for the published settings).
    predict_keys    config keys that change only ``predict``, never the fitted state
                    (e.g. SCRPS's k1, k2, l2). They are left out of the model-cache key, so
                    an ablation over them reuses one fitted model.
    file_keys       config keys whose value, when not None, is the path of a file ``fit``
                    reads (e.g. SCRPS's ``generator``). The runner checks the file exists
                    before anything is written, puts its sha256 in the model-cache key (a
                    new file is a new model, whatever its name) and records path and sha256
                    in ``summary.json`` under ``inputs``.
    """

    name: str
    factory: Callable[..., Any]
    kind: str
    description: str
    default_config: dict[str, Any] | None = None
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    predict_keys: tuple[str, ...] = ()
    file_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in METHOD_KINDS:
            raise PluginError(f"method {self.name!r}: kind {self.kind!r} is not one of {METHOD_KINDS}")
        derived = signature_defaults(self.factory, f"method {self.name!r}")
        if self.default_config is None:
            object.__setattr__(self, "default_config", derived)
        elif derived and set(self.default_config) != set(derived):
            raise PluginError(f"method {self.name!r}: default_config keys "
                              f"{sorted(self.default_config)} differ from the parameters of "
                              f"{self.factory.__qualname__} {sorted(derived)}; leave "
                              "default_config out, it is derived from the signature")
        for what in ("predict_keys", "file_keys"):
            unknown = set(getattr(self, what)) - set(self.default_config)
            if unknown:
                raise PluginError(f"method {self.name!r}: {what} {sorted(unknown)} are not "
                                  "config keys")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset offered by a plugin.

    name            CLI name (``adbench run --dataset NAME``).
    factory         callable(**config) -> adbench.Dataset.
    default_config  keyword arguments of ``factory`` with defaults (``data_root`` for
                    datasets read from disk; ``--data-root`` sets it).
    splits          which of "train" (healthy volumes) and "test" (volumes with lesion
                    masks) it provides.
    description     one line for ``adbench list``.
    presets         preset name → partial config.
    """

    name: str
    factory: Callable[..., Any]
    default_config: dict[str, Any]
    splits: tuple[str, ...]
    description: str
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = [s for s in self.splits if s not in DATASET_SPLITS]
        if bad or not self.splits:
            raise PluginError(f"dataset {self.name!r}: splits {self.splits!r} must be a non-empty "
                              f"subset of {DATASET_SPLITS}")


@dataclass(frozen=True)
class Provided:
    spec: Any
    plugin: str        # entry-point name
    distribution: str  # "name version" of the distribution that installed it


@dataclass
class Registry:
    """What the plugins provide.

    methods, datasets  name → the spec and where it came from.
    broken             what ``adbench list`` reports as failed: plugin name → error text,
                       and ``"method 'NAME'"`` / ``"dataset 'NAME'"`` → the clash message
                       for a name that several plugins provide.
    clashes            "method"/"dataset" → {name: clash message}: names disabled because
                       several plugins provide them.
    """

    methods: dict[str, Provided] = field(default_factory=dict)
    datasets: dict[str, Provided] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    clashes: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"method": {}, "dataset": {}})
    pm: pluggy.PluginManager | None = None

    def method(self, name: str) -> MethodSpec:
        return self._get(self.methods, name, "method").spec

    def dataset(self, name: str) -> DatasetSpec:
        return self._get(self.datasets, name, "dataset").spec

    def _get(self, table: dict[str, Provided], name: str, what: str) -> Provided:
        if name in table:
            return table[name]
        if name in self.clashes.get(what, {}):
            raise PluginError(self.clashes[what][name])
        valid = sorted(table)
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        broken = ""
        if self.broken:
            broken = " (plugins that failed to load: " + ", ".join(sorted(self.broken)) + "; see `adbench list`)"
        raise UnknownNameError(f"unknown {what} {name!r}.{hint} Valid {what}s: "
                               f"{', '.join(valid) or '(none)'}{broken}")

    # lifecycle hooks ---------------------------------------------------------------------
    def run_started(self, run_dir, config) -> None:
        if self.pm is not None:
            self.pm.hook.adbench_run_started(run_dir=run_dir, config=config)

    def run_finished(self, run_dir, summary) -> None:
        if self.pm is not None:
            self.pm.hook.adbench_run_finished(run_dir=run_dir, summary=summary)


def _dist_label(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown distribution"
    return f"{dist.metadata['Name']} {dist.version}"


def _entry_points() -> Iterable[md.EntryPoint]:
    seen = set()
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, ep.value)
        if key in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add(key)
        yield ep


def build_registry(entry_points: Iterable[md.EntryPoint] | None = None,
                   extra_plugins: Iterable[tuple[str, Any, str]] = ()) -> Registry:
    """Load every plugin and collect its specs.

    ``extra_plugins`` are (name, module-or-object, distribution label) triples registered
    directly; tests use it. A plugin that fails to import, implements an unknown hook or
    whose hook raises is recorded in ``broken``; a name several plugins provide is
    recorded in ``clashes`` (and ``broken``) and left out. Neither stops the others.
    """
    pm = pluggy.PluginManager("adbench")
    pm.add_hookspecs(hookspecs)
    reg = Registry(pm=pm)
    origin: dict[int, tuple[str, str]] = {}

    eps = list(_entry_points() if entry_points is None else entry_points)
    loaded: list[tuple[str, Any, str, str]] = []   # (name, plugin, distribution, where)
    for ep in eps:
        try:
            obj = ep.load()
        # SystemExit too: a plugin calling sys.exit() at import must not end the CLI
        # (KeyboardInterrupt still does).
        except (Exception, SystemExit) as exc:
            reg.broken[ep.name] = (f"{type(exc).__name__}: {exc} "
                                   f"[{ep.value}, from {_dist_label(ep)}]")
            continue
        loaded.append((ep.name, obj, _dist_label(ep), f" [{ep.value}, from {_dist_label(ep)}]"))
    loaded += [(name, obj, dist, f" [from {dist}]") for name, obj, dist in extra_plugins]
    for name, obj, dist, where in loaded:
        try:
            pm.register(obj, name=name)
        except Exception as exc:  # a hook whose arguments do not match its spec, a taken name
            reg.broken[name] = f"{type(exc).__name__}: {exc}{where}"
            continue
        unknown = _unknown_hooks(pm, obj)
        if unknown:  # what pm.check_pending() would raise for everyone, kept to this plugin
            pm.unregister(obj)
            reg.broken[name] = f"implements unknown hook(s) {', '.join(unknown)}{where}; " \
                               f"adbench's hooks are {', '.join(_HOOK_NAMES)}"
            continue
        origin[id(obj)] = (name, dist)
    pm.check_pending()

    for hook, table, what in ((pm.hook.adbench_methods, reg.methods, "method"),
                              (pm.hook.adbench_datasets, reg.datasets, "dataset")):
        offers: dict[str, list[Provided]] = {}
        for impl in hook.get_hookimpls():
            plugin_name, dist = origin.get(id(impl.plugin), (impl.plugin_name, "unknown distribution"))
            kind = MethodSpec if what == "method" else DatasetSpec
            try:
                specs = list(impl.function() or [])   # a generator raises only when iterated
                bad = [s for s in specs if not isinstance(s, kind)]
                if bad:
                    raise PluginError(f"returned {type(bad[0]).__name__} objects; expected "
                                      f"adbench.{kind.__name__} instances")
            except (Exception, SystemExit) as exc:
                reg.broken[plugin_name] = f"{type(exc).__name__} in {impl.function.__name__}: {exc}"
                continue
            for spec in specs:
                offers.setdefault(spec.name, []).append(Provided(spec, plugin_name, dist))
        for name in sorted(offers):
            providers = offers[name]
            if len(providers) == 1:
                table[name] = providers[0]
                continue
            msg = _clash_message(what, name, providers)
            reg.clashes[what][name] = msg
            reg.broken[f"{what} {name!r}"] = msg
    return reg


def _unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """Hooks ``plugin`` implements that adbench has no spec for (a misspelt name)."""
    return sorted(c.name for c in (pm.get_hookcallers(plugin) or []) if not c.has_spec())


_HOOK_NAMES = sorted(n for n in dir(hookspecs) if n.startswith("adbench_"))


def _clash_message(what: str, name: str, providers: list[Provided]) -> str:
    by = [f"plugin {p.plugin!r} ({p.distribution})" for p in providers]
    times = "twice" if len(by) == 2 else f"{len(by)} times"
    return (f"{what} name {name!r} is provided {times}: by {', '.join(by[:-1])} and by {by[-1]}; "
            f"it is disabled until only one provides it. Uninstall all but one of these "
            f"distributions or rename the {what}.")


_REGISTRY: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = build_registry()
    return _REGISTRY
