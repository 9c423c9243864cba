"""``adbench prepare``: validate a dataset on disk and fill the slice cache.

Every subject of the chosen split(s) is read through its dataset plugin and checked
(readable, 3-D, finite, masks on the image grid, mask labels as expected, brain and — for
test volumes — lesion not empty, no duplicate ids), then preprocessed once (shared steps
1–4: RAS orientation, brain crop, resize, equalisation) into the per-subject slice cache
that ``adbench run`` reads (:mod:`adbench.data.cache`: keyed by the sha256 of the source files,
so a changed or added file invalidates only its own entry).

A report table lists each subject as ok or skipped with its path; skipped subjects are
followed by the reason. Exit status: 0 when at least one subject is usable (skipped ones
are listed), 1 when ``--strict`` met a bad subject or nothing is usable.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from adbench.config import dataset_sets, merge_section, preprocess_config
from adbench.data.selection import select_slices
from adbench.data.validate import validate_volume
from adbench.data.volume import DataError, Volume
from adbench.io import show_progress
from adbench.plugins import get_registry

__all__ = ["add_parser", "main", "prepare"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prepare", help="validate a dataset on disk and cache its preprocessed slices",
        description="Check every subject of a dataset (readable, 3-D, finite, masks on the "
                    "image grid, expected labels, non-empty brain/lesion, unique ids), print a "
                    "report table and cache the preprocessed volumes for `adbench run`.")
    p.add_argument("--dataset", "-d", required=True, help="dataset name (see `adbench list`)")
    p.add_argument("--data-root", default=None, help="the dataset's folder (sets data_root)")
    p.add_argument("--split", choices=("train", "test", "all"), default="all",
                   help="which split to prepare (default: every split the dataset provides)")
    p.add_argument("--preset", default=None, help="dataset preset, e.g. smoke")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset config key (e.g. --set modality=t1ce); preprocess.KEY=VALUE "
                        "for the shared preprocessing (use the same as for `adbench run`)")
    p.add_argument("--strict", action="store_true",
                   help="stop with exit status 1 at the first bad subject")
    bars = p.add_mutually_exclusive_group()
    bars.add_argument("--progress", action="store_true", default=None,
                      help="progress bar even when stderr is not a terminal (default: only on "
                           "a terminal)")
    bars.add_argument("--quiet", "-q", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    sets = dataset_sets(args.sets)
    dataset_layer = sets["dataset"]
    rows, ok = prepare(args.dataset, data_root=args.data_root, split=args.split,
                       preset=args.preset, dataset_config=dataset_layer,
                       preprocess=sets["preprocess"], strict=args.strict,
                       progress=show_progress(args.progress))
    return 0 if ok else 1


def prepare(dataset: str, *, data_root: str | None = None, split: str = "all",
            preset: str | None = None, dataset_config: dict[str, Any] | None = None,
            preprocess: dict[str, Any] | None = None, strict: bool = False,
            progress: bool = False, out: TextIO | None = None) -> tuple[list[dict], bool]:
    """Validate and cache ``dataset``; print the report to ``out`` (default stdout).

    Returns (rows, ok): one row per subject {"split", "subject", "status" ("ok"/"skipped"),
    "slices", "reason", "path"}, and whether the run should exit 0.
    """
    from adbench.data.cache import iter_preprocessed

    out = out or sys.stdout
    spec = get_registry().dataset(dataset)
    layer = {"data_root": str(data_root)} if data_root is not None else {}
    cfg = merge_section(f"dataset {dataset!r}", spec.default_config, spec.presets, preset,
                        dict(dataset_config or {}), layer)
    pcfg = preprocess_config(preset, dict(preprocess or {}))
    splits = list(spec.splits) if split == "all" else [split]
    if split != "all" and split not in spec.splits:
        raise DataError(f"dataset {dataset!r} has no {split!r} split (it provides "
                        f"{list(spec.splits)})")
    ds = spec.factory(**cfg)
    for sp in splits:  # a wrong folder is a usage error, not a bad subject (even with --strict)
        ds.subjects(sp)
        ds.problems(sp)
    rows: list[dict] = []
    failed: str | None = None
    for sp in splits:
        report: list[dict] = []
        rule = pcfg.slices_test if sp == "test" else pcfg.slices_train
        checked = _Validating(ds, require_lesion=(sp == "test"))
        try:
            for pre in iter_preprocessed(checked, dataset, sp, pcfg, strict=strict, report=report,
                                         progress=progress):
                n = len(select_slices(pre.brain, pre.lesion, rule, pcfg.min_brain_fraction))
                rows.append({"split": sp, "subject": pre.subject_id, "status": "ok", "slices": n,
                             "reason": "" if n else f"no slice selected by the {rule!r} rule",
                             "path": pre.meta.get("image_path", "")})
        except DataError as exc:
            if not strict:
                raise
            failed = str(exc)
        for r in report:
            rows.append({"split": sp, "subject": r["subject"], "status": "skipped", "slices": 0,
                         "reason": r["reason"], "path": r.get("path", "")})
        if failed:
            break
    _print_table(rows, out)
    n_ok = sum(r["status"] == "ok" for r in rows)
    n_skip = len(rows) - n_ok
    print(f"\n{dataset}: {n_ok} ok, {n_skip} skipped"
          + (f" (data_root {cfg.get('data_root')})" if cfg.get("data_root") else ""), file=out)
    if failed:
        print(f"--strict: stopped at the first bad subject: {failed}", file=out)
        return rows, False
    if n_ok == 0:
        print("no usable subject: nothing to run on (see the reasons above)", file=out)
        return rows, False
    print("slice cache ready: `adbench run` reuses it while the source files are unchanged",
          file=out)
    return rows, True


class _Validating:
    """The dataset, with the generic checks of :func:`adbench.data.validate.validate_volume`
    applied to every loaded volume (so third-party datasets are checked too)."""

    def __init__(self, ds, *, require_lesion: bool):
        self._ds = ds
        self._require_lesion = require_lesion

    def load(self, subject: str) -> Volume:
        vol = self._ds.load(subject)
        validate_volume(vol, require_lesion=self._require_lesion)
        return vol

    def __getattr__(self, name: str):
        return getattr(self._ds, name)


def _print_table(rows: list[dict], out: TextIO) -> None:
    cols = ("subject", "split", "status", "slices", "path")
    width = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols[:-1]}
    print("  ".join(f"{c:<{width[c]}}" for c in cols[:-1]) + "  path", file=out)
    for r in rows:
        print("  ".join(f"{str(r[c]):<{width[c]}}" for c in cols[:-1]) + f"  {r['path']}", file=out)
        if r["reason"]:
            reason = " ".join(str(r["reason"]).split())
            print(f"    reason: {reason}", file=out)
