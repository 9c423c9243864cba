"""Reporting: run folders → leaderboards (md, LaTeX, CSV, HTML) and figures.

* :mod:`.rundir`  — read run folders (architecture §5);
* :mod:`.tables`  — the paper's Table 1 shape, stars and bold, md/LaTeX/CSV renderers;
* :mod:`.html`    — one self-contained, sortable, offline HTML page;
* :mod:`.figures` — Fig. 2 comparison, ROC curves, box plots, and per-run figures.
"""
from __future__ import annotations

from adbench.report.tables import (Leaderboard, build_leaderboard, render_csv, render_latex,
                                   render_markdown)
from adbench.rundir import RunDirError, RunRecord, find_runs, load_run

__all__ = ["RunDirError", "RunRecord", "find_runs", "load_run", "Leaderboard",
           "build_leaderboard", "render_markdown", "render_latex", "render_csv", "render_html"]


def render_html(lb, figures=(), **kw) -> str:
    """See :func:`adbench.report.html.render_html` (imported lazily: it is only for HTML)."""
    from adbench.report.html import render_html as _render
    return _render(lb, figures, **kw)
