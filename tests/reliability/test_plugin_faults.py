"""Faulty third-party plugins (issue #18 item 6): each one is disabled alone, `adbench list`
reports it, and every other method and dataset still works from the command line."""
from __future__ import annotations

import importlib.metadata as md
import sys
import types

import pytest
import toydata

from adbench import MethodSpec, hookimpl, plugins
from adbench.cli import main
from adbench.plugins import build_registry


def _method_plugin(name: str, description: str):
    mod = types.ModuleType(f"plugin_{name}_{description}")

    @hookimpl
    def adbench_methods():
        return [MethodSpec(name=name, factory=dict, default_config={}, kind="baseline",
                           description=description)]

    mod.adbench_methods = adbench_methods
    return mod


@pytest.fixture
def use_registry(monkeypatch):
    """Make the CLI see ``reg`` as the process-wide registry."""
    def install(reg):
        monkeypatch.setattr(plugins, "_REGISTRY", reg)
        return reg
    return install


def _plugin_module(tmp_path, monkeypatch, name: str, body: str) -> md.EntryPoint:
    """A real module file ``name`` on sys.path and an entry point naming it."""
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return md.EntryPoint(name=name, value=name, group="adbench")


def _builtin(name: str) -> md.EntryPoint:
    return next(ep for ep in md.entry_points(group="adbench") if ep.name == name)


def test_duplicate_method_name_leaves_list_and_other_methods_working(use_registry, capsys, tmp_path):
    use_registry(build_registry(
        entry_points=[_builtin("zscore")],
        extra_plugins=[("toy", toydata, "toy-dist 1.0"),
                       ("plug-a", _method_plugin("dup", "first"), "dist-a 1.0"),
                       ("plug-b", _method_plugin("dup", "second"), "dist-b 2.0")]))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines()[1:] if line.startswith("  ")]
    assert "zscore" in listed and "toy" in listed
    clash = next(line for line in out.splitlines() if "'dup'" in line)
    assert "dist-a 1.0" in clash and "dist-b 2.0" in clash and "plug-a" in clash

    out_dir = tmp_path / "runs"
    assert main(["run", "--method", "dup", "--dataset", "toy", "-q", "-o", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert "'dup'" in err and "dist-a 1.0" in err and "dist-b 2.0" in err
    assert not out_dir.exists()

    # the rest still runs end to end
    assert main(["run", "--method", "zscore", "--dataset", "toy", "-q", "-o", str(out_dir)]) == 0
    assert list(out_dir.glob("toy/zscore/*/summary.json"))


@pytest.mark.parametrize("body, shown", [
    ("import sys\nsys.exit('licence file missing; bye')\n", "SystemExit: licence file missing; bye"),
    ("raise RuntimeError('needs CUDA 13')\n", "RuntimeError: needs CUDA 13"),
])
def test_plugin_raising_at_import_is_listed_broken_and_the_rest_works(
        body, shown, tmp_path, monkeypatch, use_registry, capsys):
    bad = _plugin_module(tmp_path, monkeypatch, "adbench_faulty_plugin", body)
    reg = use_registry(build_registry(entry_points=[bad, _builtin("zscore")],
                                      extra_plugins=[("toy", toydata, "toy-dist 1.0")]))
    assert shown in reg.broken["adbench_faulty_plugin"]
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "plugins that failed to load" in out and shown in out and "zscore" in out
    assert main(["run", "--method", "zscore", "--dataset", "toy", "-q",
                 "-o", str(tmp_path / "runs")]) == 0


def test_hook_calling_sys_exit_is_listed_broken(use_registry, capsys):
    mod = types.ModuleType("exiting_hook")

    @hookimpl
    def adbench_datasets():
        sys.exit(3)

    mod.adbench_datasets = adbench_datasets
    reg = use_registry(build_registry(entry_points=[_builtin("zscore")],
                                      extra_plugins=[("exiting", mod, "ex 0.1")]))
    assert "SystemExit" in reg.broken["exiting"] and "zscore" in reg.methods
    assert main(["list"]) == 0
    assert "exiting: SystemExit" in capsys.readouterr().out


def test_misspelt_hook_in_an_entry_point_disables_only_that_plugin(tmp_path, monkeypatch, use_registry,
                                                                   capsys):
    typo = _plugin_module(tmp_path, monkeypatch, "adbench_typo_plugin",
                          "from adbench import hookimpl\n\n@hookimpl\ndef adbench_method():\n"
                          "    return []\n")
    use_registry(build_registry(entry_points=[typo, _builtin("zscore")]))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "adbench_typo_plugin: implements unknown hook(s) adbench_method" in out
    assert "zscore" in out
