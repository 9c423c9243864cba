"""Reporting: run folders → leaderboards (md, LaTeX, CSV, HTML) and figures.

* :mod:`.rundir`  — read run folders (architecture §5);
* :mod:`.collect` — the tidy results table: one row per run and volume (pandas);
* :mod:`.identity` — which runs are one cell (the resolved config, overrides included) and
  the row labels that say what differs;
* :mod:`.tables`  — the paper's Table 1 shape, stars and bold, seeds merged;
* :mod:`.differences` — paired differences to the best method, Holm, p-value matrices;
* :mod:`.render`  — Markdown, LaTeX and CSV text of a leaderboard;
* :mod:`.html`    — one self-contained, sortable, offline HTML page;
* :mod:`.curves`  — exact pooled ROC and precision-recall curves;
* :mod:`.figures` — Fig. 2 comparison, ROC and PR curves, box plots, and per-run figures;
* :mod:`.stat_figures` — the p-value heatmap and each metric against lesion size.
"""
from __future__ import annotations

from adbench.report.collect import collect
from adbench.report.tables import (Leaderboard, build_leaderboard, render_csv, render_latex,
                                   render_markdown)
from adbench.rundir import RunDirError, RunRecord, find_runs, load_run

__all__ = ["collect", "RunDirError", "RunRecord", "find_runs", "load_run", "Leaderboard",
           "build_leaderboard", "render_markdown", "render_latex", "render_csv", "render_html"]


def render_html(lb, figures=(), **kw) -> str:
    """See :func:`adbench.report.html.render_html` (imported lazily: it is only for HTML)."""
    from adbench.report.html import render_html as _render
    return _render(lb, figures, **kw)
