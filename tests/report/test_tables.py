"""Leaderboards from constructed run folders: values, stars, bold, NaN notes, no silent mixing."""
from __future__ import annotations

import csv
import io
import math
import os

import numpy as np
import pytest
from scipy.stats import ttest_rel

from adbench.report import build_leaderboard, find_runs, render_csv, render_latex, render_markdown
from adbench.rundir import RunDirError

from .conftest import VGG_A, VGG_A_CACHE, VGG_RANDOM  # noqa: E402  (same folder)


def build(make_run, table_values, datasets=("synthA",)):
    for ds in datasets:
        for meth, vals in table_values.items():
            make_run(meth, ds, vals, weights=None if meth == "zscore" else VGG_A)


def test_cells_match_numpy_and_stars(tmp_path, make_run, table_values):
    build(make_run, table_values, ("synthA", "synthB"))
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    assert len(lb.tables) == 1 and not lb.warnings
    t = lb.tables[0]
    assert t.rows == ["alpha", "beta", "zscore"] and t.datasets == ["synthA", "synthB"]
    for meth, vals in table_values.items():
        for m, v in vals.items():
            c = t.cells[(meth, "synthA", m)]
            assert c.mean == pytest.approx(np.mean(v)) and c.std == pytest.approx(np.std(v, ddof=1))
            assert c.n == 12 and c.n_nan == 0
    a = t.cells[("alpha", "synthA", "auroc")]
    assert a.star and a.best and a.best_other == "beta"
    assert a.p == pytest.approx(ttest_rel(table_values["alpha"]["auroc"],
                                          table_values["beta"]["auroc"]).pvalue)
    assert not t.cells[("beta", "synthA", "auroc")].star


def test_markdown_latex_csv(tmp_path, make_run, table_values):
    build(make_run, table_values)
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    md = render_markdown(lb)
    mean = 100 * np.mean(table_values["alpha"]["auroc"])
    sd = 100 * np.std(table_values["alpha"]["auroc"], ddof=1)
    assert f"| alpha | **{mean:.2f} ± {sd:.2f}\\***" in md
    assert "| Method | synthA AUROC | synthA ⌈Dice⌉ |" in md
    zs = 100 * np.mean(table_values["zscore"]["dice_max"])
    assert f"{zs:.2f} ±" in md and f"**{zs:.2f}" not in md

    tex = render_latex(lb)
    assert r"\multicolumn{2}{c}{synthA}" in tex and r"\toprule" in tex
    assert rf"$\mathbf{{{mean:.2f} \pm {sd:.2f}}}^{{*}}$" in tex

    rows = list(csv.DictReader(io.StringIO(render_csv(lb))))
    assert len(rows) == 3 * 2
    r = next(x for x in rows if x["method"] == "alpha" and x["metric"] == "dice_max")
    assert float(r["mean"]) == pytest.approx(np.mean(table_values["alpha"]["dice_max"]))
    assert (r["star"], r["best"], r["best_other"]) == ("1", "1", "beta")
    assert r["slice_rule"] == "lesion"


def test_different_weights_never_share_a_table(tmp_path, make_run, table_values):
    build(make_run, table_values)
    make_run("gamma", "synthA", table_values["alpha"], weights=VGG_RANDOM)
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    assert len(lb.tables) == 2
    assert any("different pretrained weights" in w for w in lb.warnings)
    rows = sorted(tuple(t.rows) for t in lb.tables)
    assert rows == [("alpha", "beta", "zscore"), ("gamma", "zscore")]  # no-weights run in both
    md = render_markdown(lb)
    assert md.startswith("> **WARNING: runs used different pretrained weights")
    assert "source:random" in md
    make_run("gamma", "synthA", table_values["alpha"], seed=1,
             weights={"perceptual": {**VGG_RANDOM["perceptual"], "seed": 1}})
    make_run("gamma", "synthA", table_values["alpha"], seed=2,
             weights={"perceptual": {**VGG_RANDOM["perceptual"], "seed": 2}})
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    assert len(lb.tables) == 4  # random weights drawn with different seeds are different weights


def test_same_weights_from_different_sources_share_a_table(tmp_path, make_run, table_values):
    build(make_run, table_values)
    make_run("gamma", "synthA", table_values["alpha"], weights=VGG_A_CACHE)
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    assert len(lb.tables) == 1 and not lb.warnings  # same sha256: the same weights


def test_different_definitions_are_separated(tmp_path, make_run, table_values):
    build(make_run, table_values)
    make_run("delta", "synthA", table_values["beta"], slice_rule="brain")
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    assert len(lb.tables) == 2
    assert any("different metric definitions" in w for w in lb.warnings)
    assert {t.definitions["slice_rule"] for t in lb.tables} == {"lesion", "brain"}


