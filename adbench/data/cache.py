"""From dataset plugins to preprocessed slices, with a per-subject cache.

Steps 1–4 of :mod:`adbench.data.preprocess` are cached per subject under
``$ADBENCH_CACHE/slices/<dataset>/``. The cache key of a subject is the hash of the
preprocessing config, the dataset's parameters and the sha256 of every source file, so a
changed or added file invalidates exactly its subject's entry. ``manifest.json`` beside the
entries records, for each subject, its key and source-file hashes. File hashes are memoised
by (path, size, mtime) so unchanged files are not re-read.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from adbench.data.dataset import Dataset
from adbench.data.preprocess import (HistogramReference, PreprocessConfig, Preprocessed, normalize,
                                     preprocess_volume)
from adbench.data.volume import DataError, SliceSet
from adbench.io import atomic_path, cache_dir, file_sha256, safe_filename, write_json

__all__ = ["SliceCache", "iter_preprocessed", "to_slices", "finalize_image"]

log = logging.getLogger("adbench")


class SliceCache:
    """Per-subject cache of preprocessed volumes (steps 1–4) for one dataset."""

    def __init__(self, dataset: Dataset, dataset_name: str, cfg: PreprocessConfig,
                 root: Path | None = None):
        self.dataset = dataset
        self.cfg = cfg
        self.root = Path(root) if root else cache_dir("slices", dataset_name)
        self.root.mkdir(parents=True, exist_ok=True)
        self._hash_index_path = self.root / "file-hashes.json"
        self._hash_index: dict[str, str] = _read_json(self._hash_index_path)
        self._manifest_path = self.root / "manifest.json"
        self._manifest: dict[str, Any] = _read_json(self._manifest_path)
        self._dirty = False
        base = {"preprocess": cfg.to_dict(), "dataset": dataset.params(), "v": 1}
        self._base = json.dumps(base, sort_keys=True, default=str)

    def _file_hash(self, path: Path) -> str:
        st = path.stat()
        memo = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if memo not in self._hash_index:
            self._hash_index[memo] = file_sha256(path)
            self._dirty = True
        return self._hash_index[memo]

    def key(self, subject: str) -> tuple[str, dict[str, str]]:
        sources = {str(p): self._file_hash(Path(p)) for p in self.dataset.source_files(subject)}
        h = hashlib.sha256((self._base + subject + json.dumps(sources, sort_keys=True)).encode())
        return h.hexdigest()[:24], sources

    def get(self, subject: str) -> Preprocessed:
        key, sources = self.key(subject)
        path = self.root / f"{safe_filename(subject)}-{key}.npz"
        if path.exists():
            try:
                return _load_pre(path, subject)
            except Exception:  # a damaged entry is rebuilt, never trusted
                log.warning("slice cache entry %s is unreadable; rebuilding", path)
        vol = self.dataset.load(subject)
        pre = preprocess_volume(vol, self.cfg)
        # The cache stores float16; round now so a fresh result equals a cached one exactly.
        pre.image = pre.image.astype(np.float16).astype(np.float32)
        _save_pre(path, pre)
        self._manifest[subject] = {"key": key, "file": path.name, "sources": sources}
        self._dirty = True
        return pre

    def flush(self) -> None:
        if self._dirty:
            write_json(self._hash_index_path, self._hash_index)
            write_json(self._manifest_path, self._manifest)
            self._dirty = False



def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _save_pre(path: Path, pre: Preprocessed) -> None:
    arrays = {"image": pre.image.astype(np.float16), "brain": pre.brain, "affine": pre.affine,
              "meta": np.frombuffer(json.dumps(pre.meta, default=str).encode(), dtype=np.uint8)}
    if pre.lesion is not None:
        arrays["lesion"] = pre.lesion
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _load_pre(path: Path, subject: str) -> Preprocessed:
    with np.load(path, allow_pickle=False) as z:
        lesion = z["lesion"] if "lesion" in z.files else None
        meta = json.loads(z["meta"].tobytes().decode()) if "meta" in z.files else {}
        return Preprocessed(image=z["image"].astype(np.float32), brain=z["brain"], lesion=lesion,
                            affine=z["affine"], subject_id=subject, meta=meta)


def iter_preprocessed(dataset: Dataset, dataset_name: str, split: str, cfg: PreprocessConfig, *,
                      strict: bool = False, report: list | None = None, progress: bool = False,
                      limit: int | None = None) -> Iterator[Preprocessed]:
    """Preprocessed volumes of a split; bad subjects are reported (or fatal with strict)."""
    report = report if report is not None else []
    for problem in dataset.problems(split):
        if strict:
            raise DataError(f"{problem.get('path', '')}: {problem['reason']} "
                            f"(subject {problem['subject']!r}; --strict is on)")
        report.append(dict(problem))
    subjects = dataset.subjects(split)
    if limit is not None:
        subjects = subjects[: int(limit)]
    cache = SliceCache(dataset, dataset_name, cfg)
    try:
        for subject in tqdm(subjects, desc=f"{dataset_name}/{split}", unit="vol", disable=not progress,
                            leave=False):
            try:
                pre = cache.get(subject)
            except DataError as exc:
                if strict:
                    raise
                report.append({"subject": subject, "path": _first_source(dataset, subject),
                               "reason": str(exc)})
                log.warning("skipping %s: %s", subject, exc)
                continue
            yield pre
    finally:
        cache.flush()


def _first_source(dataset: Dataset, subject: str) -> str:
    try:
        files = dataset.source_files(subject)
    except Exception:
        return ""
    return str(files[0]) if files else ""


def finalize_image(pre: Preprocessed, reference: HistogramReference | None, cfg: PreprocessConfig) -> np.ndarray:
    """Steps 5–6: histogram matching (when configured) and normalisation to [-1, 1]."""
    img = pre.image
    if cfg.match and reference is not None:
        img = reference.match(img, pre.brain)
    return normalize(img, pre.brain)


def to_slices(pre: Preprocessed, image: np.ndarray, z: np.ndarray) -> SliceSet:
    """The axial slices ``z`` of one finalised volume as a SliceSet."""
    z = np.asarray(z, dtype=np.int64)
    h, w, depth = image.shape
    lesion = pre.lesion if pre.lesion is not None else np.zeros_like(pre.brain)
    to_t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a[:, :, z], -1, 0))).to(dt)
    return SliceSet(images=to_t(image, torch.float32)[:, None], brain=to_t(pre.brain, torch.bool),
                    lesion=to_t(lesion, torch.bool), subjects=[pre.subject_id] * len(z), z=z,
                    affines={pre.subject_id: pre.affine}, depth={pre.subject_id: depth})
