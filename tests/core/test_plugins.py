"""The plugin manager: good, broken and duplicate plugins, one discovery path."""
from __future__ import annotations

import importlib.metadata as md
import types

import pytest
import toydata

from adbench import DatasetSpec, MethodSpec, hookimpl
from adbench.plugins import PluginError, UnknownNameError, build_registry


def _method_plugin(name: str):
    mod = types.ModuleType(f"plugin_{name}")

    @hookimpl
    def adbench_methods():
        return [MethodSpec(name=name, factory=dict, default_config={}, kind="baseline",
                           description=f"method {name}")]

    mod.adbench_methods = adbench_methods
    return mod


def test_builtins_come_through_entry_points():
    eps = {ep.name: ep.value for ep in md.entry_points(group="adbench")}
    assert eps["zscore"] == "adbench.methods.zscore.plugin"
    reg = build_registry()
    assert "zscore" in reg.methods
    assert reg.methods["zscore"].plugin == "zscore"
    assert reg.methods["zscore"].distribution.startswith("adbench ")


def test_good_plugin_is_registered_with_its_origin():
    reg = build_registry(entry_points=[], extra_plugins=[("toy", toydata, "toy-dist 1.0")])
    assert reg.dataset("toy").splits == ("train", "test")
    assert reg.datasets["toy"].distribution == "toy-dist 1.0"


def test_broken_plugin_is_listed_and_does_not_break_others():
    bad = md.EntryPoint(name="broken", value="adbench_no_such_module_xyz.plugin", group="adbench")
    good = md.EntryPoint(name="zscore", value="adbench.methods.zscore.plugin", group="adbench")
    reg = build_registry(entry_points=[bad, good])
    assert "zscore" in reg.methods
    assert "broken" in reg.broken
    assert "adbench_no_such_module_xyz" in reg.broken["broken"]


def test_plugin_whose_hook_raises_is_listed_as_broken():
    mod = types.ModuleType("raiser")

    @hookimpl
    def adbench_methods():
        raise RuntimeError("boom")

    mod.adbench_methods = adbench_methods
    reg = build_registry(entry_points=[], extra_plugins=[("raiser", mod, "r 0.1"),
                                                         ("ok", _method_plugin("fine"), "ok 1")])
    assert "fine" in reg.methods and "boom" in reg.broken["raiser"]


def test_duplicate_name_is_disabled_alone_and_its_error_names_both_distributions():
    reg = build_registry(entry_points=[], extra_plugins=[("a", _method_plugin("same"), "dist-a 1.0"),
                                                         ("b", _method_plugin("same"), "dist-b 2.0"),
                                                         ("c", _method_plugin("other"), "dist-c 3.0")])
    assert "same" not in reg.methods and reg.method("other").description == "method other"
    with pytest.raises(PluginError) as err:
        reg.method("same")
    msg = str(err.value)
    assert "same" in msg and "dist-a 1.0" in msg and "dist-b 2.0" in msg and "dist-c" not in msg
    assert reg.broken["method 'same'"] == msg       # what `adbench list` prints


def test_misspelt_hook_disables_only_that_plugin():
    mod = types.ModuleType("typo")

    @hookimpl
    def adbench_method():  # missing "s"
        return []

    mod.adbench_method = adbench_method
    reg = build_registry(entry_points=[], extra_plugins=[("typo", mod, "t 1"),
                                                         ("ok", _method_plugin("fine"), "ok 1")])
    assert "fine" in reg.methods
    assert "adbench_method" in reg.broken["typo"] and "adbench_methods" in reg.broken["typo"]


def test_unknown_name_lists_valid_names_and_closest_match():
    reg = build_registry(entry_points=[], extra_plugins=[("m", _method_plugin("patchcore"), "d 1"),
                                                         ("n", _method_plugin("padim"), "d 1")])
    with pytest.raises(UnknownNameError) as err:
        reg.method("patchcor")
    msg = str(err.value)
    assert "Did you mean 'patchcore'" in msg and "padim" in msg


def test_spec_validation():
    with pytest.raises(PluginError, match="kind"):
        MethodSpec(name="x", factory=dict, default_config={}, kind="magic", description="")
    with pytest.raises(PluginError, match="splits"):
        DatasetSpec(name="x", factory=dict, default_config={}, splits=("val",), description="")


def test_lifecycle_hooks_observe_a_run(tmp_path):
    seen = []
    mod = types.ModuleType("logger")

    @hookimpl
    def adbench_run_started(run_dir, config):
        seen.append(("started", run_dir.name, config["method"]))

    @hookimpl
    def adbench_run_finished(run_dir, summary):
        seen.append(("finished", run_dir.name, summary["n_volumes"]))

    mod.adbench_run_started, mod.adbench_run_finished = adbench_run_started, adbench_run_finished
    from adbench.runner import run
    reg = build_registry(extra_plugins=[("toy", toydata, "t"), ("logger", mod, "l")])
    d = run("zscore", "toy", registry=reg, output=tmp_path, quiet=True)
    assert seen == [("started", d.name, "zscore"), ("finished", d.name, 3)]
