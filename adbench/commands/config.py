"""``adbench config``: every config key of a method or dataset, with its default, type and
meaning, and what each preset changes, as YAML that ``adbench run --config`` accepts.

``adbench config NAME`` shows a method's ``method:`` section or a dataset's ``dataset:``
section (both, when a method and a dataset share the name); ``adbench config runner`` and
``adbench config preprocess`` show the run-wide sections. ``--preset P`` shows the values
with P applied and marks the keys it changed. Types come from the factory's signature
(:func:`adbench.params.key_types`), meanings from its docstring
(:func:`adbench.params.key_help`), so the listing cannot drift from the code.

:func:`render_resolved` is the other view, the one of ``adbench run … --print-config``: the
whole resolved config of one run, every section, as a ``--config`` file.
"""
from __future__ import annotations

import argparse
import textwrap
from typing import Any

import yaml

from adbench.config import (PREPROCESS_PRESETS, RUNNER_DEFAULTS, RUNNER_HELP, RUNNER_PRESETS,
                            merge_section, preprocess_defaults)
from adbench.data.preprocess import PreprocessConfig
from adbench.params import key_help, key_types
from adbench.plugins import Registry, UnknownNameError, get_registry

__all__ = ["add_parser", "main", "render", "render_resolved"]

RUN_SECTIONS = ("runner", "preprocess")
WIDTH = 96


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "config", help="show a method's or dataset's config keys, defaults, types and presets",
        description="Print every config key of a method or dataset (or of the run-wide "
                    "sections `runner` and `preprocess`) with its default, type and meaning, "
                    "and what each preset changes. The output is YAML that "
                    "`adbench run --config FILE` accepts.")
    p.add_argument("name", help="a method or dataset (see `adbench list`), `runner` or "
                                "`preprocess`")
    p.add_argument("--preset", default=None,
                   help="show the values with this preset applied (e.g. smoke, paper)")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    print(render(args.name, preset=args.preset), end="")
    return 0


