"""`adbench config` and `adbench run --print-config`: the config a user can see is the config
the runner uses (checked by feeding the printed YAML back through ``--config``)."""
from __future__ import annotations

import inspect

import pytest
import yaml

from adbench.cli import main
from adbench.commands.config import render
from adbench.config import PREPROCESS_PRESETS, RUNNER_DEFAULTS, RUNNER_HELP, RUNNER_PRESETS
from adbench.data.preprocess import PreprocessConfig
from adbench.params import key_help
from adbench.plugins import UnknownNameError, get_registry
from adbench.runner import resolve

REG = get_registry()
BUILTIN = "adbench "   # distribution prefix of the built-in plugins


def _builtin(table):
    return sorted(n for n, p in table.items() if p.distribution.startswith(BUILTIN))


def _without_weights(cfg: dict) -> dict:
    # a method's `weights` follows runner.weights unless set: listed commented out
    return {k: v for k, v in cfg.items() if k != "weights"}


@pytest.mark.parametrize("name", _builtin(REG.methods))
def test_method_listing_is_yaml_of_the_defaults(name):
    spec = REG.method(name)
    data = yaml.safe_load(render(name))
    assert data["method"] == _without_weights(spec.default_config)


@pytest.mark.parametrize("name", _builtin(REG.datasets))
def test_dataset_listing_is_yaml_of_the_defaults(name):
    data = yaml.safe_load(render(name))
    assert data["dataset"] == REG.dataset(name).default_config


@pytest.mark.parametrize("name", _builtin(REG.methods))
def test_every_method_preset_listing_is_the_merged_config(name):
    spec = REG.method(name)
    for preset, layer in spec.presets.items():
        data = yaml.safe_load(render(name, preset=preset))
        want = {**spec.default_config, **layer}
        if "weights" not in layer:
            want = _without_weights(want)
        assert data["method"] == want, preset


@pytest.mark.parametrize("kind,name", [("method", n) for n in _builtin(REG.methods)]
                         + [("dataset", n) for n in _builtin(REG.datasets)])
def test_every_builtin_key_has_a_meaning(kind, name):
    spec = REG.method(name) if kind == "method" else REG.dataset(name)
    helps = key_help(spec.factory, spec.default_config)
    missing = sorted(set(spec.default_config) - set(helps))
    assert not missing, f"{kind} {name}: keys without a line in the class docstring: {missing}"
    assert "(not documented by its plugin)" not in render(name)


def test_runner_and_preprocess_sections_are_listed_completely():
    assert set(RUNNER_HELP) == set(RUNNER_DEFAULTS)
    assert yaml.safe_load(render("runner"))["runner"] == RUNNER_DEFAULTS
    pre = yaml.safe_load(render("preprocess"))["preprocess"]
    assert pre == PreprocessConfig().to_dict()
    assert set(key_help(PreprocessConfig, pre)) == set(pre)
    smoke = yaml.safe_load(render("runner", preset="smoke"))["runner"]
    assert smoke == {**RUNNER_DEFAULTS, **RUNNER_PRESETS["smoke"]}
    quick = yaml.safe_load(render("preprocess", preset="cpu-quick"))["preprocess"]
    assert quick["min_brain_fraction"] == PREPROCESS_PRESETS["cpu-quick"]["min_brain_fraction"]


def test_listing_shows_type_meaning_and_what_each_preset_changes(capsys):
    assert main(["config", "padim", "--preset", "smoke"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.strip().startswith("eps:"))
    assert lines[i - 1].strip().startswith("# float >= 0: ridge added to every covariance")
    (bs,) = [line for line in lines if line.strip().startswith("batch_size:")]
    assert "batch_size: 8" in bs and "preset smoke; default: 32" in bs
    assert any(line.startswith("# paper") and "n_features: 100" in line for line in lines)
    assert any("preprocess: min_brain_fraction: 0.35" in line for line in lines)  # cpu-quick


def test_a_listing_is_a_config_file_run_accepts(tmp_path):
    cfg = tmp_path / "patchcore.yaml"
    cfg.write_text(render("patchcore", preset="smoke") + render("runner", preset="smoke"))
    spec = resolve("patchcore", "synth", config_file=str(cfg))
    smoke = resolve("patchcore", "synth", preset="smoke")
    assert spec.method_config == smoke.method_config
    assert spec.runner == smoke.runner


def test_unknown_name_and_unknown_preset_are_errors_listing_the_choices(capsys):
    with pytest.raises(UnknownNameError, match="padim.*runner, preprocess"):
        render("padimm")
    assert main(["config", "padim", "--preset", "papr"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'papr'" in err and "paper" in err and "smoke" in err


def test_print_config_prints_the_resolved_config_and_writes_nothing(tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    args = ["run", "--method", "scrps", "--dataset", "synth", "--preset", "smoke",
            "--set", "k2=7", "--set", "dataset.n_test=2", "--set", "runner.batch_size=3",
            "--output", str(out), "--print-config"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert not out.exists() and not (tmp_path / "cache").exists(), "nothing written"
    data = yaml.safe_load(text)
    assert set(data) == {"method", "dataset", "preprocess", "runner"}
    assert data["method"]["k2"] == 7 and data["dataset"]["n_test"] == 2
    assert data["runner"]["batch_size"] == 3 and data["runner"]["weights"] == "random"
    # round trip: the printed file, given back, resolves to the same config
    f = tmp_path / "resolved.yaml"
    f.write_text(text)
    again = resolve("scrps", "synth", preset="smoke", config_file=str(f))
    first = resolve("scrps", "synth", preset="smoke", sets=args[8:14:2])
    a, b = again.to_dict(), first.to_dict()
    assert a == b


def test_print_config_with_another_training_set_has_a_train_section(tmp_path, capsys):
    brats, openbhb = tmp_path / "brats", tmp_path / "openbhb"
    brats.mkdir()
    openbhb.mkdir()
    assert main(["run", "-m", "zscore", "-d", "brats", "--data-root", str(brats),
                 "--train-on", "openbhb", "--train-root", str(openbhb),
                 "--print-config"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["train"]["data_root"] == str(openbhb)
    assert data["dataset"]["data_root"] == str(brats)


def test_config_command_module_follows_the_command_contract():
    import adbench.commands.config as mod
    assert inspect.isfunction(mod.add_parser) and inspect.isfunction(mod.main)
