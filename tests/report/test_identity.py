"""Leaderboard identity: a row is one resolved config (overrides included), seeds aggregate
into it, and keys that do not change numbers (seed, device, versions, runner.figures, ...)
never split a row."""
from __future__ import annotations

import copy
import csv
import io
import json
import os

import numpy as np
import pytest
from scipy.stats import ttest_rel

from adbench.report import build_leaderboard, find_runs, render_csv, render_latex, render_markdown
from adbench.report.identity import NOT_IDENTITY, identity

BASE = {  # the sections of a resolved config.yaml, as the runner writes them
    "device": "cpu", "weights": "imagenet", "strict": False,
    "method_config": {"eps": 0.05, "brain_only": True},
    "dataset_config": {"n_test": 3, "seed": 0, "cache_dir": None, "progress": None,
                       "generate": "all"},
    "train_config": {"n_test": 3, "seed": 0, "cache_dir": None, "progress": None,
                     "generate": "all"},
    "preprocess": {"size": [160, 128], "min_brain_fraction": 0.05},
    "runner": {"weights": "imagenet", "batch_size": 16, "max_test_volumes": None,
               "write_maps": True, "figures": True},
    "versions": {"adbench": "0.1.0", "torch": "2.4.0"},
}


def cfg(**changes) -> dict:
    """BASE with ``section__key=value`` changes (``method_config__eps=5.0``), or a top-level key."""
    out = copy.deepcopy(BASE)
    for k, v in changes.items():
        if "__" in k:
            section, key = k.split("__")
            out[section][key] = v
        else:
            out[k] = v
    return out


def vals(rng, n=12, shift=0.0):
    base = rng.uniform(0.6, 0.8, size=n)
    return {"auroc": base + shift, "dice_max": base - 0.3 + shift}


def rows_md(md: str) -> list[str]:
    return [ln.split(" | ")[0][2:] for ln in md.splitlines()
            if ln.startswith("| ") and not ln.startswith(("| Method", "| ↳ Δ to best"))]


def test_a_method_override_is_its_own_row_labelled_by_it(tmp_path, make_run):
    rng = np.random.default_rng(0)
    make_run("zscore", "synth", vals(rng), config=cfg(), run_id="a")
    make_run("zscore", "synth", vals(rng), config=cfg(method_config__eps=5.0), run_id="b")
    make_run("beta", "synth", vals(rng), config=cfg())
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    assert not [w for w in lb.warnings if "only the newer" in w]
    t = lb.tables[0]
    assert t.rows == ["beta", "zscore (eps=0.05)", "zscore (eps=5.0)"]
    md = render_markdown(lb)
    assert rows_md(md) == t.rows and "shortened" not in md
    assert r"zscore (eps=5.0) & " in render_latex(lb)
    recs = list(csv.DictReader(io.StringIO(render_csv(lb))))
    assert {r["method"]: json.loads(r["differs"]) for r in recs} == {
        "beta": {}, "zscore (eps=0.05)": {"eps": 0.05}, "zscore (eps=5.0)": {"eps": 5.0}}


def test_the_ablation_loop_gives_one_row_per_value_in_natural_order(tmp_path, make_run):
    rng = np.random.default_rng(1)
    for l2 in range(13):
        make_run("scrps", "synth", vals(rng), run_id=f"l2-{l2}",
                 config=cfg(method_config={"l2": l2, "k2": 5, "two_stage": True}))
    t = build_leaderboard(find_runs([tmp_path / "runs"])).tables[0]
    assert t.rows == [f"scrps (l2={i})" for i in range(13)]


