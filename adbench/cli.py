"""The ``adbench`` command line. Thin: parse flags, call library functions, map errors.

Sub-commands live one per module in :mod:`adbench.commands` (``add_parser`` + ``main``);
``run`` and ``list`` are here because they are the core of the tool.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from adbench import __version__

__all__ = ["main", "build_parser"]

# Sub-command modules in adbench.commands, in the order `adbench --help` lists them.
COMMAND_MODULES = ("config", "prepare", "show", "evaluate", "leaderboard", "cache", "benchmark")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run one method on one dataset and evaluate it",
                       description="Fit METHOD on healthy training slices, predict anomaly maps for the "
                                   "test volumes, evaluate them and write a run folder.")
    p.add_argument("--method", "-m", required=True, help="method name (see `adbench list`)")
    p.add_argument("--dataset", "-d", default="synth", help="test dataset (default: synth, no download)")
    p.add_argument("--train-on", default=None, help="training dataset (default: the test dataset's train split)")
    p.add_argument("--data-root", default=None, help="folder of the test dataset (sets dataset.data_root)")
    p.add_argument("--train-root", default=None, help="folder of the --train-on dataset")
    p.add_argument("--preset", default=None, help="smoke | default | cpu-quick | cpu-long | gpu-quick | paper (per plugin)")
    p.add_argument("--config", default=None, help="YAML file with sections method/dataset/train/preprocess/runner")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key; prefixes dataset./train./preprocess./runner. (repeatable)")
    p.add_argument("--output", "-o", default="runs", help="root of run folders (default: ./runs)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default=None,
                   help="VGG16 weights for the perceptual score and VGG-based methods: imagenet "
                        "(torchvision cache or $ADBENCH_VGG16_WEIGHTS; the default), a state-dict path, "
                        "or random (the smoke preset's choice). Sets runner.weights; a method with "
                        "another backbone (backbone=timm/<model>) takes its own --set weights=...")
    p.add_argument("--strict", action="store_true", help="a bad subject stops the run instead of being skipped")
    p.add_argument("--print-config", action="store_true",
                   help="print the fully resolved config as YAML (a --config file) and exit, "
                        "writing nothing")
    bars = p.add_mutually_exclusive_group()
    bars.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    bars.add_argument("--progress", action="store_true",
                      help="progress bars even when stderr is not a terminal (default: only on "
                           "a terminal)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    from adbench.runner import execute, resolve

    spec = resolve(args.method, args.dataset, train_on=args.train_on, preset=args.preset,
                   config_file=args.config, sets=args.sets, seed=args.seed, device=args.device,
                   weights=args.weights, data_root=args.data_root, train_root=args.train_root,
                   strict=args.strict)
    if args.print_config:
        from adbench.commands.config import render_resolved
        print(render_resolved(spec), end="")
        return 0
    progress = False if args.quiet else (True if args.progress else None)
    run_dir = execute(spec, output=args.output, progress=progress)
    from adbench.rundir import read_summary
    s = read_summary(run_dir / "summary.json")
    print(f"{args.method} on {args.dataset}: AUROC {_pct(s['auroc_mean'])} ± {_pct(s['auroc_std'])}, "
          f"⌈Dice⌉ {_pct(s['dice_max_mean'])} ± {_pct(s['dice_max_std'])} over {s['n_volumes']} volumes"
          + (f" ({len(s['skipped'])} skipped)" if s.get("skipped") else ""))
    if s.get("preset") == "smoke":
        print(SMOKE_NOTE)
    print(f"run folder: {run_dir}")
    return 0


#: Printed under every smoke result: its numbers check the pipeline, they measure nothing.
SMOKE_NOTE = ("note: preset 'smoke' is a pipeline check (tiny data, few steps, random weights); "
              "its numbers are not results")


def _pct(v) -> str:
    return "nan" if v != v else f"{100 * v:.2f}"


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="list methods and datasets with the plugin that gave each")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args) -> int:
    from adbench.plugins import get_registry

    reg = get_registry()
    for title, table in (("methods", reg.methods), ("datasets", reg.datasets)):
        print(f"{title}:")
        width = max([len(n) for n in table] + [4])
        for name in sorted(table):
            p = table[name]
            extra = p.spec.kind if title == "methods" else "/".join(p.spec.splits)
            print(f"  {name:<{width}}  {extra:<14}  {p.spec.description}  [{p.plugin} from {p.distribution}]")
        if not table:
            print("  (none)")
    if reg.broken:
        print("plugins that failed to load:")
        for name, err in sorted(reg.broken.items()):
            print(f"  {name}: {err}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adbench", description="Unsupervised anomaly detection "
                                     "and localisation benchmarks for brain MRI.")
    parser.add_argument("--version", action="version", version=f"adbench {__version__}")
    parser.add_argument("--verbose", "-v", action="store_true", help="show log messages on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    _add_list(sub)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"adbench.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"adbench.commands.{name}":
                continue  # command not part of this build
            raise
        mod.add_parser(sub)
        if sub.choices[name].get_default("func") is None:
            sub.choices[name].set_defaults(func=mod.main)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    from adbench.config import ConfigError
    from adbench.data.volume import DataError
    from adbench.locking import LockTimeout
    from adbench.plugins import PluginError, UnknownNameError
    # adbench.nn.weights.WeightsError subclasses FileNotFoundError: caught without importing
    # torchvision on the error path.
    return (ConfigError, DataError, PluginError, UnknownNameError, FileNotFoundError,
            NotADirectoryError, PermissionError, LockTimeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except _known_errors() as exc:
        print(f"adbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adbench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
