"""``adbench leaderboard``: tables (and figures) from run folders.

Reads every run folder at or below RUN_DIRS and prints (or writes with --out) the paper's
Table 1 shape as Markdown, LaTeX, CSV or one self-contained HTML page. Runs whose pretrained
weights or metric definitions differ go to separate tables, and a warning says so (also on
stderr). Under each method's line the printed tables give its paired difference to the best
method per column (95% t-interval, BCa bootstrap interval from 10 volumes on, Holm-adjusted p,
Cohen's d_z). --figures DIR writes the box plots, ROC curves, the Fig. 2 comparison, the
metric-against-lesion-size plots and the p-value heatmaps as PNG; the HTML page embeds them in
any case. The pairwise p-value matrices (paired t-test, uncorrected) are written as
``pvalues_t<i>_<dataset>_<metric>.csv`` beside --out and into --figures DIR.

The tables are built from the tidy frame of :func:`adbench.report.collect` (one row per run
and volume), which users can also build themselves for their own analyses.

Run folders that are not complete (no summary.json, or a file that cannot be read) are
skipped, each with a one-line warning naming the folder and its state (running, killed,
interrupted, failed, incomplete, unreadable), so ``adbench leaderboard runs/synth/*/*`` works
after a failed run; the exit status is 2 only when no complete run remains.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from adbench.io import atomic_write

__all__ = ["add_parser", "main"]

FORMATS = ("md", "latex", "csv", "html")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "leaderboard", help="tables and figures from run folders (md, latex, csv, html)",
        description="Build the paper's Table 1 shape (methods as rows, datasets x metrics as "
                    "columns, mean ± std in percent, * = paired t-test p < 0.05 against the best "
                    "other method, bold = best) from run folders.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run folders or folders above them (e.g. runs/)")
    p.add_argument("--format", "-f", choices=FORMATS, default="md", help="output format (default: md)")
    p.add_argument("--out", "-o", default=None, metavar="FILE", help="write here instead of stdout")
    p.add_argument("--figures", default=None, metavar="DIR", help="also write PNG figures into DIR")
    p.add_argument("--metrics", default="auroc,dice_max",
                   help="comma-separated per-volume metrics (default: auroc,dice_max; also auprc)")
    p.add_argument("--no-maps", action="store_true",
                   help="skip figures that read the maps/ NIfTI files (ROC, Fig. 2); faster")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from adbench.evaluation.volume import ROW_KEYS
    from adbench.report.tables import THRESHOLD_METRICS
    from adbench.report import build_leaderboard, collect, render_csv, render_latex, render_markdown
    from adbench.report.differences import pvalue_csvs

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    valid = [k for k in ROW_KEYS if not k.startswith("n_")] + list(THRESHOLD_METRICS)
    # Dice at a label-free threshold: dice_fpr<percent>, as the runner names them
    unknown = [m for m in metrics if m not in valid and not re.fullmatch(r"dice_fpr[0-9.]+", m)]
    if unknown or not metrics:
        print(f"adbench leaderboard: error: --metrics {args.metrics!r}: unknown {unknown}; "
              f"valid: {','.join(valid)}", file=sys.stderr)
        return 2
    frame = collect(args.run_dirs, warn=False)  # RunDirError only for a path that does not exist
    notes = frame.attrs["skipped"]
    if not frame.attrs["runs"]:
        for line in notes:
            print(f"adbench leaderboard: {line}", file=sys.stderr)
        n = len(args.run_dirs)
        where = args.run_dirs[0] if n == 1 else f"the {n} paths given"
        print(f"adbench leaderboard: error: no complete run folder in {where} (a complete run "
              "holds summary.json); pass runs/<dataset>/<method>/<run-id>/ or a folder above "
              "such folders", file=sys.stderr)
        return 2
    lb = build_leaderboard(frame, metrics)
    lb.warnings.extend(notes)
    for w in lb.warnings:
        print(f"adbench leaderboard: {w}", file=sys.stderr)
    figures = []
    if args.figures or args.format == "html":
        from adbench.report.figures import leaderboard_figures
        figures = leaderboard_figures(lb, with_maps=not args.no_maps)
    pvalues = pvalue_csvs(lb)
    if args.figures:
        for name, _, png in figures:
            atomic_write(Path(args.figures) / name, png)
        for name, text in pvalues:
            atomic_write(Path(args.figures) / name, text)
    if args.out:
        for name, text in pvalues:
            atomic_write(Path(args.out).with_name(f"{Path(args.out).stem}_{name}"), text)
    if args.format == "html":
        from adbench.report.html import render_html
        text = render_html(lb, [(caption, png) for _, caption, png in figures])
    else:
        text = {"md": render_markdown, "latex": render_latex, "csv": render_csv}[args.format](lb)
    if args.out:
        atomic_write(Path(args.out), text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