def test_seeds_are_one_row_nan_is_noted_reruns_warned(tmp_path, make_run, table_values):
    vals = {k: np.array(v, dtype=float) for k, v in table_values["beta"].items()}
    make_run("beta", "synthA", vals, seed=0)
    vals1 = {k: v.copy() for k, v in vals.items()}
    vals1["auroc"][[2, 5]] = math.nan
    make_run("beta", "synthA", vals1, seed=1)
    old = make_run("beta", "synthA", vals, seed=1, run_id="r1")  # a re-run of seed 1 ...
    os.utime(old, (1e9, 1e9))  # ... made long ago: the NaN-holding run is the newer one
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    t = lb.tables[0]
    assert t.rows == ["beta"]  # two seeds, one row
    assert [w for w in lb.warnings if "only the newer run is shown" in w][0].startswith(str(old))
    c = t.cells[("beta", "synthA", "auroc")]
    assert (c.n, c.n_nan, c.n_seeds) == (10, 2, 2)  # a volume NaN in one seed is NaN in the mean
    assert c.mean == pytest.approx(np.nanmean(vals1["auroc"]))
    assert c.seed_std == pytest.approx(0.0, abs=1e-12)  # the seeds agree on the other volumes
    md = render_markdown(lb)
    assert "†" in md and "beta/synthA/auroc: 2" in md and "(2 seeds, ±0.00)" in md


def test_missing_files_are_named(tmp_path, make_run, table_values):
    d = make_run("beta", "synthA", table_values["beta"])
    (d / "per_volume.csv").unlink()
    with pytest.raises(RunDirError, match="per_volume.csv"):
        find_runs([d])
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="no run folder"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(RunDirError, match="no such run folder"):
        find_runs([tmp_path / "absent"])


def test_scan_runs_skips_what_find_runs_refuses(tmp_path, make_run, table_values):
    from adbench.rundir import scan_runs

    good = make_run("beta", "synthA", table_values["beta"])
    bad = make_run("beta", "synthA", table_values["beta"], run_id="r1")
    (bad / "summary.json").write_text("{")
    failed = tmp_path / "runs" / "synthA" / "beta" / "failed"
    failed.mkdir()
    (failed / "error.txt").write_text("Traceback ...\nValueError: bad input\n")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="not valid JSON"):
        find_runs([tmp_path / "runs"])
    runs, skipped = scan_runs([tmp_path / "runs", tmp_path / "empty", failed])
    assert [r.path for r in runs] == [good.resolve()]
    assert {st.path.name: st.state for st in skipped} == {
        "failed": "failed", bad.name: "unreadable", "empty": "empty"}
    assert all("\n" not in st.detail for st in skipped)
    with pytest.raises(RunDirError, match="no such run folder"):
        scan_runs([tmp_path / "absent"])


def test_csv_reports_wilcoxon_and_bootstrap(tmp_path, make_run, table_values):
    from scipy.stats import wilcoxon

    from adbench.evaluation.stats import bootstrap_ci
    build(make_run, table_values)
    rows = list(csv.DictReader(io.StringIO(render_csv(build_leaderboard(find_runs([tmp_path / "runs"]))))))
    r = next(x for x in rows if x["method"] == "alpha" and x["metric"] == "auroc")
    a, b = table_values["alpha"]["auroc"], table_values["beta"]["auroc"]
    assert float(r["p_wilcoxon_vs_best_other"]) == pytest.approx(wilcoxon(a, b).pvalue)
    assert (float(r["ci95_low"]), float(r["ci95_high"])) == pytest.approx(bootstrap_ci(a, seed=0))
    assert float(r["ci95_low"]) < np.mean(a) < float(r["ci95_high"])


def test_different_backbones_share_a_table_only_one_backbones_weights_split(
        tmp_path, make_run, table_values):
    """A CLIP-based run beside VGG16-based ones is one table (nothing disagrees); a second
    VGG16 identity splits only the VGG16 runs, and the CLIP and weight-free runs appear in
    both tables."""
    clip = {"method": {"backbone": "clip", "source": "random", "seed": 0, "sha256": None}}
    build(make_run, table_values)
    make_run("gamma", "synthA", table_values["beta"], weights=clip)
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    assert len(lb.tables) == 1 and not lb.warnings
    assert lb.tables[0].rows == ["alpha", "beta", "gamma", "zscore"]
    make_run("delta", "synthA", table_values["alpha"], weights=VGG_RANDOM)
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    assert sorted(tuple(t.rows) for t in lb.tables) == [("alpha", "beta", "gamma", "zscore"),
                                                         ("delta", "gamma", "zscore")]
    warning = next(w for w in lb.warnings if "different pretrained weights" in w)
    assert "vgg16: source:random" in warning and "clip" not in warning
