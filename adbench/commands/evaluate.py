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

Native space (``--native RUN``). A run writes ``maps_native/<subject>.nii.gz``, its maps on
each source scan's own grid (:mod:`adbench.data.native`). ``--native RUN`` evaluates those
against the dataset's own files: the dataset named in ``RUN/config.yaml`` is built from its
recorded ``dataset_config`` (``--data-root`` when the data moved) and each subject is loaded
as the run read it, so the lesion is the dataset's own segmentation under its label rule
(BraTS: label > 0, or ``lesion_labels``) and the brain its own mask (BraTS: image > 0). The
map must have the source image's shape and affine. The region rule is the runner's, on the
source grid: R_v = native brain mask ∩ the axial slices selected by ``--slices`` (default:
those holding lesion), where "axial" are the planes across the voxel axis nearest the
superior–inferior world axis (nibabel ``io_orientation``; the third axis of BraTS's LPS
volumes). The metrics are those of :func:`adbench.evaluation.volume.evaluate_volume`.
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

__all__ = ["add_parser", "main", "pair_files", "evaluate_files", "evaluate_native",
           "NATIVE_REGION_RULE"]

#: ``region_rule`` recorded with native-space metrics (tables never mix them with grid ones)
NATIVE_REGION_RULE = ("native: dataset brain mask ∩ selected axial slices of the source grid "
                      "(planes across the voxel axis nearest superior-inferior)")

_SEPS = "_-."
_SIDECARS = ("_image", "_brain", "_lesion")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate", help="evaluate NIfTI anomaly maps from any tool against lesion masks",
        description="Pair anomaly maps with lesion masks (and brain masks) by subject name and "
                    "compute per-volume AUROC, ⌈Dice⌉ and AUPRC over brain ∩ selected axial "
                    "slices with exactly the code `adbench run` uses.")
    p.add_argument("--maps", default=None, metavar="GLOB",
                   help="anomaly maps, e.g. 'out/*.nii.gz' (required unless --native)")
    p.add_argument("--labels", default=None, metavar="GLOB",
                   help="lesion masks (label > 0 = lesion; required unless --native)")
    p.add_argument("--native", default=None, metavar="RUN",
                   help="evaluate RUN/maps_native/*.nii.gz against the run's dataset as read "
                        "from its own files (segmentation, brain mask) on the source grid")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="with --native: where the run's dataset lives now (default: the "
                        "data_root in RUN/config.yaml)")
    p.add_argument("--brain-masks", default=None, metavar="GLOB",
                   help="brain masks; without them every voxel of the selected slices counts "
                        "(background included, which inflates AUROC)")
    p.add_argument("--slices", choices=SLICE_RULES, default="lesion",
                   help="axial slices evaluated: lesion (paper protocol, default), brain, all")
    p.add_argument("--min-brain-fraction", type=float, default=MIN_BRAIN_FRACTION, metavar="F",
                   help="with --slices brain: slices whose brain covers at least F of the slice "
                        f"(default {MIN_BRAIN_FRACTION}, as the runner's preprocess.min_brain_fraction)")
    p.add_argument("--out", default=None, metavar="FILE.csv", help="per-volume CSV to write (required)")
    p.add_argument("--ignore-affine", action="store_true",
                   help="pair files even when their affines differ (same shape still required)")
    p.add_argument("--run-dir", default=None, metavar="DIR",
                   help="also write a run folder (per_volume.csv, summary.json, config.yaml) "
                        "that `adbench leaderboard` reads; needs --method and --dataset")
    p.add_argument("--method", default=None,
                   help="method name recorded in --run-dir (with --native: the run's)")
    p.add_argument("--dataset", default=None,
                   help="dataset name recorded in --run-dir (with --native: the run's)")
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


def _native_dataset(run_dir: Path, data_root: str | None, registry=None):
    """(config.yaml of the run, its test dataset built from the recorded dataset_config)."""
    from adbench.io import read_yaml
    from adbench.plugins import get_registry

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise DataError(f"--native {run_dir}: no config.yaml there; pass a run folder "
                        f"(runs/<dataset>/<method>/<run-id>/)")
    cfg = read_yaml(cfg_path) or {}
    name, dcfg = cfg.get("dataset"), dict(cfg.get("dataset_config") or {})
    if not name:
        raise DataError(f"{cfg_path}: names no dataset; --native needs a run made by `adbench run`")
    spec = (registry or get_registry()).dataset(str(name))
    if data_root is not None:
        if "data_root" not in spec.default_config:
            raise DataError(f"--data-root was given but dataset {name!r} reads no data_root")
        if not Path(data_root).expanduser().is_dir():
            raise DataError(f"--data-root {data_root}: not a folder; pass the folder of "
                            f"dataset {name!r}")
        dcfg["data_root"] = str(data_root)
    return cfg, spec.factory(**dcfg)


