"""The HTML leaderboard: one self-contained static page that opens offline.

Everything is inline: CSS, a few lines of JavaScript that sort a table when a column header is
clicked, and figures as base64 PNG ``data:`` URLs. A Content-Security-Policy forbids any
network access, so the page behaves the same on a laptop without a connection. The sort state
is mirrored in the URL fragment (``#sort=<table>.<column>.<asc|desc>``), so a sorted view can
be shared or bookmarked; the page applies it when it loads.
"""
from __future__ import annotations

import base64
import html
import math
from datetime import datetime, timezone

from adbench import __version__
from adbench.evaluation.stats import MIN_BOOTSTRAP_N
from adbench.report.differences import diff_text
from adbench.report.render import _footnotes, fmt_cell
from adbench.report.tables import METRIC_LABELS, Leaderboard, Table

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1b1b1b}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:2rem}
.warning{background:#fde8e8;border:2px solid #c81e1e;color:#7a0c0c;padding:.6rem 1rem;
 margin:.5rem 0;font-weight:600}
table.lb{border-collapse:collapse;margin:.5rem 0;font-variant-numeric:tabular-nums}
table.lb th,table.lb td{border-bottom:1px solid #ccc;padding:.3rem .7rem;text-align:right}
table.lb .method{text-align:left}
table.lb th[colspan]{text-align:center}
table.lb th.sortable{cursor:pointer;user-select:none} table.lb th.sortable:hover{background:#eef}
table.lb th[aria-sort=ascending]::after{content:" \\25B2"}
table.lb th[aria-sort=descending]::after{content:" \\25BC"}
td.best{font-weight:700} .notes{font-size:.85rem;color:#444}
td .diff{display:block;font-weight:400;font-size:.72rem;color:#555;white-space:nowrap}
figure{display:inline-block;margin:1rem 1rem 1rem 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #ddd} figcaption{font-size:.85rem;color:#444}
"""

# Sorting: numbers from data-v (empty = NaN, always last), text otherwise; stable.
_JS = """
function lbSort(tid, col, dir) {
  var t = document.getElementById(tid); if (!t) return;
  var ths = t.querySelectorAll('th.sortable');
  var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  var key = function (r) { var c = r.cells[col]; var v = c.getAttribute('data-v');
    return v === null ? c.textContent.trim().toLowerCase() : (v === '' ? null : parseFloat(v)); };
  rows = rows.map(function (r, i) { return [key(r), i, r]; });
  rows.sort(function (a, b) {
    if (a[0] === null || b[0] === null) { return (a[0] === null) - (b[0] === null) || a[1] - b[1]; }
    var c = a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0; return (dir === 'asc' ? c : -c) || a[1] - b[1]; });
  rows.forEach(function (r) { body.appendChild(r[2]); });
  ths.forEach(function (th) { th.removeAttribute('aria-sort'); });
  ths.forEach(function (th) { if (+th.getAttribute('data-col') === col)
    th.setAttribute('aria-sort', dir === 'asc' ? 'ascending' : 'descending'); });
}
document.addEventListener('click', function (e) {
  var th = e.target.closest('th.sortable'); if (!th) return;
  var tid = th.closest('table').id, col = +th.getAttribute('data-col');
  var dir = th.getAttribute('aria-sort') === 'descending' ? 'asc' : 'desc';
  lbSort(tid, col, dir);
  history.replaceState(null, '', '#sort=' + tid + '.' + col + '.' + dir);
});
function lbFromHash() {
  var m = /^#sort=([\\w-]+)\\.(\\d+)\\.(asc|desc)$/.exec(location.hash);
  if (m) lbSort(m[1], +m[2], m[3]);
}
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', lbFromHash);
else lbFromHash();
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _ci_text(c) -> str:
    """The 95% CI of a cell's mean, saying which interval it is (:func:`~adbench.evaluation.
    stats.mean_ci` decides)."""
    if c.ci_kind == "bootstrap":
        return (f"95% CI (percentile bootstrap over volumes) "
                f"[{100 * c.ci[0]:.2f}, {100 * c.ci[1]:.2f}]")
    if c.ci_kind == "t":
        return (f"n < {MIN_BOOTSTRAP_N}: no bootstrap CI; 95% t-interval "
                f"[{100 * c.ci[0]:.2f}, {100 * c.ci[1]:.2f}]")
    return "n < 2: no CI"


def _tip(c) -> str:
    """Tooltip: counts, a 95% CI of the mean and the tests against the best other method."""
    parts = [f"n={c.n}, NaN={c.n_nan}"]
    ci = _ci_text(c)
    if ci:
        parts.append(ci)
    if c.best_other:
        parts.append(f"vs {c.best_other}: t-test p={c.p:.3g}, Wilcoxon p={c.p_wilcoxon:.3g}")
    if c.diff is not None:
        parts.append(f"difference to the best ({c.diff.ref}): {diff_text(c)}")
    return "; ".join(parts)


def _table_html(t: Table, idx: int) -> str:
    k = len(t.metrics)
    tid = f"lb-{idx + 1}"
    out = [f'<table class="lb" id="{tid}"><thead><tr>'
           f'<th class="sortable method" data-col="0" rowspan="2">Method</th>']
    out += [f'<th colspan="{k}">{_e(d)}</th>' for d in t.datasets]
    out.append("</tr><tr>")
    col = 1
    for d in t.datasets:
        for m in t.metrics:
            out.append(f'<th class="sortable" data-col="{col}" data-dataset="{_e(d)}" '
                       f'data-metric="{_e(m)}">{_e(METRIC_LABELS.get(m, m))}</th>')
            col += 1
    out.append("</tr></thead><tbody>")
    for row in t.rows:
        out.append(f'<tr><td class="method">{_e(row)}</td>')
        for d in t.datasets:
            for m in t.metrics:
                c = t.cells.get((row, d, m))
                v = "" if c is None or not math.isfinite(c.mean) else repr(c.mean)
                tip = "" if c is None else _tip(c)
                sup = ("<sup>*</sup>" if c and c.star else "") + ("<sup>†</sup>" if c and c.n_nan else "")
                cls = ' class="best"' if c and c.best else ""
                dt = diff_text(c)
                diff = f'<span class="diff">{_e(dt)}</span>' if dt else ""
                out.append(f'<td{cls} data-v="{v}" title="{_e(tip)}">{_e(fmt_cell(c))}{sup}'
                           f"{diff}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render_html(lb: Leaderboard, figures: list[tuple[str, bytes]] = (), *,
                title: str = "adbench leaderboard") -> str:
    """The page as a string. figures: (caption, PNG bytes) pairs, embedded as data URLs."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    parts += [f'<div class="warning" role="alert">{_e(w)}</div>' for w in lb.warnings]
    for i, t in enumerate(lb.tables):
        parts.append(f"<h2>{_e(t.title)}</h2>")
        parts.append(_table_html(t, i))
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in _footnotes(lb, t))
                     + "</ul>")
    if figures:
        parts.append("<h2>Figures</h2>")
        for caption, png in figures:
            b64 = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{b64}">'
                         f"<figcaption>{_e(caption)}</figcaption></figure>")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f'<p class="notes">adbench {_e(__version__)}, generated {stamp}. '
                 "Click a column header to sort. Hover a cell for n, a 95% CI of the mean "
                 f"(percentile bootstrap over volumes when n ≥ {MIN_BOOTSTRAP_N}, else a Student-t "
                 "interval) and the paired tests against the best other method; the small line "
                 "under a value (Δ) is its paired difference to the column's best method, as in "
                 "the printed tables.</p>")
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts)
