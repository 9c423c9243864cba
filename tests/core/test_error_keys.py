"""Every config key an error message (or any other user-facing text in the package) names is a
real key: a message that says "set the config key `vgg16_weights`" for a key that does not
exist sends the user to a second error."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from adbench.config import RUNNER_DEFAULTS, preprocess_defaults
from adbench.plugins import get_registry

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("adbench", "methods", "datasets") for p in (ROOT / d).rglob("*.py"))

PATTERNS = [
    re.compile(r"--set '?([a-z_][\w.]*)="),             # --set k2=20, --set 'dataset.x={…}'
    re.compile(r"config key [`'\"]([A-Za-z_]\w*)[`'\"]"),   # the config key `weights`
    # not module paths: adbench.runner.resolve is a function, runner.resolve() a call
    re.compile(r"(?<![\w.])(runner|preprocess|dataset|train)\.([a-z_]\w*)\b(?!\()"),
]


def _keys() -> dict[str, set[str]]:
    reg = get_registry()
    method = {k for p in reg.methods.values() for k in p.spec.default_config}
    dataset = {k for p in reg.datasets.values() for k in p.spec.default_config}
    return {"method": method, "dataset": dataset, "train": dataset,
            "runner": set(RUNNER_DEFAULTS), "preprocess": set(preprocess_defaults())}


def _strings(path: Path):
    """(line, text) of every string constant, f-string pieces included; docstrings too."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def _named_keys(text: str):
    for pat in PATTERNS:
        for m in pat.finditer(text):
            if len(m.groups()) == 2:
                yield m.group(1), m.group(2)
                continue
            key = m.group(1)
            section, _, rest = key.partition(".")
            if rest and section in ("runner", "preprocess", "dataset", "train"):
                yield section, rest
            elif not rest:
                yield "method", key
            # other dotted names (module paths) are not config keys


MODULE_WORDS = {"py", "yaml", "json", "csv", "tsv", "key", "keys"}  # "dataset.py", "train.tsv"


def test_every_key_named_in_user_facing_text_exists():
    keys = _keys()
    bad = []
    for path in SOURCES:
        for line, text in _strings(path):
            for section, key in _named_keys(text):
                if key in MODULE_WORDS:
                    continue
                if key not in keys[section] and not (section == "method" and
                                                     key in keys["dataset"]):
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {section} key {key!r}")
    assert not bad, "texts name keys that do not exist:\n" + "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("text,expected", [
    ("set the config key `vgg16_weights`", [("method", "vgg16_weights")]),
    ("--set 'dataset.seg_overrides={a: b}'", [("dataset", "seg_overrides")]),
    ("use runner.localisation=native", [("runner", "localisation")]),
    ("calls adbench.runner.resolve on each cell", []),
])
def test_the_scanner_finds_keys(text, expected):
    assert set(_named_keys(text)) == set(expected)
