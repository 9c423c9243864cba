"""HTML tooltips: which 95% CI a cell states, and that few volumes get no bootstrap CI."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from adbench.evaluation.stats import MIN_BOOTSTRAP_N, bootstrap_ci, mean_ci
from adbench.report.html import _tip, render_html
from adbench.report.tables import Cell, build_leaderboard
from adbench.rundir import find_runs


def cell(values):
    v = np.asarray(values, float)
    lo, hi, kind = mean_ci(v, seed=0)
    return Cell(mean=float(v.mean()), std=float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                n=v.size, n_nan=0, ci=(lo, hi), ci_kind=kind)


def test_three_volumes_get_a_t_interval_not_a_bootstrap_ci():
    v = [0.3, 0.5, 0.9]
    # the bug: a percentile bootstrap of 3 values is about [min, max]
    assert bootstrap_ci(v, seed=0) == pytest.approx((0.3, 0.9), abs=0.01)
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(v), scale=stats.sem(v))
    assert mean_ci(v)[:2] == pytest.approx((lo, hi), rel=1e-12) and mean_ci(v)[2] == "t"
    tip = _tip(cell(v))
    assert "n < 10: no bootstrap CI" in tip and "bootstrap over volumes" not in tip
    assert f"95% t-interval [{100 * lo:.2f}, {100 * hi:.2f}]" in tip


def test_enough_volumes_get_the_bootstrap_ci():
    v = np.linspace(0.4, 0.8, MIN_BOOTSTRAP_N)
    c = cell(v)
    assert c.ci_kind == "bootstrap" and c.ci == bootstrap_ci(v, seed=0)
    assert _tip(c).startswith(f"n={MIN_BOOTSTRAP_N}, NaN=0; 95% CI (percentile bootstrap over "
                              f"volumes) [{100 * c.ci[0]:.2f}, {100 * c.ci[1]:.2f}]")


def test_one_volume_no_ci():
    assert _tip(cell([0.5])) == "n=1, NaN=0; n < 2: no CI"


def test_page_tooltips_for_a_small_run(tmp_path, make_run):
    make_run("alpha", "synthA", {"auroc": [0.6, 0.7, 0.8], "dice_max": [0.1, 0.2, 0.3]})
    page = render_html(build_leaderboard(find_runs([tmp_path / "runs"])))
    assert page.count('title="n=3, NaN=0; n &lt; 10: no bootstrap CI; 95% t-interval [') == 2
    assert "percentile bootstrap over volumes when n ≥ 10, else a Student-t interval" in page
