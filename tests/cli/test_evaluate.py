"""`adbench evaluate` on NIfTI files: same numbers as the runner's code path, clear errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from adbench.cli import main
from adbench.evaluation.volume import evaluate_volume
from adbench.rundir import read_per_volume, write_per_volume
from adbench.io import save_nifti

SHAPE = (16, 12, 8)
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])


def volume(seed):
    rng = np.random.default_rng(seed)
    brain = np.zeros(SHAPE, bool)
    brain[2:14, 2:10, 1:7] = True
    lesion = np.zeros(SHAPE, bool)
    z0 = 2 + seed % 3
    lesion[5:9, 4:7, z0:z0 + 2] = True
    amap = (rng.random(SHAPE) + 0.6 * lesion).astype(np.float32)
    amap[~brain] = 0.0
    image = rng.random(SHAPE).astype(np.float32)
    return amap, lesion, brain, image


def write_run_maps(run_dir, subjects):
    """A run folder as the runner writes it: maps + sidecars, per_volume.csv via the same writer."""
    rows = []
    for i, s in enumerate(subjects):
        amap, lesion, brain, image = volume(i)
        save_nifti(run_dir / "maps" / f"{s}.nii.gz", amap, AFFINE)
        save_nifti(run_dir / "maps" / f"{s}_image.nii.gz", image, AFFINE)
        save_nifti(run_dir / "maps" / f"{s}_brain.nii.gz", brain.astype(np.uint8), AFFINE)
        save_nifti(run_dir / "maps" / f"{s}_lesion.nii.gz", lesion.astype(np.uint8), AFFINE)
        rows.append({"subject": s, **evaluate_volume(amap, lesion, brain)})
    write_per_volume(run_dir / "per_volume.csv", rows)
    return rows


def test_reproduces_a_runs_per_volume_csv(tmp_path, capsys):
    run = tmp_path / "run"
    write_run_maps(run, ["synth-001", "synth-002", "synth-003"])
    out = tmp_path / "eval.csv"
    m = str(run / "maps")
    rc = main(["evaluate", "--maps", f"{m}/*.nii.gz", "--labels", f"{m}/*_lesion.nii.gz",
               "--brain-masks", f"{m}/*_brain.nii.gz", "--out", str(out)])
    assert rc == 0
    assert out.read_bytes() == (run / "per_volume.csv").read_bytes()


def test_external_names_pair_and_match_sklearn(tmp_path, capsys):
    for i in range(3):
        amap, lesion, brain, _ = volume(i)
        save_nifti(tmp_path / "pred" / f"case{i}_anomaly.nii.gz", amap, AFFINE)
        save_nifti(tmp_path / "gt" / f"case{i}_seg.nii.gz", (lesion * 4).astype(np.uint8), AFFINE)
        save_nifti(tmp_path / "gt" / f"case{i}_brainmask.nii", brain.astype(np.uint8), AFFINE)
    out = tmp_path / "res.csv"
    rc = main(["evaluate", "--maps", str(tmp_path / "pred/*.nii.gz"),
               "--labels", str(tmp_path / "gt/*_seg.nii.gz"),
               "--brain-masks", str(tmp_path / "gt/*_brainmask.nii"), "--slices", "brain",
               "--out", str(out)])
    assert rc == 0
    rows = read_per_volume(out)
    assert [r["subject"] for r in rows] == ["case0", "case1", "case2"]
    amap, lesion, brain, _ = volume(1)
    region = brain & brain.any(axis=(0, 1))[None, None, :]
    assert rows[1]["auroc"] == pytest.approx(roc_auc_score(lesion[region], amap[region]), abs=1e-12)
    assert rows[1]["n_slices"] == 6


def run_eval(tmp_path, maps, labels, brains=None, extra=()):
    out = tmp_path / "out.csv"
    argv = ["evaluate", "--maps", maps, "--labels", labels, "--out", str(out), *extra]
    if brains:
        argv += ["--brain-masks", brains]
    return main(argv), out


@pytest.mark.parametrize("problem", ["shape", "missing", "nonfinite", "affine", "nomatch"])
def test_errors_name_files_and_write_nothing(tmp_path, capsys, problem):
    for i in range(2):
        amap, lesion, brain, _ = volume(i)
        if problem == "nonfinite" and i == 1:
            amap[3, 3, 3] = math.nan
        save_nifti(tmp_path / "m" / f"s{i}.nii.gz", amap, AFFINE)
        if problem == "missing" and i == 1:
            continue
        lab = lesion[:, :, :6] if problem == "shape" and i == 1 else lesion
        aff = AFFINE * 2 if problem == "affine" and i == 0 else AFFINE
        aff[3, 3] = 1
        save_nifti(tmp_path / "l" / f"s{i}_seg.nii.gz", lab.astype(np.uint8), aff)
    maps = str(tmp_path / ("m/*.nii.gz" if problem != "nomatch" else "m/*.nope.nii.gz"))
    rc, out = run_eval(tmp_path, maps, str(tmp_path / "l/*.nii.gz"))
    err = capsys.readouterr().err
    assert rc != 0 and not out.exists()
    expect = {"shape": ["shape mismatch", "s1.nii.gz", "s1_seg.nii.gz"],
              "missing": ["no label", "s1.nii.gz", "missing pair"],
              "nonfinite": ["non-finite", "s1.nii.gz"],
              "affine": ["affine mismatch", "s0.nii.gz", "s0_seg.nii.gz", "--ignore-affine"],
              "nomatch": ["matches no file", "*.nope.nii.gz"]}[problem]
    for e in expect:
        assert e in err, (e, err)


def test_label_without_map_is_an_error(tmp_path, capsys):
    amap, lesion, brain, _ = volume(0)
    save_nifti(tmp_path / "m" / "s0.nii.gz", amap, AFFINE)
    save_nifti(tmp_path / "l" / "s0_seg.nii.gz", lesion.astype(np.uint8), AFFINE)
    save_nifti(tmp_path / "l" / "s7_seg.nii.gz", lesion.astype(np.uint8), AFFINE)
    rc, out = run_eval(tmp_path, str(tmp_path / "m/*.nii.gz"), str(tmp_path / "l/*.nii.gz"))
    err = capsys.readouterr().err
    assert rc != 0 and not out.exists() and "s7_seg.nii.gz has no anomaly map" in err


def test_run_dir_joins_a_leaderboard(tmp_path, capsys):
    for i in range(3):
        amap, lesion, brain, _ = volume(i)
        save_nifti(tmp_path / "m" / f"s{i}.nii.gz", amap, AFFINE)
        save_nifti(tmp_path / "l" / f"s{i}_seg.nii.gz", lesion.astype(np.uint8), AFFINE)
    rc, out = run_eval(tmp_path, str(tmp_path / "m/*.nii.gz"), str(tmp_path / "l/*.nii.gz"),
                       extra=["--run-dir", str(tmp_path / "ext"), "--method", "mytool",
                              "--dataset", "synth"])
    assert rc == 0
    assert "no --brain-masks" in capsys.readouterr().err
    assert (tmp_path / "ext" / "summary.json").exists()
    assert main(["leaderboard", str(tmp_path / "ext"), "--format", "csv"]) == 0
    text = capsys.readouterr().out
    assert "mytool,synth,auroc" in text and "selected axial slices" not in text
    # The same run folder again: refused before anything is written.
    (out).unlink()
    rc, out = run_eval(tmp_path, str(tmp_path / "m/*.nii.gz"), str(tmp_path / "l/*.nii.gz"),
                       extra=["--run-dir", str(tmp_path / "ext"), "--method", "x", "--dataset", "y"])
    assert rc != 0 and not out.exists()
