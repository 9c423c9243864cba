"""``adbench evaluate``: score anomaly maps made by any tool with adbench's own evaluation.

Maps and ground truth are NIfTI files found by glob patterns and paired by subject name; each
pair goes through exactly :func:`adbench.evaluation.volume.evaluate_volume`, the function the runner
uses, so a method outside adbench can join a leaderboard (``--run-dir`` writes a run folder
that ``adbench leaderboard`` reads).

Pairing. A map's subject is its file name without ``.nii``/``.nii.gz``; when that pairs no
labels, a suffix shared by all maps is dropped too (``sub1_map``, ``sub2_map`` → ``sub1``,
``sub2``). A label or brain
file pairs with the map whose subject equals its own name, or equals it up to a ``_``/``-``/
``.``-separated prefix or suffix (``sub1`` ↔ ``sub1_seg``, ``BraTS_sub1_seg``); the longest
such subject wins. Files matched by the maps pattern that are adbench sidecars
(``<subject>_image/_brain/_lesion`` next to ``<subject>``) or that also match --labels or
--brain-masks are not maps, so ``--maps 'run/maps/*.nii.gz'`` works on a run's own folder.

Every file is read and checked before anything is written: shapes, affines, finite values,
missing or ambiguous pairs are errors naming the files; the CSV is written atomically.
Labels > 0 are lesion (multi-label segmentations such as BraTS 1/2/4 become one mask).
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np

from adbench.data.volume import DataError
from adbench.data.selection import MIN_BRAIN_FRACTION, SLICE_RULES
from adbench.evaluation.volume import definitions, evaluate_volume
from adbench.rundir import write_per_volume

__all__ = ["add_parser", "main", "pair_files", "evaluate_files"]

_SEPS = "_-."
_SIDECARS = ("_image", "_brain", "_lesion")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate", help="evaluate NIfTI anomaly maps from any tool against lesion masks",
        description="Pair anomaly maps with lesion masks (and brain masks) by subject name and "
                    "compute per-volume AUROC, ⌈Dice⌉ and AUPRC over brain ∩ selected axial "
                    "slices with exactly the code `adbench run` uses.")
    p.add_argument("--maps", required=True, metavar="GLOB", help="anomaly maps, e.g. 'out/*.nii.gz'")
    p.add_argument("--labels", required=True, metavar="GLOB", help="lesion masks (label > 0 = lesion)")
    p.add_argument("--brain-masks", default=None, metavar="GLOB",
                   help="brain masks; without them every voxel of the selected slices counts "
                        "(background included, which inflates AUROC)")
    p.add_argument("--slices", choices=SLICE_RULES, default="lesion",
                   help="axial slices evaluated: lesion (paper protocol, default), brain, all")
    p.add_argument("--min-brain-fraction", type=float, default=MIN_BRAIN_FRACTION, metavar="F",
                   help="with --slices brain: slices whose brain covers at least F of the slice "
                        f"(default {MIN_BRAIN_FRACTION}, as the runner's preprocess.min_brain_fraction)")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="per-volume CSV to write")
    p.add_argument("--ignore-affine", action="store_true",
                   help="pair files even when their affines differ (same shape still required)")
    p.add_argument("--run-dir", default=None, metavar="DIR",
                   help="also write a run folder (per_volume.csv, summary.json, config.yaml) "
                        "that `adbench leaderboard` reads; needs --method and --dataset")
    p.add_argument("--method", default=None, help="method name recorded in --run-dir")
    p.add_argument("--dataset", default=None, help="dataset name recorded in --run-dir")
    p.set_defaults(func=main)
    return p


def _stem(p: Path) -> str:
    name = p.name
    for suf in (".nii.gz", ".nii"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


def _expand(pattern: str, what: str) -> list[Path]:
    files = sorted(Path(f) for f in glob.glob(pattern, recursive=True) if Path(f).is_file())
    if not files:
        raise DataError(f"{what} pattern {pattern!r} matches no file; check the path and quote "
                        "the pattern so the shell does not expand it")
    bad = [str(f) for f in files if not f.name.endswith((".nii", ".nii.gz"))]
    if bad:
        raise DataError(f"{what} pattern {pattern!r} matches non-NIfTI files {bad[:5]}; expected "
                        ".nii or .nii.gz only (narrow the pattern)")
    return files


def _strip_common_suffix(stems: list[str]) -> list[str]:
    """Drop a ``_``/``-``/``.``-led suffix shared by all stems (``a_map``, ``b_map`` → a, b)."""
    if len(stems) < 2:
        return stems
    first = stems[0]
    for i in range(len(first)):
        c = first[i:]
        if c[0] in _SEPS and i > 0 and all(s.endswith(c) and len(s) > len(c) for s in stems):
            out = [s[: -len(c)] for s in stems]
            return out if len(set(out)) == len(out) else stems
    return stems


def _matches(subject: str, stem: str) -> bool:
    if stem == subject:
        return True
    return any(stem.startswith(subject + c) or stem.endswith(c + subject) for c in _SEPS)


def pair_files(maps: list[Path], labels: list[Path], brains: list[Path] | None = None
               ) -> list[tuple[str, Path, Path, Path | None]]:
    """(subject, map, label, brain or None) sorted by subject; DataError on any mismatch."""
    taken = set(labels) | set(brains or [])
    stems = {_stem(m) for m in maps}
    maps = [m for m in maps if m not in taken and not any(
        _stem(m).endswith(s) and _stem(m)[: -len(s)] in stems for s in _SIDECARS)]
    if not maps:
        raise DataError("no anomaly map left after removing label, brain-mask and sidecar files "
                        "from the --maps matches; check --maps")
    raw = [_stem(m) for m in maps]
    try:  # the map names themselves are the subjects (e.g. a run's own maps/ folder) ...
        return _pair(dict(zip(raw, maps)), labels, brains)
    except DataError as first_error:  # ... or they carry a common suffix such as "_map"
        stripped = _strip_common_suffix(raw)
        if stripped == raw:
            raise
        try:
            return _pair(dict(zip(stripped, maps)), labels, brains)
        except DataError:
            raise first_error from None


def _pair(by_subject: dict[str, Path], labels: list[Path], brains: list[Path] | None):
    def assign(files: list[Path], what: str) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for f in files:
            cands = sorted((s for s in by_subject if _matches(s, _stem(f))), key=len, reverse=True)
            if not cands:
                raise DataError(f"{what} {f} has no anomaly map (subjects from --maps: "
                                f"{sorted(by_subject)[:10]}); missing pair")
            if len(cands) > 1 and len(cands[0]) == len(cands[1]):
                raise DataError(f"{what} {f} matches the maps of several subjects {cands[:2]}; "
                                "rename the files so names identify one subject")
            s = cands[0]
            if s in out:
                raise DataError(f"{what}s {out[s]} and {f} both pair with the map "
                                f"{by_subject[s]}; keep one {what} per subject")
            out[s] = f
        missing = sorted(set(by_subject) - set(out))
        if missing:
            raise DataError(f"no {what} for the map(s) " + ", ".join(str(by_subject[s]) for s in missing[:5])
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                            + "; missing pair")
        return out

    lab = assign(labels, "label")
    br = assign(brains, "brain mask") if brains is not None else {}
    return [(s, by_subject[s], lab[s], br.get(s)) for s in sorted(by_subject)]


def _load(path: Path):
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many kinds for truncated or foreign files
        raise DataError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3-D (H, W, Z) volume, got shape {data.shape}")
    return data, np.asarray(img.affine, dtype=np.float64)


def evaluate_files(pairs, *, slice_rule: str = "lesion", ignore_affine: bool = False,
                   min_brain_fraction: float = MIN_BRAIN_FRACTION) -> list[dict]:
    """Rows {"subject", evaluate_volume(...)} for (subject, map, label, brain) file pairs."""
    rows = []
    for subject, mp, lp, bp in pairs:
        amap, aff = _load(mp)
        if amap.dtype.kind not in "fiub":
            raise DataError(f"{mp}: map dtype {amap.dtype} is not numeric")
        bad = ~np.isfinite(amap) if amap.dtype.kind == "f" else np.zeros(amap.shape, bool)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DataError(f"{mp}: {int(bad.sum())} non-finite value(s) (NaN/inf, first at voxel "
                            f"{first}); anomaly maps must be finite")
        masks = {}
        for what, p in (("label", lp), ("brain mask", bp)):
            if p is None:
                continue
            m, a = _load(p)
            if m.shape != amap.shape:
                raise DataError(f"shape mismatch: map {mp} is {amap.shape} but {what} {p} is {m.shape}")
            if not ignore_affine and not np.allclose(a, aff, atol=1e-4):
                raise DataError(f"affine mismatch between map {mp} and {what} {p}; the files are not "
                                "on one grid (pass --ignore-affine if you know they are aligned)")
            if m.dtype.kind == "f" and not np.isfinite(m).all():
                raise DataError(f"{p}: the {what} holds non-finite values")
            masks[what] = m > 0
        brain = masks.get("brain mask", np.ones(amap.shape, bool))
        rows.append({"subject": subject,
                     **evaluate_volume(amap, masks["label"], brain, slice_rule=slice_rule,
                                      min_brain_fraction=min_brain_fraction)})
    return rows


def main(args: argparse.Namespace) -> int:
    if args.run_dir and not (args.method and args.dataset):
        raise DataError("--run-dir needs --method NAME and --dataset NAME to label the run")
    if args.run_dir and (Path(args.run_dir) / "summary.json").exists():
        raise DataError(f"--run-dir {args.run_dir} already holds a complete run; choose a new folder")
    maps = _expand(args.maps, "--maps")
    labels = _expand(args.labels, "--labels")
    brains = _expand(args.brain_masks, "--brain-masks") if args.brain_masks else None
    if brains is None:
        print("adbench evaluate: warning: no --brain-masks; the region is every voxel of the "
              "selected slices (background included, AUROC inflated)", file=sys.stderr)
    rows = evaluate_files(pair_files(maps, labels, brains), slice_rule=args.slices,
                          ignore_affine=args.ignore_affine,
                          min_brain_fraction=args.min_brain_fraction)
    write_per_volume(Path(args.out), rows)
    if args.run_dir:
        from adbench.rundir import write_run
        defs = definitions(args.slices, args.min_brain_fraction)
        if brains is None:
            defs["region_rule"] = "selected axial slices (no brain mask given)"
        write_run(args.run_dir, rows, method=args.method, dataset=args.dataset,
                  slice_rule=args.slices, definitions=defs,
                  config={"maps": args.maps, "labels": args.labels, "brain_masks": args.brain_masks})
    from adbench.evaluation.metrics import summarize
    s = summarize(rows)
    from adbench.io import strict_json
    print(strict_json({"n_volumes": len(rows),
                       **{k: v for k, v in s.items() if k.endswith(("_mean", "_std", "_n_nan"))},
                       "out": str(args.out)}))
    return 0
