"""Grid files: validation errors before anything runs, and the shipped grids' plans."""
from __future__ import annotations

from pathlib import Path

import pytest

from adbench.benchmark.grid import GridError, load_grid
from adbench.benchmark.plan import CACHED, SHARED, TRAIN, plan
from adbench.cli import main
from tests.benchmark.conftest import write_grid

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("body, needles", [
    ("methods: [zscore, nosuch]\ndatasets: [synth]\n",
     ["methods[1]", "unknown method 'nosuch'", "Valid methods:", "zscore", "scrps"]),
    ("methods: [zscore]\ndatasets: [synth, nodata]\n",
     ["datasets[1]", "unknown dataset 'nodata'", "Valid datasets:", "synth", "brats"]),
    ("methods:\n  - {name: zscore, config: {epss: 1}}\ndatasets: [synth]\n",
     ["methods[0] (zscore, dataset synth)", "'epss'", "Did you mean 'eps'?", "brain_only"]),
    ("methods: [zscore]\ndatasets: [synth]\nsweep: {l2: [0, 9]}\n",
     ["sweep.l2", "<method>.<key>", "zscore"]),
    ("methods: [zscore]\ndatasets: [openbhb]\n",
     ["datasets[0]", "'openbhb' has no 'test' split"]),
    ("methods: [zscore]\ndatasets: [brats]\n",
     ["datasets[0]", "--root brats=PATH"]),
    ("methods: [zscore]\ndatasets: [synth]\nseed: [0]\n",
     ["unknown key(s) ['seed']", "seeds"]),
    ("methods:\n  - {name: zscore, sweep: {eps: [-1.0]}}\ndatasets: [synth]\n",
     ["methods[0] (zscore, eps=-1.0, dataset synth)", "eps"]),
])
def test_invalid_grid_exits_2_before_anything_runs(tmp_path, capsys, body, needles):
    grid = write_grid(tmp_path, body, "bad.yaml")
    out = tmp_path / "out"
    assert main(["benchmark", str(grid), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"grid file {grid}" in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()   # nothing written


def test_method_prefixed_sets_reach_only_that_method(tmp_path):
    grid = write_grid(tmp_path, """\
        methods: [zscore, padim]
        datasets: [synth]
        settings: {zscore.eps: 2.5, runner.batch_size: 4}
    """)
    _, specs = load_grid(grid, sets=["padim.n_features=20"], preset="smoke")
    z, p = specs
    assert z.method_config["eps"] == 2.5 and "d" not in z.method_config
    assert p.method_config["n_features"] == 20 and p.method_config["eps"] != 2.5
    assert z.runner["batch_size"] == p.runner["batch_size"] == 4
    with pytest.raises(GridError, match=r"methods\[1\] \(padim.*'brain_only'"):
        load_grid(grid, sets=["brain_only=false"], preset="smoke")   # a bare key: every method


def _statuses(path, **kw):
    grid, specs = load_grid(path, **kw)
    planned, _ = plan(grid, specs, path.parent / "no-runs-here")
    return grid, planned


def test_table1_trains_each_method_once_and_tests_it_on_both_datasets(tmp_path):
    roots = {n: str(tmp_path) for n in ("openbhb", "brats", "atlas")}
    grid, planned = _statuses(BENCHMARKS / "table1.yaml", roots=roots, device="cpu",
                              sets=["mediclip.clip_weights=random"])
    methods = ["scrps", "fanogan", "ganomaly", "memae", "patchcore", "padim", "draem",
               "realnet", "mediclip", "zscore"]
    assert [c.method for c in grid.cells] == [m for m in methods for _ in ("brats", "atlas")]
    assert {pc.spec.train_on for pc in planned} == {"openbhb"}
    assert {pc.spec.preset for pc in planned} == {"paper"}
    for m in methods:
        mine = [pc for pc in planned if pc.cell.method == m]
        assert [pc.cell.dataset for pc in mine] == ["brats", "atlas"]
        assert len({pc.group for pc in mine}) == 1            # one model per method
        assert mine[0].status in (TRAIN, CACHED)
        if mine[0].status == TRAIN:
            assert mine[1].status == SHARED and mine[1].trainer == mine[0].cell.index


@pytest.mark.parametrize("name, n_cells, varied", [
    ("fig3-swap-l2.yaml", 13, {("l2", v) for v in range(13)}),
    ("fig3-k2.yaml", 8, {("k2", 5), ("k1", 25), ("l2", 9), ("l2", 0), ("k2", 20), ("k1", 100)}),
    ("fig3-retrieval-stages.yaml", 8, {("two_stage", True), ("two_stage", False), ("k2", 15)}),
])
def test_scrps_ablations_share_one_fitted_model(tmp_path, capsys, name, n_cells, varied):
    path = BENCHMARKS / name
    argv = ["benchmark", str(path), "--dry-run", "-o", str(tmp_path), "--device", "cpu",
            "--root", f"openbhb={tmp_path}", "--root", f"brats={tmp_path}"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{n_cells} cells: 0 done, 1 train a model, {n_cells - 1} reuse a model trained in " \
           f"this grid, 0 reuse a cached model (1 distinct fitted models)" in printed
    grid, planned = _statuses(path, roots={"openbhb": str(tmp_path), "brats": str(tmp_path)},
                              device="cpu")
    assert len(planned) == n_cells and len({pc.group for pc in planned}) == 1
    assert varied <= {kv for c in grid.cells for kv in c.varied}
    for pc in planned:   # the swept values reach the resolved config
        for k, v in pc.cell.varied:
            assert pc.spec.method_config[k] == v
    if name == "fig3-k2.yaml":
        assert all(pc.spec.method_config["k1"] == 5 * pc.spec.method_config["k2"] for pc in planned)


def test_table1_synth_expands_at_the_smoke_preset():
    grid, specs = load_grid(BENCHMARKS / "table1-synth.yaml", preset="smoke")
    assert [c.method for c in grid.cells] == ["scrps", "fanogan", "ganomaly", "memae",
                                              "patchcore", "padim", "draem", "realnet",
                                              "mediclip", "zscore"]
    assert {(s.dataset, s.train_on, s.preset) for s in specs} == {("synth", "synth", "smoke")}
