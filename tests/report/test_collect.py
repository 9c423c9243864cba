"""collect(): the tidy frame matches the per-volume CSVs, and the leaderboard is built from it."""
from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest

from adbench.report import build_leaderboard, collect, find_runs, render_csv, render_markdown
from adbench.report.collect import RunSkipped
from adbench.rundir import RunFolder


def test_collect_matches_the_per_volume_csvs(tmp_path, make_run, table_values):
    for meth, vals in table_values.items():
        make_run(meth, "synthA", vals)
    make_run("alpha", "synthA", table_values["beta"], seed=1)
    make_run("zscore", "synthB", table_values["zscore"], config={"method_config": {"eps": 0.5}})
    make_run("zscore", "synthB", table_values["zscore"], config={"method_config": {"eps": 5.0}},
             run_id="r1")
    frame = collect(tmp_path / "runs")
    expected = []
    for pv in sorted((tmp_path / "runs").rglob("per_volume.csv")):   # read independently
        with open(pv, newline="") as f:
            for row in csv.DictReader(f):
                expected.append((str(pv.parent.resolve()), row))
    assert len(frame) == len(expected) == 6 * 12
    for (run_dir, row), (_, got) in zip(expected, frame.iterrows()):
        assert got["run_dir"] == run_dir and got["subject"] == row["subject"]
        for k in ("auroc", "dice_max", "auprc"):
            assert got[k] == float(row[k])        # exact: shortest round-trip floats
        assert got["n_lesion_voxels"] == int(row["n_lesion_voxels"])
    first = frame.iloc[0]
    assert (first["method"], first["dataset"], first["preset"]) == ("alpha", "synthA", None)
    assert sorted(frame[frame.method == "alpha"].seed.unique()) == [0, 1]
    z = frame[frame.method == "zscore"].drop_duplicates("run_dir")
    assert sorted(z.overrides) == ["", "eps=0.5", "eps=5.0"]
    assert sorted(z["config.eps"].dropna()) == [0.5, 5.0]
    assert list(frame.columns[:7]) == ["run_dir", "method", "dataset", "train_on", "preset",
                                       "seed", "overrides"]


def test_incomplete_folders_are_skipped_with_a_warning(tmp_path, make_run, table_values):
    make_run("alpha", "synthA", table_values["alpha"])
    RunFolder.create(tmp_path / "runs", "synthA", "beta", 0)     # running.json only: "killed"
    with pytest.warns(RunSkipped, match=r"beta.*(killed|running).*skipped"):
        frame = collect([tmp_path / "runs"])
    assert set(frame.method) == {"alpha"} and len(frame.attrs["skipped"]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(collect(tmp_path / "runs", warn=False).attrs["skipped"]) == 1


def test_the_leaderboard_is_built_from_the_frame(tmp_path, make_run, table_values):
    for meth, vals in table_values.items():
        make_run(meth, "synthA", vals)
    frame = collect(tmp_path / "runs")
    assert render_markdown(build_leaderboard(frame)) == render_markdown(
        build_leaderboard(find_runs([tmp_path / "runs"])))
    # a filtered frame gives the table of what is left, also without attrs (read from a CSV)
    keep = frame[frame.subject.isin([f"sub{i:03d}" for i in range(6)])].copy()
    keep.attrs = {}
    c = build_leaderboard(keep).tables[0].cells[("alpha", "synthA", "auroc")]
    v = table_values["alpha"]["auroc"][:6]
    assert c.n == 6 and c.mean == pytest.approx(np.mean(v)) and c.std == pytest.approx(np.std(v, ddof=1))


def test_printed_tables_carry_the_difference_to_the_best(tmp_path, make_run, table_values):
    from scipy import stats
    for meth, vals in table_values.items():
        make_run(meth, "synthA", vals)
    lb = build_leaderboard(collect(tmp_path / "runs"))
    t = lb.tables[0]
    d = np.asarray(table_values["beta"]["auroc"]) - table_values["alpha"]["auroc"]
    lo, hi = stats.t.interval(0.95, d.size - 1, loc=d.mean(), scale=stats.sem(d))
    diff = t.cells[("beta", "synthA", "auroc")].diff
    assert diff.ref == "alpha" and diff.ci_t == pytest.approx((lo, hi), rel=1e-12)
    assert diff.d_z == pytest.approx(d.mean() / d.std(ddof=1))
    assert t.cells[("alpha", "synthA", "auroc")].diff is None    # the reference itself
    # Holm over the table's 4 comparisons (2 rows x 2 metrics), by hand
    ps = {(r, m): t.cells[(r, "synthA", m)].diff.p for r in ("beta", "zscore")
          for m in ("auroc", "dice_max")}
    order = sorted(ps, key=ps.get)
    adj, run = {}, 0.0
    for i, k in enumerate(order):
        run = max(run, min(1.0, (4 - i) * ps[k]))
        adj[k] = run
    for (r, m), p in adj.items():
        assert t.cells[(r, "synthA", m)].diff.p_holm == pytest.approx(p, rel=1e-12)
    md = render_markdown(lb)
    line = next(ln for ln in md.splitlines()[md.splitlines().index(
        next(ln for ln in md.splitlines() if ln.startswith("| beta |"))) + 1:][:1])
    assert line.startswith("| ↳ Δ to best | Δ ")
    assert f"[{100 * lo:+.2f}, {100 * hi:+.2f}]; BCa [" in line
    assert "| ↳ Δ to best | best (reference) | best (reference) |" in md
    rows = list(csv.DictReader(__import__("io").StringIO(render_csv(lb))))
    b = next(r for r in rows if r["method"] == "beta" and r["metric"] == "auroc")
    assert b["ref_best"] == "alpha" and float(b["diff_ci95_t_low"]) == pytest.approx(lo)
    assert math.isfinite(float(b["diff_ci95_bca_low"])) and b["n_paired"] == "12"
