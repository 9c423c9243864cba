"""Constructor parameters as the one declaration of a method's config (style rule 5).

A detector's ``__init__`` signature is its config: the defaults become
``MethodSpec.default_config`` and the type hints are checked in ``resolve``, before any
folder exists. Plain hints (``int``, ``float``, ``str``, ``bool``, ``X | None``,
``Sequence[str]``, ``dict``, ``Literal[...]``) say the type; ``Annotated[T, Range(...)]``
adds a range, and the aliases below name the common ones::

    def __init__(self, eps: NonNegativeFloat = 0.05, batch_size: PositiveInt = 32,
                 knn: Literal["torch", "faiss", "auto"] = "torch"): ...

A value of the wrong type or out of range is a :class:`~adbench.errors.ConfigError` that names
the method, the key, the value and what was expected.
"""
from __future__ import annotations

import collections.abc as cabc
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from adbench.errors import ConfigError, PluginError

__all__ = ["Range", "PositiveInt", "NonNegativeInt", "PositiveFloat", "NonNegativeFloat",
           "Fraction", "signature_defaults", "check_config", "check_value", "describe", "key_help",
           "key_types"]


@dataclass(frozen=True)
class Range:
    """lo <= value <= hi (either bound None: open); ``lo_open``/``hi_open`` make it strict."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def describe(self, base: str) -> str:
        """E.g. "int >= 1", "float > 0", "float in [0, 1]"."""
        if self.lo is not None and self.hi is not None:
            return (f"{base} in {'(' if self.lo_open else '['}{self.lo}, {self.hi}"
                    f"{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{base} {'>' if self.lo_open else '>='} {self.lo}"
        if self.hi is not None:
            return f"{base} {'<' if self.hi_open else '<='} {self.hi}"
        return base


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, lo_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Fraction = Annotated[float, Range(0, 1)]         # 0 <= value <= 1


def _hints(factory: Callable) -> tuple[inspect.Signature | None, dict[str, Any]]:
    """(signature, type hints) of ``factory``; (None, {}) for a callable without an
    inspectable signature (a builtin): such a factory declares ``default_config`` itself."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None, {}
    init = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(init, include_extras=True)
    except Exception as exc:  # a hint that does not evaluate: say which factory
        raise PluginError(f"{getattr(factory, '__qualname__', factory)}: type hints of its "
                          f"parameters do not evaluate ({exc})") from None
    return sig, hints


def _jsonable_default(v: Any) -> Any:
    """Tuples become lists (a config is YAML/JSON data); other values stay as they are."""
    if isinstance(v, tuple):
        return [_jsonable_default(x) for x in v]
    return v


def signature_defaults(factory: Callable, what: str) -> dict[str, Any]:
    """{name: default} of every keyword parameter of ``factory``; each must have a default.
    Empty for a factory without an inspectable signature."""
    sig, _ = _hints(factory)
    out: dict[str, Any] = {}
    if sig is None:
        return out
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty:
            raise PluginError(f"{what}: parameter {p.name!r} of {factory.__qualname__} has no "
                              "default; every constructor parameter is a config key and needs one")
        out[p.name] = _jsonable_default(p.default)
    return out


