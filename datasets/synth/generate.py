"""Deterministic generation of synth volumes and their on-disk cache.

Volume ``index`` of ``split`` is a pure function of (seed, split, index) and the content
parameters: its random numbers come from ``SeedSequence([seed, SPLIT_CODE[split], index])``,
spawned into three independent streams (anatomy, lesion, noise) so that drawing a lesion never
shifts the anatomy or the noise. That is what makes :func:`healthy_counterpart` possible: the
same volume without the lesion is identical outside the lesion mask.

Cache layout (``cache_root``): ``<cache>/synth/<content key>/synth-<split>-<index>.npz`` plus
``manifest.json``: one entry per volume file on disk (its sha256 and lesion summary), updated
under a file lock after every volume and reconciled with the folder whenever it is opened, so
a killed generation, or two at once, leave it complete. The content key hashes everything
that changes a volume's voxels (seed, spacing, lesion mix and size range, generator version,
nilearn version) but not the counts: asking for more volumes later reuses the ones already
there. Each file is written atomically as a zip with fixed timestamps, so the same seed gives
byte-identical files.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from adbench.datasets.synth import anatomy, lesions
from adbench.datasets.synth.template import load_template
from adbench.datasets.synth.workers import worker_pool
from adbench.io import atomic_path, cache_dir, file_sha256
from adbench.locking import read_json, update_json

__all__ = ["GENERATOR_VERSION", "SPLIT_CODE", "SynthParams", "Generated", "generate_volume",
           "healthy_counterpart", "subject_id", "parse_subject", "cache_root", "volume_path",
           "write_volume", "read_volume", "ensure_volumes", "reconcile_manifest"]

log = logging.getLogger("adbench")

GENERATOR_VERSION = 1
#: split → the second SeedSequence word. "val" (healthy validation volumes, added later) has
#: its own code, so its volumes never shift those of "train" or "test".
SPLIT_CODE = {"train": 0, "test": 1, "val": 2}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class SynthParams:
    """Validated generation parameters (the dataset's config minus where and how loudly)."""

    n_train: int = 40             # healthy volumes (split "train")
    n_test: int = 20              # lesioned volumes (split "test")
    lesion_mix: float = 0.5       # fraction of test volumes with a tumour; the rest have a stroke
    seed: int = 0
    spacing: int = 1              # mm; 1 = the template's grid, 2 = block-averaged 2 mm grid
    lesion_min_mm: float = 5.0    # equivalent-sphere diameter of every lesion >= this
    lesion_max_mm: float = 45.0   # every lesion lies in a ball of at most this diameter
    n_val: int = 0                # healthy validation volumes (split "val"), disjoint from train

    @classmethod
    def from_config(cls, **cfg: Any) -> "SynthParams":
        names = {f.name for f in fields(cls)}
        unknown = set(cfg) - names
        if unknown:
            raise ValueError(f"synth: unknown parameter(s) {sorted(unknown)}; valid: {sorted(names)}")
        p = cls(**cfg)
        for name in ("n_train", "n_test", "n_val", "seed", "spacing"):
            v = getattr(p, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (1 if name == "spacing" else 0):
                raise ValueError(f"synth {name}={v!r}: expected an integer >= {1 if name == 'spacing' else 0}")
        if not 0.0 <= float(p.lesion_mix) <= 1.0:
            raise ValueError(f"synth lesion_mix={p.lesion_mix!r}: expected a fraction in [0, 1] "
                             f"(1 = all tumours, 0 = all strokes)")
        lo, hi = float(p.lesion_min_mm), float(p.lesion_max_mm)
        if not (lo >= 2 * p.spacing and hi >= 2 * lo and hi <= 80):
            raise ValueError(f"synth lesion_min_mm={lo}, lesion_max_mm={hi}: expected "
                             f"2*spacing ({2 * p.spacing}) <= min, 2*min <= max <= 80 mm")
        return p

    def content(self) -> dict[str, Any]:
        """What determines the voxels of volume i (the counts do not)."""
        try:
            nilearn = importlib.metadata.version("nilearn")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - nilearn is a dependency
            nilearn = "unknown"
        return {"generator_version": GENERATOR_VERSION, "seed": int(self.seed),
                "spacing": int(self.spacing), "lesion_mix": float(self.lesion_mix),
                "lesion_min_mm": float(self.lesion_min_mm),
                "lesion_max_mm": float(self.lesion_max_mm), "nilearn": nilearn}

    def content_key(self) -> str:
        blob = json.dumps(self.content(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def subjects(self, split: str) -> list[str]:
        if split not in SPLIT_CODE:
            raise ValueError(f"synth split {split!r}: expected one of {sorted(SPLIT_CODE)}")
        n = {"train": self.n_train, "test": self.n_test, "val": self.n_val}[split]
        return [subject_id(split, i) for i in range(n)]


def subject_id(split: str, index: int) -> str:
    return f"synth-{split}-{index:04d}"


def parse_subject(subject: str) -> tuple[str, int]:
    parts = subject.split("-")
    if len(parts) != 3 or parts[0] != "synth" or parts[1] not in SPLIT_CODE or not parts[2].isdigit():
        raise ValueError(f"synth subject {subject!r}: expected 'synth-train-NNNN', 'synth-val-NNNN' "
                         f"or 'synth-test-NNNN'")
    return parts[1], int(parts[2])


@dataclass
class Generated:
    """One generated volume: arrays on the template grid and JSON-able metadata.

    image   (X, Y, Z) float32, 0 outside the brain.
    brain   (X, Y, Z) bool.
    lesion  (X, Y, Z) bool for the test split (None for train).
    """

    image: np.ndarray
    brain: np.ndarray
    lesion: np.ndarray | None
    affine: np.ndarray
    meta: dict[str, Any]


def generate_volume(params: SynthParams, split: str, index: int, *, paint: bool = True,
                    mass_effect: bool = True) -> Generated:
    """Volume ``index`` of ``split``. ``paint=False`` leaves the lesion's intensities out and
    ``mass_effect=False`` its displacement (test split only; see :func:`healthy_counterpart`)."""
    if split not in SPLIT_CODE:
        raise ValueError(f"synth split {split!r}: expected one of {sorted(SPLIT_CODE)}")
    tpl = load_template(params.spacing)
    s = tpl.spacing
    ss_anatomy, ss_lesion, ss_noise = np.random.SeedSequence(
        [int(params.seed), SPLIT_CODE[split], int(index)]).spawn(3)
    draw = anatomy.draw_anatomy(np.random.default_rng(ss_anatomy), tpl)
    coords = anatomy.coordinate_map(tpl, draw)
    tissue = anatomy.sample_tissue(tpl, coords)
    img = anatomy.tissue_contrast(tissue, draw)
    wm_level = tpl.wm_level * (1.0 + draw.wm_contrast)
    meta: dict[str, Any] = {
        "split": split, "index": int(index), "seed": int(params.seed), "spacing_mm": s,
        "generator_version": GENERATOR_VERSION,
        "anatomy": {"rotation_deg": list(draw.rotation_deg), "scale": list(draw.scale),
                    "translation_mm": list(draw.translation_mm), "gamma": draw.gamma,
                    "gm_contrast": draw.gm_contrast, "wm_contrast": draw.wm_contrast,
                    "gain": draw.gain, "noise_sigma": draw.noise_sigma},
    }
    lesion = None
    if split == "test":
        if paint and not mass_effect:
            raise ValueError("generate_volume: paint=True needs mass_effect=True (a tumour is "
                             "painted on the displaced anatomy)")
        img, tissue, lesion, lmeta = _lesion(params, index, np.random.default_rng(ss_lesion), tpl,
                                             coords, tissue, img, draw, wm_level, paint, mass_effect)
        meta.update(lmeta)
    image = anatomy.finish(img, tissue.brain, draw, wm_level, np.random.default_rng(ss_noise))
    return Generated(image, tissue.brain.copy(), lesion, np.array(tpl.affine), meta)


def _lesion(params, index, rng, tpl, coords, tissue, img, draw, wm_level, paint, mass_effect):
    s = tpl.spacing
    kind = lesions.lesion_kind(index, params.lesion_mix)
    lo, hi = float(params.lesion_min_mm), float(params.lesion_max_mm)
    for _ in range(50):
        if kind == "tumour":
            plan = lesions.plan_tumour(rng, tissue, s, lo, hi)
            box, moved, local = lesions.mass_effect(plan, coords, s)
            pushed = anatomy.sample_tissue(tpl, local)
            t2 = anatomy.Tissue(*(getattr(tissue, f).copy() for f in ("t1", "gm", "wm", "brain")))
            for f in ("t1", "gm", "wm", "brain"):
                getattr(t2, f)[box] = np.where(moved, getattr(pushed, f), getattr(tissue, f)[box])
            img2 = img.copy()
            img2[box] = np.where(moved, anatomy.tissue_contrast(pushed, draw), img[box])
            painted, mask = lesions.paint_tumour(plan, t2, img2, wm_level, s)
        else:
            plan = lesions.plan_stroke(rng, tissue, s, lo, hi)
            t2, img2 = tissue, img
            painted, mask = lesions.paint_stroke(plan, tissue, img, wm_level,
                                                 tpl.csf_level * (1.0 + draw.gm_contrast), s)
        n = int(mask.sum())
        # thresholding against tissue can leave a lesion smaller than asked: draw again
        if lesions.equivalent_diameter(n, s) >= lo:
            break
    else:  # pragma: no cover - 50 failures would mean a broken template
        raise RuntimeError(f"synth: could not place a {kind} of at least {lo} mm in test volume {index}")
    idx = np.argwhere(mask)
    centre = np.asarray(plan.centre)
    affine = np.asarray(tpl.affine)
    meta = {
        "lesion_type": kind,
        "lesion_subtype": getattr(plan, "subtype", "glioma"),
        "lesion_voxels": n,
        "lesion_volume_mm3": float(n * s ** 3),
        "lesion_diameter_mm": lesions.equivalent_diameter(n, s),
        "lesion_nominal_diameter_mm": float(plan.diameter_mm),
        "lesion_extent_mm": float(((idx.max(0) - idx.min(0)) * s).max()),
        "lesion_centre_vox": [float(c) for c in centre],
        "lesion_centre_mm": [float(c) for c in (affine[:3, :3] @ centre + affine[:3, 3])],
        "lesion_plan": plan.to_meta(),
    }
    if not mass_effect:
        return img, tissue, mask, meta
    return (painted if paint else img2), t2, mask, meta


def healthy_counterpart(params: SynthParams, index: int, *, mass_effect: bool = True) -> Generated:
    """Test volume ``index`` without its lesion's intensities (same anatomy, same noise).

    With ``mass_effect=True`` a tumour's displacement is kept, so the counterpart differs from
    the lesioned volume exactly on the lesion mask; with ``False`` it is the plain healthy
    volume the lesion was put into. Its ``lesion`` field still holds the lesion's mask.
    """
    return generate_volume(params, "test", index, paint=False, mass_effect=mass_effect)


# -- cache --------------------------------------------------------------------------------
def cache_root(params: SynthParams, cache: str | Path | None = None) -> Path:
    """``cache`` (default ``adbench.io.cache_dir("synth")``) / content key; created."""
    base = Path(cache) if cache is not None else cache_dir("synth")
    root = base / params.content_key()
    root.mkdir(parents=True, exist_ok=True)
    return root


def volume_path(root: Path, subject: str) -> Path:
    return Path(root) / f"{subject}.npz"


def write_volume(path: Path, gen: Generated) -> str:
    """Write ``gen`` as an .npz (deflated zip, fixed timestamps) atomically; return its sha256."""
    arrays = {"image": gen.image.astype(np.float32), "brain": gen.brain.astype(bool),
              "affine": gen.affine.astype(np.float64),
              "meta": np.frombuffer(json.dumps(gen.meta, sort_keys=True).encode(), dtype=np.uint8)}
    if gen.lesion is not None:
        arrays["lesion"] = gen.lesion.astype(bool)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(arr), allow_pickle=False)
            # level 1: the noisy float image hardly compresses better at 6, and takes 1.6x longer
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME), npy.getvalue(),
                        compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
    data = buf.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_volume(path: Path) -> dict[str, Any]:
    """{"image", "brain", "lesion" (or None), "affine", "meta"} from a file of :func:`write_volume`."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in ("image", "brain", "affine")}
        out["lesion"] = z["lesion"] if "lesion" in z.files else None
        out["meta"] = json.loads(z["meta"].tobytes().decode())
    return out


def ensure_volumes(params: SynthParams, root: Path, subjects: Iterable[str], *,
                   progress: bool = False, workers: int | None = None) -> list[str]:
    """Generate the ``subjects`` whose files are missing under ``root``; keep the manifest
    in step with the folder.

    workers: processes (None: one per CPU core when at least 4 volumes are missing). They end
    with this process however it ends (:func:`adbench.datasets.synth.workers.worker_pool`).
    Each finished volume enters the manifest at once, so an interruption loses only the
    volumes in progress (their files are atomic, so they are simply absent), and the next
    call fills in any file whose entry a kill prevented (:func:`reconcile_manifest`).
    Returns the subjects that were missing (all generated now unless interrupted).
    """
    root = Path(root)
    reconcile_manifest(params, root)
    missing = [s for s in subjects if not volume_path(root, s).exists()]
    if not missing:
        return []
    if workers is None:
        workers = (os.cpu_count() or 1) if len(missing) >= 4 else 1
    workers = max(1, min(int(workers), len(missing)))
    bar = None
    if progress:
        from tqdm.auto import tqdm
        noun = "volume" if len(missing) == 1 else "volumes"
        bar = tqdm(total=len(missing), desc=f"synth: generating {len(missing)} {noun}", unit="vol")

    def done(sid: str, entry: dict) -> None:
        _record(params, root, {sid: entry})
        if bar is not None:
            bar.update(1)

    try:
        if workers == 1:
            for sid in missing:
                done(*_make_volume(params, root, sid))
        else:
            # a volume is a pure function of (params, subject): the files are byte-identical
            # whatever the number of processes
            from concurrent.futures import as_completed

            with worker_pool(workers) as pool:
                for fut in as_completed([pool.submit(_make_volume, params, root, sid)
                                         for sid in missing]):
                    done(*fut.result())
    finally:
        if bar is not None:
            bar.close()
    return missing


def _make_volume(params: SynthParams, root: Path, sid: str) -> tuple[str, dict]:
    """Generate and write one subject; its manifest entry."""
    split, index = parse_subject(sid)
    gen = generate_volume(params, split, index)
    path = volume_path(root, sid)
    return sid, _entry(path, write_volume(path, gen), gen.meta)


# -- manifest -----------------------------------------------------------------------------
def _entry(path: Path, digest: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {"file": Path(path).name, "sha256": digest, "lesion_type": meta.get("lesion_type"),
            "lesion_diameter_mm": meta.get("lesion_diameter_mm")}


def _manifest(params: SynthParams, volumes: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": "synth", "content": params.content(),
            "volumes": dict(sorted(volumes.items()))}


def _listed(obj: dict[str, Any]) -> dict[str, Any]:
    vols = obj.get("volumes")
    return dict(vols) if isinstance(vols, dict) else {}


def _record(params: SynthParams, root: Path, written: dict[str, dict]) -> None:
    """Merge ``written`` into the manifest under its lock (concurrent generations on one
    cache each add their own volumes), dropping entries whose file is gone."""
    def change(current: dict[str, Any]) -> dict[str, Any]:
        volumes = {**_listed(current), **written}
        return _manifest(params, {k: v for k, v in volumes.items()
                                  if volume_path(root, k).exists()})

    update_json(Path(root) / "manifest.json", change)


def _volume_files(root: Path) -> dict[str, Path]:
    out = {}
    for p in Path(root).glob("synth-*.npz"):  # temporary files start with "." and are skipped
        try:
            parse_subject(p.stem)
        except ValueError:
            continue
        out[p.stem] = p
    return out


def reconcile_manifest(params: SynthParams, root: Path) -> None:
    """Make ``root``'s manifest list exactly the volume files on disk.

    A parent killed after a worker wrote a file but before it entered the manifest, or a file
    deleted by hand, leaves the two apart; this adds an entry (sha256 and lesion summary read
    from the file) for each unlisted file and drops entries without a file. Cheap when they
    agree (one directory listing); files that cannot be read are left out and reported.
    """
    path = Path(root) / "manifest.json"
    if not Path(root).is_dir():
        return
    if set(_listed(read_json(path))) == set(_volume_files(root)):
        return
    report: dict[str, list[str]] = {"added": [], "dropped": [], "unreadable": []}

    def change(current: dict[str, Any]) -> dict[str, Any]:
        files, listed = _volume_files(root), _listed(current)
        report["dropped"] = sorted(set(listed) - set(files))
        volumes = {k: v for k, v in listed.items() if k in files}
        for sid in sorted(set(files) - set(listed)):
            entry = _entry_from_file(files[sid])
            if entry is None:
                report["unreadable"].append(str(files[sid]))
            else:
                volumes[sid] = entry
                report["added"].append(sid)
        return _manifest(params, volumes)

    try:
        update_json(path, change)
    except PermissionError as exc:  # a shared read-only cache: its files are still usable
        log.warning("synth manifest %s does not match the files beside it and cannot be "
                    "updated (%s); ask the cache's owner to open it once", path, exc)
        return
    log.info("synth manifest %s reconciled with the files on disk: %d added, %d dropped (no "
             "file)", path, len(report["added"]), len(report["dropped"]))
    for bad in report["unreadable"]:
        log.warning("synth cache file %s is unreadable and is left out of the manifest; delete "
                    "it and it will be generated again", bad)


def _entry_from_file(path: Path) -> dict[str, Any] | None:
    try:
        with np.load(path, allow_pickle=False) as z:  # lazy: reads the meta member only
            meta = json.loads(z["meta"].tobytes().decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return _entry(path, file_sha256(path), meta)
