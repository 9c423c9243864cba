"""``adbench benchmark FILE``: run a benchmark grid (methods x datasets x seeds x sweeps).

Thin: flags → :func:`adbench.benchmark.run.run_grid`. The grid file format is in
:mod:`adbench.benchmark.grid`, the grid folder in :mod:`adbench.benchmark.state`, the
executors in :mod:`adbench.benchmark.execute`; docs/benchmark.md is the user's guide.
"""
from __future__ import annotations

import argparse

from adbench.errors import ConfigError

__all__ = ["add_parser", "main"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "benchmark", help="run a benchmark grid file (resumable; local, multi-GPU or Ray)",
        description="Run every cell of a grid file (benchmarks/*.yaml) into OUTPUT/<grid-name>/: "
                    "finished cells are skipped, failed ones retried, each model is trained "
                    "once and reused; at the end the leaderboard (all formats) and, for sweeps, "
                    "the metric-against-value plots.")
    p.add_argument("grid", metavar="FILE", help="grid file (YAML), e.g. benchmarks/table1-synth.yaml")
    p.add_argument("--dry-run", action="store_true",
                   help="print the cells (done, will train, reuse a model) and run nothing")
    p.add_argument("--preset", default=None,
                   help="preset for every method, overriding the grid's (e.g. smoke, cpu-quick)")
    p.add_argument("--root", action="append", default=[], metavar="DATASET=PATH",
                   help="folder of a dataset the grid names (repeatable), e.g. --root brats=/data/BraTS2020")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra --set item for every cell (as `adbench run --set`)")
    p.add_argument("--output", "-o", default="runs", help="root of grid folders (default: ./runs)")
    p.add_argument("--device", default=None, help="cpu | cuda (overrides the grid's device:)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local (default: this process, or one worker per --gpus entry) or ray")
    p.add_argument("--gpus", default=None, metavar="0,1,...",
                   help="local executor: one worker process per GPU (sets CUDA_VISIBLE_DEVICES; "
                        "use with --device cuda)")
    p.add_argument("--address", default=None,
                   help="ray executor: the cluster address (auto inside a Ray cluster); "
                        "default: start a local Ray instance")
    p.add_argument("--metrics", default="auroc,dice_max", help="leaderboard and plot metrics")
    p.add_argument("--formats", default="md,latex,csv,html",
                   help="leaderboard files written into the grid folder (default: all)")
    p.set_defaults(func=main)
    return p


def _roots(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--root {item!r}: expected DATASET=PATH, e.g. --root brats=/data/BraTS2020")
        out[name.strip()] = path
    return out


def _formats(text: str) -> tuple[str, ...]:
    from adbench.benchmark.run import LEADERBOARD_FORMATS

    got = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in got if f not in LEADERBOARD_FORMATS]
    if bad:
        raise ConfigError(f"--formats {text!r}: unknown {bad}; valid: {','.join(LEADERBOARD_FORMATS)}")
    return got


def main(args: argparse.Namespace) -> int:
    from adbench.benchmark.run import run_grid

    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    if gpus and args.executor != "local":
        raise ConfigError("--gpus is for --executor local; Ray places tasks on GPUs itself")
    if args.address and args.executor != "ray":
        raise ConfigError("--address needs --executor ray")
    return run_grid(args.grid, output=args.output, preset=args.preset, roots=_roots(args.root),
                    sets=args.sets, device=args.device, dry_run=args.dry_run,
                    executor=args.executor, gpus=gpus, address=args.address,
                    metrics=args.metrics, formats=_formats(args.formats))