def describe(hint: Any) -> str:
    """A short human name of a type hint ("int >= 1", "float or None", "one of 'a', 'b'")."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        base, *meta = args
        ranges = [m.describe(describe(base)) for m in meta if isinstance(m, Range)]
        return ranges[0] if ranges else describe(base)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is type(None) or hint is None:
        return "None"
    if origin in (list, tuple, cabc.Sequence) or hint in (list, tuple, cabc.Sequence):
        inner = f" of {describe(args[0])}" if args and args[0] is not Ellipsis else ""
        return f"a list{inner}"
    if origin is dict or hint is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _accepts(hint: Any, v: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if origin is Annotated:
        base, *meta = args
        return _accepts(base, v) and all(m.holds(v) for m in meta if isinstance(m, Range))
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, v) for a in args)
    if origin is Literal:
        return any(v == a and type(v) is type(a) for a in args)
    if hint is type(None) or hint is None:
        return v is None
    if hint is bool:
        return isinstance(v, bool)
    if hint is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if hint is str:
        return isinstance(v, str)
    if hint is Path:
        return isinstance(v, (str, Path))
    if origin in (list, tuple, cabc.Sequence) or hint in (list, tuple, cabc.Sequence):
        if not isinstance(v, (list, tuple)):
            return False
        inner = args[0] if args and args[0] is not Ellipsis else Any
        return all(_accepts(inner, x) for x in v)
    if origin is dict or hint is dict:
        return isinstance(v, dict)
    if isinstance(hint, type):
        return isinstance(v, hint)
    return True  # a hint we do not understand is not a reason to refuse a value


def check_config(factory: Callable, config: dict[str, Any], what: str) -> None:
    """Every value of ``config`` against the type hint of its parameter of ``factory``."""
    _, hints = _hints(factory)
    for key, value in config.items():
        hint = hints.get(key, Any)
        if not _accepts(hint, value):
            raise ConfigError(f"{what} config key {key!r}: got {value!r} "
                              f"({type(value).__name__}), expected {describe(hint)}")


def check_value(hint: Any, value: Any, what: str, key: str) -> None:
    """One value against a type hint, with :func:`check_config`'s message: for a key
    checked again where it is used (a dataset built without ``adbench run``)."""
    if not _accepts(hint, value):
        raise ConfigError(f"{what} config key {key!r}: got {value!r} "
                          f"({type(value).__name__}), expected {describe(hint)}")


# -- documentation of the keys (``adbench config``) -----------------------------------------
_KEY_LINE = re.compile(r"^(?P<names>[A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)(?:\s{2,}(?P<text>\S.*))?$")


def key_help(factory: Callable, keys: cabc.Iterable[str]) -> dict[str, str]:
    """{key: one-line meaning} read from ``factory``'s docstring (its class docstring, else
    its ``__init__``'s), for the keys it documents.

    The convention every built-in follows (NVlabs' aligned argument comments, as a list)::

        backbone, layers   the feature extractor; weights "imagenet" | path | "random".
        batch_size         slices per forward pass.
        lesion_min_mm, lesion_max_mm
                           lesion size range (continuation lines are indented).

    A line starts with one key or several comma-separated keys at the list's indentation,
    then two or more spaces and the meaning; the meaning may continue on deeper-indented
    lines, or start on the next line; continuation lines are joined into one. Keys without
    an entry are left out.
    """
    keys = set(keys)
    docs = [inspect.getdoc(factory) or ""]
    init = getattr(factory, "__init__", None)
    if inspect.isclass(factory) and init is not None and init is not object.__init__:
        docs.append(inspect.getdoc(init) or "")
    out: dict[str, str] = {}
    for doc in docs:
        lines = doc.splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            m = _KEY_LINE.match(stripped)
            if not m:
                continue
            names = [n.strip() for n in m["names"].split(",")]
            if not all(n in keys for n in names):
                continue
            indent = len(line) - len(line.lstrip())
            parts = [m["text"]] if m["text"] else []
            for nxt in lines[i + 1:]:   # continuation: deeper indentation, not a new key line
                if not nxt.strip() or len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                parts.append(nxt.strip())
            text = " ".join(parts).strip()
            for n in names:
                if text and n not in out:
                    out[n] = text
    return out


def key_types(factory: Callable, defaults: dict[str, Any]) -> dict[str, str]:
    """{key: type as ``describe`` writes it}: the parameter's hint, else the default's type."""
    _, hints = _hints(factory)
    out = {}
    for key, default in defaults.items():
        if key in hints:
            out[key] = describe(hints[key])
        elif default is None:
            out[key] = "any"
        else:
            out[key] = describe(type(default))
    return out
