"""`adbench leaderboard` on run folders with maps: four formats and the figures."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from adbench.cli import main
from adbench.evaluation.volume import evaluate_volume
from adbench.io import save_nifti
from adbench.rundir import RunFolder, write_run

SHAPE = (20, 16, 8)
AFFINE = np.eye(4)


def make_runs(root, n=5):
    """Two methods on one dataset, same subjects: 'sharp' sees the lesion clearly, 'blurry' less."""
    rng = np.random.default_rng(0)
    rows = {"sharp": [], "blurry": []}
    for i in range(n):
        brain = np.zeros(SHAPE, bool)
        brain[2:18, 2:14, 1:7] = True
        lesion = np.zeros(SHAPE, bool)
        lesion[6:10 + i % 3, 5:9, 2 + i % 3:5] = True
        image = np.where(brain, 0.5 + 0.4 * lesion, -1).astype(np.float32)
        for meth, gain in (("sharp", 1.5), ("blurry", 0.4)):
            amap = np.where(brain, rng.random(SHAPE) + gain * lesion, 0).astype(np.float32)
            d = root / "synth" / meth / "run1" / "maps"
            save_nifti(d / f"v{i}.nii.gz", amap, AFFINE)
            save_nifti(d / f"v{i}_image.nii.gz", image, AFFINE)
            save_nifti(d / f"v{i}_brain.nii.gz", brain.astype(np.uint8), AFFINE)
            save_nifti(d / f"v{i}_lesion.nii.gz", lesion.astype(np.uint8), AFFINE)
            rows[meth].append({"subject": f"v{i}", **evaluate_volume(amap, lesion, brain)})
    for meth, r in rows.items():
        write_run(root / "synth" / meth / "run1", r, method=meth, dataset="synth", seed=0)
    return rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return root, make_runs(root)


@pytest.mark.parametrize("fmt", ["md", "latex", "csv"])
def test_text_formats(runs, tmp_path, fmt, capsys):
    root, rows = runs
    out = tmp_path / f"lb.{fmt}"
    assert main(["leaderboard", str(root), "--format", fmt, "--out", str(out), "--no-maps"]) == 0
    text = out.read_text()
    sharp = 100 * np.mean([r["auroc"] for r in rows["sharp"]])
    if fmt == "csv":
        recs = list(csv.DictReader(io.StringIO(text)))
        rec = {(r["method"], r["metric"]): r for r in recs}
        assert float(rec[("sharp", "auroc")]["mean"]) == pytest.approx(sharp / 100)
        assert rec[("sharp", "auroc")]["best"] == "1" and rec[("blurry", "auroc")]["best"] == "0"
    else:
        assert f"{sharp:.2f}" in text and "blurry" in text
        assert ("**" if fmt == "md" else r"\mathbf{") + f"{sharp:.2f}" in text


def test_html_and_figures(runs, tmp_path, capsys):
    root, _ = runs
    out, figs = tmp_path / "lb.html", tmp_path / "figs"
    assert main(["leaderboard", str(root / "synth"), "--format", "html", "--out", str(out),
                 "--figures", str(figs), "--metrics", "auroc,dice_max,auprc"]) == 0
    names = sorted(p.name for p in figs.iterdir())
    assert names == ["pvalues_t1_synth_auprc.csv", "pvalues_t1_synth_auroc.csv",
                     "pvalues_t1_synth_dice_max.csv", "t1_synth_boxplot.png",
                     "t1_synth_comparison.png", "t1_synth_pvalues.png", "t1_synth_roc_pr.png"]
    import matplotlib.image as mpimg
    for p in figs.glob("*.png"):
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0.01  # a real, non-blank image
    html = out.read_text()
    assert html.count('src="data:image/png;base64,') == 4 and "AUPRC" in html


def test_errors(tmp_path, capsys):
    assert main(["leaderboard", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["leaderboard", str(tmp_path / "empty"), "--metrics", "auroc"]) == 2
    assert "no run folder" in capsys.readouterr().err
    assert main(["leaderboard", str(tmp_path), "--metrics", "dice"]) == 2
    assert "valid: auroc,dice_max,auprc" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["md", "latex", "csv", "html"])
def test_incomplete_folders_are_skipped_with_one_line_each(tmp_path, fmt, capsys):
    """README's Quickstart glob (runs/synth/*/*) after a failed run, a broken one and a stray
    folder: each is named on one stderr line with its state, the complete run is shown."""
    root = tmp_path / "runs"
    rows = [{"subject": f"v{i}", "auroc": 0.6 + 0.05 * i, "dice_max": 0.3, "auprc": 0.2,
             "n_voxels": 10, "n_lesion_voxels": 2, "n_slices": 1} for i in range(4)]
    write_run(root / "synth" / "zscore" / "done", rows, method="zscore", dataset="synth", seed=0)
    failed = RunFolder.create(root, "synth", "zscore", 1)
    failed.write_config({"method": "zscore", "dataset": "synth", "seed": 1})
    failed.write_error(ValueError("bad input"))
    broken = write_run(root / "synth" / "padim" / "broken", rows, method="padim", dataset="synth")
    (broken / "per_volume.csv").unlink()
    (root / "synth" / "padim" / "notes").mkdir()
    paths = sorted(str(p) for p in root.glob("synth/*/*"))
    assert len(paths) == 4
    out = tmp_path / f"lb.{fmt}"
    assert main(["leaderboard", *paths, "--format", fmt, "--out", str(out), "--no-maps"]) == 0
    err = capsys.readouterr().err.splitlines()
    for folder, state in ((failed.path, "failed (ValueError: bad input)"),
                          (broken, "unreadable"), (root / "synth" / "padim" / "notes", "empty")):
        mine = [ln for ln in err if str(folder.resolve()) in ln]
        assert len(mine) == 1 and mine[0].endswith("; skipped")
        assert mine[0].startswith(f"adbench leaderboard: {folder.resolve()}: {state}")
    assert "zscore" in out.read_text()

    assert main(["leaderboard", str(failed.path), str(broken)]) == 2
    err = capsys.readouterr().err
    assert "failed (ValueError: bad input); skipped" in err and "no complete run folder" in err


@pytest.mark.slow
def test_end_to_end_two_real_runs(tmp_path, monkeypatch, capsys):
    """Two `adbench run` seeds on the toy dataset: `evaluate` on a run's maps/ reproduces the
    metrics of its per_volume.csv exactly, and the leaderboard builds in all four formats."""
    import toydata

    import adbench.plugins as plugins

    reg = plugins.build_registry(extra_plugins=[("toy", toydata, "adbench-tests 0")])
    monkeypatch.setattr(plugins, "_REGISTRY", reg)
    out = tmp_path / "runs"
    for seed in ("0", "1"):
        assert main(["run", "-m", "zscore", "-d", "toy", "--preset", "smoke", "--seed", seed,
                     "-o", str(out), "-q"]) == 0
    runs = sorted(p for p in out.glob("toy/zscore/*") if p.is_dir())
    assert len(runs) == 2
    m = runs[0] / "maps"
    ev = tmp_path / "ev.csv"
    assert main(["evaluate", "--maps", f"{m}/*.nii.gz", "--labels", f"{m}/*_lesion.nii.gz",
                 "--brain-masks", f"{m}/*_brain.nii.gz", "--out", str(ev)]) == 0
    # every column evaluate writes is the run's, value for value, in the same order (the run
    # adds what needs its dataset: lesion_ml, lesion_type, and the validation thresholds)
    with open(ev, newline="") as f1, open(runs[0] / "per_volume.csv", newline="") as f2:
        ev_rows, run_rows = list(csv.DictReader(f1)), list(csv.DictReader(f2))
    assert len(ev_rows) == len(run_rows) >= 2 and set(ev_rows[0]) <= set(run_rows[0])
    assert {"auroc", "dice_max", "auprc"} <= set(ev_rows[0])
    assert [dict(r) for r in ev_rows] == [{k: r[k] for k in ev_rows[0]} for r in run_rows]
    for fmt in ("md", "latex", "csv", "html"):
        f = tmp_path / f"lb.{fmt}"
        assert main(["leaderboard", str(out), "--format", fmt, "--out", str(f)]) == 0
        # smoke rows always say they are pipeline checks; the two seeds are one row
        text = f.read_text().replace(r"\_", "_")
        assert "zscore (smoke: pipeline check)" in text and "seed 1" not in text
        assert "2 seeds" in text or fmt == "csv"


def test_label_free_threshold_dice_as_a_column(tmp_path, capsys):
    """`--metrics dice_fpr1` tabulates the runner's Dice at the 1 %-FPR threshold: the cell is
    the mean of the per-volume column; runs without the column show n/a."""
    counts = {"n_voxels": 100, "n_lesion_voxels": 10, "n_slices": 2}
    rows = {"a": [0.10, 0.30, 0.20], "b": [0.05, 0.15, 0.10]}
    for meth, vals in rows.items():
        write_run(tmp_path / "synth" / meth / "run1",
                  [{"subject": f"v{i}", "auroc": 0.5 + v, "dice_max": 2 * v, "auprc": v, **counts,
                    "dice_fpr1": v} for i, v in enumerate(vals)],
                  method=meth, dataset="synth", seed=0)
    write_run(tmp_path / "synth" / "c" / "run1",
              [{"subject": f"v{i}", "auroc": 0.6, "dice_max": 0.3, "auprc": 0.2, **counts}
               for i in range(3)],
              method="c", dataset="synth", seed=0)
    out = tmp_path / "lb.md"
    assert main(["leaderboard", str(tmp_path / "synth"), "--metrics", "auroc,dice_fpr1",
                 "--out", str(out), "--no-maps"]) == 0
    lines = {ln.split("|")[1].strip(): ln for ln in out.read_text().splitlines()
             if ln.startswith("| ") and not ln.startswith(("| ↳", "| Method"))}
    assert "Dice@FPR1%" in out.read_text()
    assert f"{100 * np.mean(rows['a']):.2f}" in lines["a"] and "n/a" in lines["c"]
    assert main(["leaderboard", str(tmp_path / "synth"), "--metrics", "dice_fpr2x"]) == 2