# -- one section ----------------------------------------------------------------------------
def _value(key: str, value: Any) -> str:
    """``key: value`` in YAML, collections in flow style so each key stays on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000)
    return f"{key}: {text.removesuffix(chr(10)).removesuffix('...').strip()}"


def _comment(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH - len(indent) - 2, initial_indent=f"{indent}# ",
                         subsequent_indent=f"{indent}#   ", break_on_hyphens=False)


def _flat(layer: dict[str, Any]) -> str:
    return ", ".join(_value(k, v) for k, v in layer.items()) or "(nothing)"


def _section(section: str, defaults: dict[str, Any], types: dict[str, str],
             helps: dict[str, str], presets: dict[str, dict[str, Any]],
             preset: str | None, inherited: dict[str, str] | None = None) -> list[str]:
    """``inherited``: keys the runner fills from another section unless set here; they are
    written commented out, so a saved listing does not pin them."""
    values = merge_section(section, defaults, presets, preset)
    changed = presets.get(preset, {}) if preset else {}
    inherited = inherited or {}
    lines = [f"{section}:"]
    for key in defaults:
        meaning = helps.get(key, "(not documented by its plugin)")
        lines += _comment(f"{types.get(key, 'any')}: {meaning}", "  ")
        if key in inherited and key not in changed:
            lines.append(f"  # {_value(key, values[key])}    # unset: {inherited[key]}")
            continue
        line = f"  {_value(key, values[key])}"
        if key in changed:
            line += f"    # preset {preset}; default: {_value(key, defaults[key]).split(': ', 1)[1]}"
        lines.append(line)
    return lines


def _presets(named: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """``named``: section → its presets. One line per preset name and section it changes."""
    names = sorted({p for presets in named.values() for p in presets if p != "default"})
    if not names:
        return ["# Presets: none."]
    width = max(len(n) for n in names)
    lines = ["# Presets (adbench run --preset NAME) change these keys:"]
    for name in names:
        first = True
        for section, presets in named.items():
            if name not in presets or not presets[name]:
                continue
            label = name if first else ""
            lines += _comment(f"{label:<{width}}  {section}: {_flat(presets[name])}", "")
            first = False
        if first:
            lines.append(f"# {name:<{width}}  (changes no key of these sections)")
    return lines


# -- what a name shows ------------------------------------------------------------------------
def render(name: str, *, preset: str | None = None, registry: Registry | None = None) -> str:
    """The YAML listing of ``adbench config NAME`` (see the module docstring)."""
    reg = registry or get_registry()
    blocks: list[list[str]] = []
    if name in reg.methods:
        blocks.append(_method_block(reg, name, preset))
    if name in reg.datasets:
        blocks.append(_dataset_block(reg, name, preset))
    if name == "runner":
        blocks.append(_runner_block(preset))
    if name == "preprocess":
        blocks.append(_preprocess_block(preset))
    if not blocks:
        known = sorted(reg.methods) + sorted(reg.datasets) + list(RUN_SECTIONS)
        raise UnknownNameError(f"adbench config {name!r}: no method, dataset or section of that "
                               f"name. Known: {', '.join(known)}")
    header = ["# Each key: its type and meaning, then its default. Save this as a file and run",
              "# `adbench run --config FILE`, or change one key with `--set KEY=VALUE`."]
    return "\n".join(header + [line for b in blocks for line in b + [""]])


def _check_preset(preset: str | None, defined: dict[str, dict[str, dict[str, Any]]],
                  what: str) -> None:
    if preset is None or preset == "default":
        return
    if not any(preset in presets for presets in defined.values()):
        names = sorted({p for presets in defined.values() for p in presets})
        raise UnknownNameError(f"unknown preset {preset!r} for {what}; its presets: "
                               f"{', '.join(names) or '(none)'}")


def _method_block(reg: Registry, name: str, preset: str | None) -> list[str]:
    provided = reg.methods[name]
    spec = provided.spec
    named = {"method": spec.presets, "runner": RUNNER_PRESETS, "preprocess": PREPROCESS_PRESETS}
    _check_preset(preset, named, f"method {name!r}")
    lines = _comment(f"method {name!r} ({spec.kind}), from {provided.distribution}: "
                     f"{spec.description}", "")
    if spec.predict_keys:
        lines += _comment(f"Predict-only keys (a change reuses the fitted model): "
                          f"{', '.join(spec.predict_keys)}.", "")
    if spec.file_keys:
        lines += _comment(f"File keys (the file's sha256 joins the model key): "
                          f"{', '.join(spec.file_keys)}.", "")
    lines += _section("method", spec.default_config,
                      key_types(spec.factory, spec.default_config),
                      key_help(spec.factory, spec.default_config), spec.presets, preset,
                      inherited={"weights": "follows runner.weights (--weights), "
                                            "as the runner does"})
    return lines + _presets(named)


def _dataset_block(reg: Registry, name: str, preset: str | None) -> list[str]:
    provided = reg.datasets[name]
    spec = provided.spec
    _check_preset(preset, {"dataset": spec.presets, "runner": RUNNER_PRESETS,
                           "preprocess": PREPROCESS_PRESETS}, f"dataset {name!r}")
    lines = _comment(f"dataset {name!r} (splits: {', '.join(spec.splits)}), from "
                     f"{provided.distribution}: {spec.description}", "")
    lines.append("# As the --train-on dataset of a run, the same keys go in a `train:` section.")
    lines += _section("dataset", spec.default_config,
                      key_types(spec.factory, spec.default_config),
                      key_help(spec.factory, spec.default_config), spec.presets, preset)
    return lines + _presets({"dataset": spec.presets})


def _runner_block(preset: str | None) -> list[str]:
    _check_preset(preset, {"runner": RUNNER_PRESETS}, "the runner")
    types = {k: _type_of(v) for k, v in RUNNER_DEFAULTS.items()}
    types["max_test_volumes"] = types["max_train_volumes"] = "int >= 1 or None"
    lines = ["# runner: settings of the run itself, the same for every method"]
    lines += _section("runner", RUNNER_DEFAULTS, types, RUNNER_HELP, RUNNER_PRESETS, preset)
    return lines + _presets({"runner": RUNNER_PRESETS})


def _preprocess_block(preset: str | None) -> list[str]:
    _check_preset(preset, {"preprocess": PREPROCESS_PRESETS}, "preprocessing")
    defaults = preprocess_defaults()
    lines = ["# preprocess: the shared preprocessing of every training and test volume"]
    lines += _section("preprocess", defaults, key_types(PreprocessConfig, defaults),
                      key_help(PreprocessConfig, defaults), PREPROCESS_PRESETS, preset)
    return lines + _presets({"preprocess": PREPROCESS_PRESETS})


def _type_of(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "a list"}.get(
        type(value), "any")


# -- adbench run --print-config -----------------------------------------------------------------
def render_resolved(spec) -> str:
    """The resolved config of one run (a :class:`adbench.runner.RunSpec`) as a ``--config``
    file: running with it (and the same method, datasets, preset and seed) resolves to the
    same config."""
    d = spec.to_dict()
    head = [f"# adbench run --method {spec.method} --dataset {spec.dataset}"
            + (f" --train-on {spec.train_on}" if spec.train_on != spec.dataset else "")
            + (f" --preset {spec.preset}" if spec.preset else "")
            + f" --seed {spec.seed} --device {spec.device}",
            "# The fully resolved config (defaults <- preset <- --config <- --set); nothing "
            "was written.",
            f"# Key meanings: adbench config {spec.method} | {spec.dataset} | runner | preprocess"]
    body = {"method": d["method_config"], "dataset": d["dataset_config"]}
    if spec.train_on != spec.dataset:
        body["train"] = d["train_config"]
    body["preprocess"] = d["preprocess"]
    body["runner"] = d["runner"]
    text = yaml.safe_dump(body, default_flow_style=None, sort_keys=False, allow_unicode=True,
                          width=10_000)
    return "\n".join(head) + "\n" + text
