"""`adbench run`, `adbench list`, `adbench --version` and every CLI error, via main(args)."""
from __future__ import annotations

import json

import pytest
import toydata
import yaml

import adbench
import adbench.plugins as plugins
from adbench.cli import main


@pytest.fixture
def toy_registry(monkeypatch):
    reg = plugins.build_registry(extra_plugins=[("toy", toydata, "adbench-tests 0")])
    monkeypatch.setattr(plugins, "_REGISTRY", reg)
    return reg


def _run_dirs(out):
    return sorted(p for p in out.glob("*/*/*") if p.is_dir())


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert adbench.__version__ in capsys.readouterr().out


def test_list_shows_methods_datasets_and_their_plugins(toy_registry, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.strip().startswith("zscore"))
    assert "[zscore from adbench" in line
    assert "toy" in out and "adbench-tests 0" in out


def test_run_writes_the_run_folder_and_reuses_the_model(toy_registry, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["run", "--method", "zscore", "--dataset", "toy", "--preset", "smoke", "--output", str(out), "-q"]
    assert main(args) == 0
    (d1,) = _run_dirs(out)
    assert d1.parent == out / "toy" / "zscore"
    for name in ("config.yaml", "per_volume.csv", "summary.json", "log.txt", "maps"):
        assert (d1 / name).exists(), name
    cfg = yaml.safe_load((d1 / "config.yaml").read_text())
    assert cfg["seed"] == 0 and cfg["versions"]["adbench"] == adbench.__version__
    assert cfg["dataset_config"]["n_test"] == 2  # the toy smoke preset
    header = (d1 / "per_volume.csv").read_text().splitlines()[0].split(",")
    assert header[:7] == ["subject", "auroc", "dice_max", "auprc", "n_voxels", "n_lesion_voxels", "n_slices"]
    s = json.loads((d1 / "summary.json").read_text())
    for k in ("auroc_mean", "auroc_std", "dice_max_mean", "dice_max_std", "n_volumes"):
        assert k in s
    assert s["n_volumes"] == 2 and s["model"]["status"] == "fitted"
    assert s["auroc_mean"] > 0.8  # bright blobs vs smooth healthy anatomy

    assert main(args) == 0  # same command again: new folder, cached model, same numbers
    d1, d2 = _run_dirs(out)
    s2 = json.loads((d2 / "summary.json").read_text())
    assert s2["model"]["status"] == "cached"
    assert (d1 / "per_volume.csv").read_text() == (d2 / "per_volume.csv").read_text()
    assert "reusing cached model" in (d2 / "log.txt").read_text()


def test_predict_only_keys_reuse_the_fitted_model(toy_registry, tmp_path):
    out = tmp_path / "runs"
    base = ["run", "-m", "zscore", "-d", "toy", "-o", str(out), "-q"]
    assert main(base) == 0
    assert main(base + ["--set", "eps=0.2"]) == 0          # predict-only key: same fitted model
    assert main(base + ["--set", "brain_only=false"]) == 0  # fit key: a new model
    status = [json.loads((d / "summary.json").read_text())["model"]["status"] for d in _run_dirs(out)]
    assert status == ["fitted", "cached", "fitted"]
    d1, d2, _ = _run_dirs(out)
    assert (d1 / "per_volume.csv").read_text() != (d2 / "per_volume.csv").read_text()


def test_set_and_config_file_reach_the_method(toy_registry, tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("method:\n  eps: 0.5\ndataset:\n  n_test: 1\n")
    out = tmp_path / "runs"
    assert main(["run", "-m", "zscore", "-d", "toy", "--config", str(conf), "--set", "brain_only=false",
                 "--set", "dataset.n_train=2", "-o", str(out), "-q"]) == 0
    cfg = yaml.safe_load((_run_dirs(out)[0] / "config.yaml").read_text())
    assert cfg["method_config"] == {"eps": 0.5, "brain_only": False}
    assert cfg["dataset_config"]["n_test"] == 1 and cfg["dataset_config"]["n_train"] == 2


@pytest.mark.parametrize("argv, needles", [
    (["run", "-m", "zscor", "-d", "toy"], ["unknown method 'zscor'", "Did you mean 'zscore'", "Valid methods"]),
    (["run", "-m", "zscore", "-d", "tyo"], ["unknown dataset 'tyo'", "Did you mean 'toy'"]),
    (["run", "-m", "zscore", "-d", "toy", "--set", "epz=1"], ["unknown method 'zscore' config key 'epz'",
                                                              "Did you mean 'eps'", "brain_only"]),
    (["run", "-m", "zscore", "-d", "toy", "--set", "dataset.n_tset=1"], ["n_tset", "n_test"]),
    (["run", "-m", "zscore", "-d", "toy", "--set", "novalue"], ["key=value"]),
    (["run", "-m", "zscore", "-d", "toy", "--preset", "turbo"], ["unknown preset 'turbo'", "smoke"]),
    (["run", "-m", "zscore", "-d", "toy", "--data-root", "/x"], ["--data-root", "data_root"]),
    (["run", "-m", "zscore", "-d", "toy", "--config", "/no/such.yaml"], ["/no/such.yaml", "not found"]),
])
def test_cli_errors_exit_nonzero_with_a_clear_message_and_no_run_folder(toy_registry, tmp_path, capsys, argv, needles):
    out = tmp_path / "runs"
    assert main(argv + ["-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    for n in needles:
        assert n in err, (n, err)
    assert not out.exists() or not _run_dirs(out)


def test_missing_data_root_names_the_path(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    out = tmp_path / "runs"
    code = main(["run", "-m", "zscore", "-d", "folder", "--data-root", str(missing), "-o", str(out), "-q"])
    assert code == 2
    assert str(missing) in capsys.readouterr().err
    assert not out.exists() or not _run_dirs(out)


def test_failed_run_leaves_no_summary(toy_registry, tmp_path, monkeypatch):
    from adbench.methods.zscore.detector import ZScore

    def boom(self, train, ctx):
        raise RuntimeError("fit exploded")

    monkeypatch.setattr(ZScore, "_fit", boom)
    out = tmp_path / "runs"
    with pytest.raises(RuntimeError):
        main(["run", "-m", "zscore", "-d", "toy", "-o", str(out), "-q"])
    (d,) = _run_dirs(out)
    assert not (d / "summary.json").exists()
    assert "fit exploded" in (d / "error.txt").read_text()


def test_preprocess_preset_applies_and_sets_override_it():
    from adbench.config import PREPROCESS_PRESETS, preprocess_config
    from adbench.runner import resolve

    assert resolve("zscore", "synth").preprocess.min_brain_fraction == 0.05
    quick = resolve("zscore", "synth", preset="cpu-quick").preprocess
    assert quick.min_brain_fraction == PREPROCESS_PRESETS["cpu-quick"]["min_brain_fraction"]
    assert quick.slices_test == "lesion"  # the test protocol never changes with a preset
    over = resolve("zscore", "synth", preset="cpu-quick",
                   sets=["preprocess.min_brain_fraction=0.2"]).preprocess
    assert over.min_brain_fraction == 0.2
    with pytest.raises(adbench.config.ConfigError, match="min_brain_fractoin"):
        preprocess_config("cpu-quick", {"min_brain_fractoin": 0.2})
