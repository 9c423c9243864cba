"""Sample-quality curves of several StyleGAN2 trainings side by side; prints JSON.

    python benchmarks/perf/quality_curves.py cpu-quick=runs/sg-quick/train_log.jsonl \\
        cpu-long=runs/sg-long/train_log.jsonl --out quality-curves.png

Each ``LABEL=PATH`` is a training's ``train_log.jsonl`` (or the folder holding it). For every
record that has sample-quality metrics (``kid_vgg``, ``fid_vgg``, ``swd``, and the Inception
ones when logged) the JSON lists the iteration, the thousands of images seen and the training
minutes up to it: the logged seconds per iteration times the iterations of each log interval,
plus the time of the earlier quality scores (checkpoint and sample writing not counted). The
figure draws each metric against thousands of images (``--x kimg``, default), iterations or
training minutes (``--x minutes``), one curve per training. Compare runs scored with the same
``quality_reals``: FID is biased upwards for few slices.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adbench.training.records import save_curves

METRICS = ("kid_vgg", "fid_vgg", "swd", "kid_inception", "fid_inception")


def read_log(path: Path) -> list[dict]:
    """The records of a ``train_log.jsonl`` (or of the one in folder ``path``); an unreadable
    line is an error naming the file and the line."""
    path = Path(path)
    if path.is_dir():
        path = path / "train_log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log here (expected train_log.jsonl)")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
            int(rec["iteration"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}, line {i}: not a training-log record ({exc})") from None
        out.append(rec)
    return out


def quality_curve(records: list[dict]) -> list[dict]:
    """The records that carry quality metrics, with ``minutes``: training time up to them."""
    out, seconds, last = [], 0.0, 0
    for rec in sorted(records, key=lambda r: r["iteration"]):
        it = int(rec["iteration"])
        seconds += (it - last) * float(rec.get("sec_per_iter") or 0.0)
        last = it
        if any(k in rec for k in METRICS):
            row = {"iteration": it, "kimg": rec.get("kimg"), "minutes": round(seconds / 60, 2)}
            row.update({k: rec[k] for k in METRICS if k in rec})
            out.append(row)
        seconds += float(rec.get("quality_s") or 0.0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="LABEL=LOG", help="a label and a train_log.jsonl (or its folder)")
    p.add_argument("--out", type=Path, default=None, help="figure (PNG): one panel per metric")
    p.add_argument("--x", default="kimg", choices=["kimg", "iteration", "minutes"])
    args = p.parse_args(argv)
    curves = {}
    try:
        for item in args.runs:
            label, sep, path = item.partition("=")
            if not sep or not label or not path:
                raise ValueError(f"{item!r}: expected LABEL=PATH (e.g. cpu-long=runs/sg/train_log.jsonl)")
            if label in curves:
                raise ValueError(f"label {label!r} given twice")
            curves[label] = quality_curve(read_log(Path(path)))
            if not curves[label]:
                raise ValueError(f"{path}: no record has quality metrics (was quality_interval 0?)")
    except (OSError, ValueError) as exc:
        print(f"quality_curves.py: error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        keys = [k for k in METRICS if any(k in r for c in curves.values() for r in c)]
        save_curves(curves, keys, args.out, x=args.x)
    print(json.dumps({"x": args.x, "figure": str(args.out) if args.out else None, "curves": curves}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
