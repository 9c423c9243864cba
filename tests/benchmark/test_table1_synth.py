"""CI: `adbench benchmark benchmarks/table1-synth.yaml --preset smoke` prints a Table 1-shaped
leaderboard (every method of the grid a row, synth AUROC and ⌈Dice⌉ columns)."""
from __future__ import annotations

from pathlib import Path

import pytest

from adbench.benchmark.grid import read_grid_file
from adbench.cli import main

GRID = Path(__file__).resolve().parents[2] / "benchmarks" / "table1-synth.yaml"


@pytest.mark.slow
def test_table1_synth_smoke_prints_table1(tmp_path, shared_cache, capsys):
    methods = [m if isinstance(m, str) else m["name"] for m in read_grid_file(GRID)["methods"]]
    assert main(["benchmark", str(GRID), "--preset", "smoke", "-o", str(tmp_path),
                 "--formats", "md"]) == 0
    printed = capsys.readouterr().out
    headers = [ln for ln in printed.splitlines() if ln.startswith("| Method |")]
    # one table: random CLIP (MediCLIP) and random VGG16 (the others) are different backbones,
    # not different weights of one backbone, so nothing splits it
    assert len(headers) == 1 and headers[0].startswith("| Method | synth AUROC | synth ⌈Dice⌉")
    rows = [ln.split("|")[1].strip() for ln in printed.splitlines()
            if ln.startswith("| ") and not ln.startswith(("| Method |", "| ↳"))]
    assert {r.split(" (")[0] for r in rows} == set(methods)   # every method has a row
    assert "cells: 10 done" in (tmp_path / "table1-synth" / "report.md").read_text()