def test_sections_are_prefixed_and_rows_line_up_across_datasets(tmp_path, make_run):
    rng = np.random.default_rng(2)
    make_run("zscore", "synth", vals(rng), run_id="a", config=cfg())
    make_run("zscore", "brats", vals(rng), run_id="c",     # another dataset, its own config
             config=cfg(dataset_config={"data_root": "/data/BraTS2020", "max_subjects": None}))
    t = build_leaderboard(find_runs([tmp_path / "runs"])).tables[0]
    assert t.rows == ["zscore"] and set(t.runs) == {("zscore", "synth"), ("zscore", "brats")}

    make_run("zscore", "synth", vals(rng), run_id="b",
             config=cfg(dataset_config__n_test=5, preprocess__size=[96, 80]))
    t = build_leaderboard(find_runs([tmp_path / "runs"])).tables[0]
    # a dataset key joins the rows of the dataset where it differs; the brats run has no such
    # key, so it keeps a row of its own rather than claim synth's n_test=3
    assert t.rows == ["zscore (dataset.n_test=3, preprocess.size=[160, 128])",
                      "zscore (dataset.n_test=5, preprocess.size=[96, 80])",
                      "zscore (preprocess.size=[160, 128])"]
    assert set(t.runs) == {(t.rows[0], "synth"), (t.rows[1], "synth"), (t.rows[2], "brats")}


def test_keys_that_do_not_change_numbers_do_not_split_rows():
    from adbench.rundir import RunRecord

    a = RunRecord(path=None, summary={"method": "m", "dataset": "d"}, per_volume=[], config=cfg())
    b = RunRecord(path=None, summary={"method": "m", "dataset": "d"}, per_volume=[], config=cfg(
        seed=3, device="cuda", versions={"adbench": "9"}, runner__batch_size=256,
        runner__figures=False, runner__write_maps=False, dataset_config__cache_dir="/c",
        dataset_config__data_root="/elsewhere", dataset_config__progress=True,
        dataset_config__generate="needed"))
    assert identity(a) == identity(b)
    assert ("method", "eps") in identity(a) and ("preprocess", "size") in identity(a)
    assert {"seed", "device", "versions", "runner.figures"} <= NOT_IDENTITY


def test_seeds_aggregate_per_volume_then_over_volumes(tmp_path, make_run):
    rng = np.random.default_rng(3)
    base = rng.uniform(0.6, 0.8, size=12)
    per_seed = [base + rng.normal(0, 0.02, 12) for _ in range(3)]
    for seed, v in enumerate(per_seed):
        make_run("alpha", "synth", {"auroc": v + 0.05, "dice_max": v}, seed=seed, config=cfg())
    beta = base + rng.normal(0, 0.002, 12)
    make_run("beta", "synth", {"auroc": beta, "dice_max": beta}, config=cfg())
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    t = lb.tables[0]
    assert t.rows == ["alpha", "beta"] and not lb.warnings
    c = t.cells[("alpha", "synth", "auroc")]
    oracle = np.mean(np.stack(per_seed) + 0.05, axis=0)          # per volume, mean over seeds
    assert c.mean == pytest.approx(oracle.mean()) and c.std == pytest.approx(oracle.std(ddof=1))
    assert (c.n, c.n_seeds) == (12, 3)
    assert c.seed_std == pytest.approx(np.std([(v + 0.05).mean() for v in per_seed], ddof=1))
    assert c.best_other == "beta" and c.p == pytest.approx(ttest_rel(oracle, beta).pvalue)
    assert [r.seed for r in t.members[("alpha", "synth")]] == [0, 1, 2]
    assert t.runs[("alpha", "synth")].values("auroc") == pytest.approx(
        dict(zip([f"sub{i:03d}" for i in range(12)], oracle)))      # what the figures read

    md = render_markdown(lb)
    cell = f"{100 * c.mean:.2f} ± {100 * c.std:.2f} (3 seeds, ±{100 * c.seed_std:.2f})"
    assert cell in md and "(k seeds, ±s)" in md
    assert f"(3 seeds, $\\pm${100 * c.seed_std:.2f})" in render_latex(lb)
    rec = next(r for r in csv.DictReader(io.StringIO(render_csv(lb)))
               if r["method"] == "alpha" and r["metric"] == "auroc")
    assert (rec["n_seeds"], json.loads(rec["seeds"])) == ("3", [0, 1, 2])
    assert float(rec["seed_std"]) == pytest.approx(c.seed_std) and len(json.loads(rec["runs"])) == 3


def test_seeds_with_different_volumes_use_the_shared_ones(tmp_path, make_run):
    rng = np.random.default_rng(4)
    v = vals(rng, n=4)
    make_run("alpha", "synth", v, seed=0, config=cfg())
    make_run("alpha", "synth", {k: x[:3] for k, x in v.items()}, seed=1, config=cfg())
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    assert lb.tables[0].cells[("alpha", "synth", "auroc")].n == 3
    assert any("only the 3 of 4" in w for w in lb.warnings)


def test_a_presentation_key_is_a_rerun_newest_kept(tmp_path, make_run):
    rng = np.random.default_rng(5)
    old = make_run("zscore", "synth", vals(rng), run_id="a", config=cfg(runner__figures=False))
    os.utime(old, (1e9, 1e9))
    new = make_run("zscore", "synth", vals(rng), run_id="b", config=cfg())
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    t = lb.tables[0]
    assert t.rows == ["zscore"] and t.runs[("zscore", "synth")].path == new
    (w,) = [w for w in lb.warnings if "only the newer run is shown" in w]
    assert w.startswith(str(old)) and "runner.figures" in w


def test_long_differences_are_cut_and_given_in_full(tmp_path, make_run):
    rng = np.random.default_rng(6)
    make_run("scrps", "synth", vals(rng), run_id="a",
             config=cfg(method_config={"l2": 9, "k1": 50, "k2": 10, "two_stage": True}))
    make_run("scrps", "synth", vals(rng), run_id="b",
             config=cfg(method_config={"l2": 0, "k1": 25, "k2": 5, "two_stage": False}))
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    assert lb.tables[0].rows == ["scrps (l2=0, k1=25, k2=5, …)", "scrps (l2=9, k1=50, k2=10, …)"]
    md = render_markdown(lb)
    assert "scrps (l2=0, k1=25, k2=5, …): l2=0, k1=25, k2=5, two_stage=false" in md
    assert r"\dots{}" in render_latex(lb)
    recs = {r["method"]: json.loads(r["differs"])
            for r in csv.DictReader(io.StringIO(render_csv(lb)))}
    assert recs["scrps (l2=0, k1=25, k2=5, …)"] == {"l2": 0, "k1": 25, "k2": 5, "two_stage": False}


def test_a_preset_speaks_for_the_keys_it_sets(tmp_path, make_run):
    rng = np.random.default_rng(7)
    make_run("zscore", "synth", vals(rng), run_id="a",
             config=cfg(preset="smoke", dataset_config__n_test=2, runner__weights="random"))
    make_run("zscore", "synth", vals(rng), run_id="b", config=cfg(preset="cpu-quick"))
    make_run("zscore", "synth", vals(rng), run_id="c", config=cfg(preset="cpu-quick",
                                                                   method_config__eps=1.0))
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    assert lb.tables[0].rows == ["zscore (preset cpu-quick, eps=0.05)",
                                 "zscore (preset cpu-quick, eps=1.0)",
                                 "zscore (smoke: pipeline check, eps=0.05)"]
    assert "runner.weights=random" in render_markdown(lb)   # in the footnote of the smoke row


def test_labels_cut_to_three_keys_stay_unique(tmp_path, make_run):
    rng = np.random.default_rng(8)
    for rid, (l2, two) in {"a": (9, True), "b": (9, False), "c": (0, False)}.items():
        make_run("scrps", "synth", vals(rng), run_id=rid, config=cfg(
            method_config={"l2": l2, "k1": 5 * (l2 + 1), "k2": l2 + 1, "two_stage": two}))
    rows = build_leaderboard(find_runs([tmp_path / "runs"])).tables[0].rows
    assert rows == ["scrps (l2=0, k1=5, k2=1, …)", "scrps (l2=9, k1=50, k2=10, two_stage=false)",
                    "scrps (l2=9, k1=50, k2=10, two_stage=true)"]


def test_a_training_set_speaks_for_its_config(tmp_path, make_run):
    rng = np.random.default_rng(9)
    make_run("scrps", "brats", vals(rng), run_id="a", config=cfg())
    make_run("scrps", "brats", vals(rng), run_id="b", train_on="openbhb",
             config=cfg(train_config={"data_root": "/data/OpenBHB", "n_subjects": 640}))
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    assert lb.tables[0].rows == ["scrps (train: openbhb)", "scrps (train: own)"]
