"""The HTML leaderboard rendered by headless Chromium and read back from the live DOM."""
from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from adbench.report import build_leaderboard, find_runs, render_html
from adbench.report.differences import diff_text
from adbench.report.tables import fmt_cell

from .conftest import VGG_A, VGG_RANDOM

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (/usr/bin/chromium absent; "
                             "`apt-get install -y chromium`, as .ci/run does)")


class TableReader(HTMLParser):
    """Rows of every <table class="lb"> as lists of cell texts, plus warnings and images."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.warnings: list[str] = []
        self.images: list[str] = []
        self._table = self._row = self._cell = None
        self._in_tbody = self._in_warning = self._in_diff = False
        self._bold: list[bool] = []
        self.diffs: dict[str, list[list[str]]] = {}   # the small second line of each cell

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "lb" in (a.get("class") or ""):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody and self._table:
            self._row = []
            self.diffs.setdefault(self._table, []).append([])
        elif tag == "td" and self._row is not None:
            self._cell = ""
            self._row_bold = "best" in (a.get("class") or "")
        elif tag == "div" and "warning" in (a.get("class") or ""):
            self._in_warning = True
            self.warnings.append("")
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "span" and "diff" in (a.get("class") or "") and self._cell is not None:
            self._in_diff = True
            self.diffs[self._table][-1].append("")

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(("**" if self._row_bold else "") + self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_tbody = False
        elif tag == "table":
            self._table = None
        elif tag == "div":
            self._in_warning = False
        elif tag == "span":
            self._in_diff = False

    def handle_data(self, data):
        if self._in_diff:
            self.diffs[self._table][-1][-1] += data
        elif self._cell is not None:
            self._cell += data
        elif self._in_warning:
            self.warnings[-1] += data


def dump_dom(path: Path, fragment: str = "") -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--dump-dom",
           f"file://{path.resolve()}{fragment}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90,
                         env={"HOME": str(path.parent), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def make_page(tmp_path, make_run, table_values):
    for meth, vals in table_values.items():
        make_run(meth, "synthA", vals, weights=None if meth == "zscore" else VGG_A)
    make_run("gamma", "synthA", table_values["beta"], weights=VGG_RANDOM)
    lb = build_leaderboard(find_runs([tmp_path / "runs"]))
    png = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
           b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92"
           b"\xef\x00\x00\x00\x00IEND\xaeB`\x82")
    page = tmp_path / "leaderboard.html"
    page.write_text(render_html(lb, [("a figure", png)]))
    return lb, page


def test_page_is_self_contained(tmp_path, make_run, table_values):
    _, page = make_page(tmp_path, make_run, table_values)
    text = page.read_text()
    # No resource outside the file: no URL scheme other than data:, no <link>, CSP forbids fetches.
    assert "http" not in text.lower().replace("http-equiv", "")
    assert "<link" not in text and "src=\"data:image/png;base64," in text
    assert "default-src 'none'" in text


@needs_chromium
def test_chromium_renders_and_sorts_the_table(tmp_path, make_run, table_values):
    """One browser start: the page loads with a sort fragment, so the DOM shows the JS ran."""
    lb, page = make_page(tmp_path, make_run, table_values)
    idx = [("alpha" in t.rows) for t in lb.tables].index(True)
    t, tid = lb.tables[idx], f"lb-{idx + 1}"
    assert t.rows == ["alpha", "beta", "zscore"]  # order as written in the HTML source
    r = TableReader()
    r.feed(dump_dom(page, f"#sort={tid}.1.asc"))  # column 1: synthA AUROC, ascending
    assert len(r.tables) == 2  # different weights: two tables
    assert any("different pretrained weights" in w for w in r.warnings)
    rows = r.tables[tid]
    assert [row[0] for row in rows] == ["zscore", "beta", "alpha"]  # sorted in the browser
    alpha = rows[2]
    cell = t.cells[("alpha", "synthA", "auroc")]
    assert alpha[1] == "**" + fmt_cell(cell) + "*"  # bold (best) and starred
    mean = 100 * np.mean(table_values["alpha"]["auroc"])
    assert alpha[1].startswith(f"**{mean:.2f} ± ")
    zs = t.cells[("zscore", "synthA", "dice_max")]
    assert rows[0][2] == fmt_cell(zs) and not zs.best
    # the printed tables' second line is in the page too: Δ to the best, with its intervals
    assert r.diffs[tid][2][0] == "best (reference)"
    assert r.diffs[tid][0][0] == diff_text(t.cells[("zscore", "synthA", "auroc")])
    assert r.diffs[tid][0][0].startswith("Δ -") and "; BCa [" in r.diffs[tid][0][0]
    assert r.images and r.images[0].startswith("data:image/png;base64,")
