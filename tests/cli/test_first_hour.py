"""What a new user meets first: early device errors, labelled smoke results, progress bars
only where a person watches them."""
from __future__ import annotations

import sys

import pytest
import toydata
import torch

import adbench.plugins as plugins
from adbench.cli import SMOKE_NOTE, main
from adbench.io import show_progress


@pytest.fixture
def toy_registry(monkeypatch):
    reg = plugins.build_registry(extra_plugins=[("toy", toydata, "adbench-tests 0")])
    monkeypatch.setattr(plugins, "_REGISTRY", reg)
    return reg


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_device_is_an_error_before_any_run_folder(tmp_path, capsys):
    out = tmp_path / "runs"
    rc = main(["run", "-m", "padim", "-d", "synth", "--preset", "smoke", "--device", "cuda",
               "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--device 'cuda'" in err and "torch.cuda.is_available() is False" in err
    assert torch.__version__ in err and "--device cpu" in err
    assert not out.exists()


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu"])
def test_unknown_device_names_are_errors(tmp_path, capsys, device):
    rc = main(["run", "-m", "zscore", "--device", device, "-o", str(tmp_path / "runs")])
    assert rc == 2
    assert f"--device {device!r}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_cpu_device_is_recorded_as_torch_names_it(toy_registry, tmp_path, capsys):
    import yaml
    out = tmp_path / "runs"
    assert main(["run", "-m", "zscore", "-d", "toy", "--preset", "smoke", "--device", "cpu",
                 "-o", str(out), "-q"]) == 0
    (cfg,) = out.glob("*/*/*/config.yaml")
    assert yaml.safe_load(cfg.read_text())["device"] == "cpu"


def test_smoke_results_are_labelled_pipeline_checks(toy_registry, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", "-m", "zscore", "-d", "toy", "--preset", "smoke", "-o", str(out),
                 "-q"]) == 0
    assert SMOKE_NOTE in capsys.readouterr().out
    assert main(["run", "-m", "zscore", "-d", "toy", "-o", str(out), "-q"]) == 0
    assert SMOKE_NOTE not in capsys.readouterr().out
    assert main(["leaderboard", str(out), "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert "zscore (smoke: pipeline check)" in md
    assert "pipeline checks" in md and "not results" in md


def test_progress_bars_only_on_a_terminal_or_when_asked(monkeypatch):
    class Tty:
        def isatty(self):
            return True

    assert show_progress(True) and not show_progress(False)
    monkeypatch.setattr(sys, "stderr", Tty())
    assert show_progress(None)
    monkeypatch.setattr(sys, "stderr", None)
    assert not show_progress(None)


def test_a_run_into_a_log_draws_no_bar_unless_asked(toy_registry, tmp_path, capsys):
    args = ["run", "-m", "zscore", "-d", "toy", "--preset", "smoke", "-o", str(tmp_path / "r")]
    assert main(args) == 0                     # stderr is not a terminal under capsys
    assert "%|" not in capsys.readouterr().err
    assert main(args + ["--progress"]) == 0
    err = capsys.readouterr().err
    assert "toy/" in err and "%|" in err       # the per-volume bar of the training split
