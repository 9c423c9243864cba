"""A method's config is its constructor signature: defaults derived, types and ranges checked
in resolve, before anything is written."""
from __future__ import annotations

from typing import Annotated, Literal, Sequence

import pytest

from adbench import Detector, MethodSpec
from adbench.cli import main
from adbench.errors import ConfigError, PluginError
from adbench.params import (Fraction, NonNegativeFloat, PositiveInt, Range, check_config, describe,
                            signature_defaults)


class Toy(Detector):
    def __init__(self, n: PositiveInt = 3, rate: Fraction = 0.5, scale: NonNegativeFloat = 1.0,
                 mode: Literal["a", "b"] = "a", names: Sequence[str] = ("x", "y"),
                 limit: int | None = None, flag: bool = True, extra: dict | None = None,
                 strict: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)] = 0.5):
        self.n, self.rate, self.scale, self.mode, self.names = n, rate, scale, mode, names
        self.limit, self.flag, self.extra, self.strict = limit, flag, extra, strict


def test_defaults_are_derived_from_the_signature_with_tuples_as_lists():
    assert signature_defaults(Toy, "toy") == {"n": 3, "rate": 0.5, "scale": 1.0, "mode": "a",
                                              "names": ["x", "y"], "limit": None, "flag": True,
                                              "extra": None, "strict": 0.5}
    spec = MethodSpec(name="toy", factory=Toy, kind="baseline", description="toy")
    assert spec.default_config["names"] == ["x", "y"]
    with pytest.raises(PluginError, match="differ from the parameters"):
        MethodSpec(name="toy", factory=Toy, kind="baseline", description="toy",
                   default_config={"n": 3})

    class NoDefault(Detector):
        def __init__(self, n: int):
            self.n = n
    with pytest.raises(PluginError, match="'n' .* has no default"):
        MethodSpec(name="nd", factory=NoDefault, kind="baseline", description="x")


@pytest.mark.parametrize("key,value", [
    ("n", 1), ("n", 10**9), ("rate", 0), ("rate", 1), ("rate", 0.25), ("scale", 0), ("scale", 2),
    ("mode", "b"), ("names", ["p"]), ("names", []), ("limit", None), ("limit", 5),
    ("flag", False), ("extra", {"a": 1}), ("strict", 0.999)])
def test_good_values_pass(key, value):
    check_config(Toy, {key: value}, "method 'toy'")


@pytest.mark.parametrize("key,value,expected", [
    ("n", 0, "int >= 1"), ("n", 2.0, "int >= 1"), ("n", True, "int >= 1"), ("n", "3", "int >= 1"),
    ("rate", 1.5, r"float in \[0, 1\]"), ("rate", -0.1, r"float in \[0, 1\]"),
    ("scale", "abc", "float >= 0"), ("scale", float("nan"), "float >= 0"),
    ("mode", "c", "one of 'a', 'b'"), ("names", "xy", "a list of str"), ("names", [1], "a list of str"),
    ("limit", 1.5, "int or None"), ("flag", 1, "bool"), ("extra", [1], "a mapping or None"),
    ("strict", 1.0, r"float in \(0, 1\)"), ("strict", 0, r"float in \(0, 1\)")])
def test_bad_values_name_key_value_and_expected_type(key, value, expected):
    with pytest.raises(ConfigError, match=rf"method 'toy' config key '{key}': got .* expected {expected}"):
        check_config(Toy, {key: value}, "method 'toy'")


def test_describe_reads_well():
    assert describe(PositiveInt) == "int >= 1"
    assert describe(int | None) == "int or None"
    assert describe(Fraction) == "float in [0, 1]"


def test_wrongly_typed_set_exits_2_before_any_run_folder(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["run", "--method", "padim", "--dataset", "synth", "--preset", "smoke",
                 "--set", "eps=abc", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "'eps'" in err and "'abc'" in err and "float >= 0" in err