def axial_last(arr: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``arr`` with the voxel axis nearest the superior–inferior world axis moved last (the
    axis :func:`evaluate_volume` selects slices along); the other two keep their order."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])
    return np.moveaxis(arr, axis, -1)


def evaluate_native(run_dir: str | Path, *, data_root: str | None = None,
                    slice_rule: str = "lesion", min_brain_fraction: float = MIN_BRAIN_FRACTION,
                    registry=None) -> tuple[list[dict], dict]:
    """(rows, the run's config) for ``run_dir/maps_native/*.nii.gz`` against the run's
    dataset read from its own files (see the module docstring for the region rule).

    Every map must have its source image's shape and affine; DataError names the map, the
    source file and what differs."""
    from adbench.data.native import MAPS_NATIVE
    from adbench.io import safe_filename

    run_dir = Path(run_dir)
    folder = run_dir / MAPS_NATIVE
    maps = sorted(folder.glob("*.nii.gz")) + sorted(folder.glob("*.nii"))
    if not maps:
        raise DataError(f"--native {run_dir}: no {MAPS_NATIVE}/*.nii.gz; the run was made with "
                        f"runner.native_maps=false or by an adbench without native maps: run it "
                        f"again (--set runner.native_maps=true)")
    cfg, dataset = _native_dataset(run_dir, data_root, registry)
    by_file = {safe_filename(s): s for s in dataset.subjects("test")}
    rows = []
    for mp in maps:
        stem = _stem(mp)
        if stem not in by_file:
            raise DataError(f"{mp}: subject {stem!r} is not a test subject of dataset "
                            f"{cfg['dataset']!r} as configured in {run_dir / 'config.yaml'}"
                            + (" (or under --data-root)" if data_root else
                               "; if the data moved, pass --data-root"))
        subject = by_file[stem]
        vol = dataset.load(subject)
        src = vol.meta.get("image_path", f"subject {subject!r}")
        amap, aff = _load(mp)
        if amap.shape != vol.image.shape:
            raise DataError(f"shape mismatch: native map {mp} is {amap.shape} but its source "
                            f"{src} is {vol.image.shape}; the map is not on the source grid")
        if not np.allclose(aff, vol.affine, atol=1e-4):
            raise DataError(f"affine mismatch between native map {mp} and its source {src}:\n"
                            f"{aff}\nvs\n{vol.affine}")
        if vol.lesion_mask is None:
            raise DataError(f"{src}: subject {subject!r} has no lesion mask to evaluate against")
        amap = np.asarray(amap, dtype=np.float32)
        if not np.isfinite(amap).all():
            raise DataError(f"{mp}: non-finite values; anomaly maps must be finite")
        m, les, br = (axial_last(a, vol.affine) for a in (amap, vol.lesion_mask, vol.brain_mask))
        rows.append({"subject": subject,
                     **evaluate_volume(m, les, br, slice_rule=slice_rule,
                                       min_brain_fraction=min_brain_fraction)})
    rows.sort(key=lambda r: r["subject"])
    return rows, cfg


def main(args: argparse.Namespace) -> int:
    if args.out is None:
        raise DataError("--out FILE.csv is required: the per-volume CSV to write")
    if args.native is not None:
        if args.maps or args.labels or args.brain_masks:
            raise DataError("--native RUN reads RUN/maps_native/ and the run's own dataset; drop "
                            "--maps/--labels/--brain-masks (or drop --native to pair files)")
        return _main_native(args)
    if not (args.maps and args.labels):
        raise DataError("--maps GLOB and --labels GLOB are required (or --native RUN to evaluate "
                        "a run's maps_native/ against its dataset)")
    if args.data_root is not None:
        raise DataError("--data-root goes with --native RUN only")
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
    return _print_summary(rows, args.out)


def _main_native(args: argparse.Namespace) -> int:
    if args.run_dir and (Path(args.run_dir) / "summary.json").exists():
        raise DataError(f"--run-dir {args.run_dir} already holds a complete run; choose a new folder")
    rows, cfg = evaluate_native(args.native, data_root=args.data_root, slice_rule=args.slices,
                                min_brain_fraction=args.min_brain_fraction)
    write_per_volume(Path(args.out), rows)
    if args.run_dir:
        from adbench.rundir import write_run
        defs = {**definitions(args.slices, args.min_brain_fraction),
                "region_rule": NATIVE_REGION_RULE}
        write_run(args.run_dir, rows, method=args.method or cfg.get("method"),
                  dataset=args.dataset or cfg.get("dataset"), slice_rule=args.slices,
                  train_on=cfg.get("train_on"), seed=cfg.get("seed"), definitions=defs,
                  config={"native": str(args.native), "data_root": args.data_root,
                          "source": "adbench evaluate --native (maps_native of a run)"})
    return _print_summary(rows, args.out)


def _print_summary(rows: list[dict], out) -> int:
    from adbench.evaluation.metrics import summarize
    s = summarize(rows)
    from adbench.io import strict_json
    print(strict_json({"n_volumes": len(rows),
                       **{k: v for k, v in s.items() if k.endswith(("_mean", "_std", "_n_nan"))},
                       "out": str(out)}))
    return 0
