"""The multi-GPU flow of README: train a generator with the training command, then run SCRPS
on it with ``--set generator=PATH`` (no StyleGAN2 training in the run)."""
from __future__ import annotations

import json

import pytest

from adbench.cli import main
from adbench.io import file_sha256
from adbench.methods.scrps import train as train_cli


@pytest.mark.slow
def test_run_uses_a_generator_trained_by_the_training_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    sg = tmp_path / "sg"
    assert train_cli.main(["--dataset", "synth", "--preset", "smoke", "--out", str(sg),
                           "--no-progress", "--set", "iterations=2", "--set", "num_samples=2"]) == 0
    gen = sg / "generator.pt"
    sha = file_sha256(gen)
    out = tmp_path / "runs"
    argv = ["run", "--method", "scrps", "--dataset", "synth", "--preset", "smoke", "-o", str(out),
            "-q", "--set", f"generator={gen}"]
    assert main(argv) == 0
    (run_dir,) = out.glob("synth/scrps/*")
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["inputs"] == {"generator": {"path": str(gen.resolve()), "sha256": sha}}
    assert s["model"]["status"] == "fitted"
    # no StyleGAN2 was trained: no training folder in the model cache, and the log says so
    work = tmp_path / "cache" / "models" / "scrps"
    assert not list(work.rglob("stylegan-*")) and not list(work.rglob("stylegan2-checkpoint.pt"))
    assert "no StyleGAN2 training" in (run_dir / "log.txt").read_text()
    # the file's content keys the model: the same bytes under another name reuse the model,
    # other bytes fit a new one
    copy = tmp_path / "renamed.pt"
    copy.write_bytes(gen.read_bytes())
    assert main(argv[:-1] + [f"generator={copy}"]) == 0
    statuses = sorted(json.loads(p.read_text())["model"]["status"]
                      for p in out.glob("synth/scrps/*/summary.json"))
    assert statuses == ["cached", "fitted"]
    capsys.readouterr()
    assert main(argv[:-1] + [f"generator={tmp_path / 'nope.pt'}"]) == 2
    err = capsys.readouterr().err
    assert "'generator'" in err and "nope.pt is not a file" in err
    assert len(list(out.glob("synth/scrps/*"))) == 2      # nothing written for the bad path
