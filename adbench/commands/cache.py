"""``adbench cache prune``: free the disk space of cache files nothing will read again.

The slice cache keys entries by content, so moving a dataset reuses them; entries made by
older preprocessing settings, changed source files or older adbench versions are never read
again and stay until pruned. Every read of an entry sets its access time, so "unused for N
days" is exact (:func:`adbench.data.cache.prune_cache` says what else is removed).
"""
from __future__ import annotations

import argparse
import sys
from typing import TextIO

__all__ = ["add_parser", "main"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "cache", help="prune the adbench cache",
        description="Manage the cache ($ADBENCH_CACHE, default ~/.cache/adbench).")
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    pr = sub.add_parser(
        "prune", help="remove slice-cache entries unused for N days, quarantined and "
                      "orphaned temporary files",
        description="Remove slice-cache entries not read for --older-than days, quarantined "
                    "*.corrupt-* files and temporary files left by interrupted writes; print "
                    "each file removed and the space freed.")
    pr.add_argument("--older-than", type=float, default=30.0, metavar="DAYS",
                    help="remove slice-cache entries unused for more than DAYS days "
                         "(default 30; 0: every entry)")
    pr.add_argument("--dry-run", action="store_true", help="list what would be removed, "
                                                           "remove nothing")
    pr.add_argument("--cache-dir", default=None,
                    help="the cache folder (default: $ADBENCH_CACHE or ~/.cache/adbench)")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from adbench.config import ConfigError
    from adbench.data.cache import prune_cache

    out = out or sys.stdout
    if args.cache_command != "prune":  # pragma: no cover - argparse allows only prune
        raise ConfigError(f"adbench cache {args.cache_command}: unknown action; expected prune")
    if not args.older_than >= 0:
        raise ConfigError(f"--older-than {args.older_than}: expected a number of days >= 0 "
                          f"(0 removes every slice-cache entry)")
    try:
        removed = prune_cache(args.cache_dir, older_than_days=args.older_than,
                              dry_run=args.dry_run)
    except ValueError as exc:  # not an adbench cache: nothing was touched
        raise ConfigError(str(exc)) from None
    verb = "would remove" if args.dry_run else "removed"
    for r in removed:
        print(f"{verb} {r['path']}  ({_size(r['bytes'])}; {r['reason']})", file=out)
    total = sum(r["bytes"] for r in removed)
    print(f"{verb} {len(removed)} file{'' if len(removed) == 1 else 's'}, "
          f"{'would free' if args.dry_run else 'freed'} {_size(total)}", file=out)
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover
