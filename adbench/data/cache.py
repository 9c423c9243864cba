"""From dataset plugins to preprocessed slices, with a per-subject cache.

Steps 1–4 of :mod:`adbench.data.preprocess` are cached per subject under
``$ADBENCH_CACHE/slices/<dataset>/<subject>-<key>.npz``. The key identifies content, not
places: it hashes the preprocessing config, the dataset's parameters other than where its
files live (:data:`LOCATION_PARAMS`) and the sha256 of every source file in order. Moving or
copying a dataset therefore reuses its entries, and a changed or added file invalidates
exactly its subject's entry. Paths recorded in an entry's metadata (``image_path``…) are
those of the files it was read from; on a hit they are replaced by the current ones.

``manifest.json`` beside the entries records, for each subject, its last key, entry file and
source-file hashes; ``file-hashes.json`` memoises file hashes by (path, size, mtime) so
unchanged files are not re-read. Both are merged on write under a file lock
(:func:`adbench.locking.update_json`), so concurrent runs on one cache keep every entry.

Pruning: every read of an entry sets its access time to now (its mtime stays when it was
built), so an entry was last used at the later of the two. ``adbench cache prune``
(:func:`prune_cache`) removes entries unused for ``--older-than`` days (default 30),
quarantined ``*.corrupt-*`` files, and temporary files that a killed write left behind.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from adbench.data.dataset import Dataset
from adbench.data.preprocess import (HistogramReference, PreprocessConfig, Preprocessed, normalize,
                                     preprocess_volume)
from adbench.data.validate import os_error_reason
from adbench.data.volume import DataError, SliceSet
from adbench.io import (CorruptCacheError, atomic_path, cache_dir, file_sha256, load_verified,
                        quarantine, safe_filename)
from adbench.locking import read_json, update_json

__all__ = ["SliceCache", "iter_preprocessed", "to_slices", "finalize_image", "prune_cache",
           "LOCATION_PARAMS", "LOCATION_SUFFIXES", "CACHE_VERSION"]

log = logging.getLogger("adbench")

#: the folders of an adbench cache (``cache_dir()``) that ``prune`` walks
CACHE_FOLDERS = ("slices", "models", "synth")
#: bump when the key or the entry format changes; old entries are then left for prune
CACHE_VERSION = 2
#: dataset parameters that say where files are, not what they hold: left out of the key.
#: A dataset adds its own with a ``location_params`` attribute; names ending in ``_root``,
#: ``_dir`` or ``_path`` count too.
LOCATION_PARAMS = frozenset({"data_root", "cache_dir", "manifest"})
LOCATION_SUFFIXES = ("_root", "_dir", "_path")


def content_params(dataset: Dataset) -> dict[str, Any]:
    """``dataset.params()`` without the parameters that only locate its files."""
    skip = LOCATION_PARAMS | set(getattr(dataset, "location_params", ()))
    return {k: v for k, v in dataset.params().items()
            if k not in skip and not k.endswith(LOCATION_SUFFIXES)}


class SliceCache:
    """Per-subject cache of preprocessed volumes (steps 1–4) for one dataset."""

    def __init__(self, dataset: Dataset, dataset_name: str, cfg: PreprocessConfig,
                 root: Path | None = None):
        self.dataset = dataset
        self.cfg = cfg
        self.root = Path(root) if root else cache_dir("slices", dataset_name)
        self.root.mkdir(parents=True, exist_ok=True)
        self._hash_index_path = self.root / "file-hashes.json"
        self._hash_index: dict[str, str] = read_json(self._hash_index_path)
        self._manifest_path = self.root / "manifest.json"
        self._manifest: dict[str, Any] = read_json(self._manifest_path)
        # what this process adds; flush() merges it into the files as they are then
        self._new_hashes: dict[str, str] = {}
        self._new_entries: dict[str, Any] = {}
        base = {"preprocess": cfg.to_dict(), "dataset": content_params(dataset),
                "v": CACHE_VERSION}
        self._base = json.dumps(base, sort_keys=True, default=str)

    def _file_hash(self, path: Path) -> str:
        memo = _memo(path)
        if memo not in self._hash_index:
            self._hash_index[memo] = self._new_hashes[memo] = file_sha256(path)
        return self._hash_index[memo]

    def key(self, subject: str) -> tuple[str, dict[str, str]]:
        """(key, {source path: sha256} in ``source_files`` order). The key hashes the
        hashes in order, not the paths: the same bytes anywhere give the same key."""
        sources = {str(p): self._file_hash(Path(p)) for p in self.dataset.source_files(subject)}
        blob = json.dumps([self._base, list(sources.values())])
        return hashlib.sha256(blob.encode()).hexdigest()[:24], sources

    def entry_path(self, subject: str, key: str) -> Path:
        return self.root / f"{safe_filename(subject)}-{key}.npz"

    def get(self, subject: str) -> Preprocessed:
        key, sources = self.key(subject)
        path = self.entry_path(subject, key)
        pre = None
        if path.exists():
            try:
                pre = load_verified(path, lambda p: _load_pre(p, subject, list(sources)))
                _touch(path)
            except FileNotFoundError:  # pruned by another process just now
                pre = None
            except CorruptCacheError as exc:  # a damaged entry is rebuilt, never trusted
                quarantine(path, exc.reason, f"preprocessing {subject!r} again", log)
        if pre is None:
            vol = self.dataset.load(subject)
            pre = preprocess_volume(vol, self.cfg)
            # The cache stores float16; round now so a fresh result equals a cached one exactly.
            pre.image = pre.image.astype(np.float16).astype(np.float32)
            _save_pre(path, pre, list(sources))
        entry = {"key": key, "file": path.name, "sources": sources}
        if self._manifest.get(subject) != entry:
            self._manifest[subject] = self._new_entries[subject] = entry
        return pre

    def flush(self) -> None:
        """Merge this process's new file hashes and manifest entries into the files on disk
        (under their locks: another run may have written them since they were read)."""
        try:
            if self._new_hashes:
                new = dict(self._new_hashes)
                update_json(self._hash_index_path, lambda cur: cur.update(new))
                self._new_hashes.clear()
            if self._new_entries:
                new = dict(self._new_entries)
                self._manifest = update_json(self._manifest_path, lambda cur: cur.update(new))
                self._new_entries.clear()
        except OSError as exc:  # a read-only shared cache: its entries serve, bookkeeping waits
            log.warning("slice cache %s: could not update its manifest (%s); the run goes on",
                        self.root, exc)


def _touch(path: Path) -> None:
    """Mark an entry as used now (what prune goes by) in its atime, set explicitly so that
    noatime mounts do not matter; the mtime stays when it was built. A read-only cache stays
    as it is."""
    try:
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
    except OSError:
        pass


def _save_pre(path: Path, pre: Preprocessed, sources: list[str]) -> None:
    arrays = {"image": pre.image.astype(np.float16), "brain": pre.brain, "affine": pre.affine,
              "meta": _json_array(pre.meta), "sources": _json_array(sources)}
    if pre.lesion is not None:
        arrays["lesion"] = pre.lesion
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _json_array(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, default=str).encode(), dtype=np.uint8)


def _load_pre(path: Path, subject: str, sources: list[str]) -> Preprocessed:
    """An entry, its metadata's paths moved to ``sources`` (the same files by content and
    order as those it was built from, maybe elsewhere: the key says so)."""
    with np.load(path, allow_pickle=False) as z:
        lesion = z["lesion"] if "lesion" in z.files else None
        meta = json.loads(z["meta"].tobytes().decode())
        built_from = json.loads(z["sources"].tobytes().decode())
        pre = Preprocessed(image=z["image"].astype(np.float32), brain=z["brain"], lesion=lesion,
                           affine=z["affine"], subject_id=subject, meta=meta)
    if len(built_from) != len(sources):
        raise ValueError(f"built from {len(built_from)} source files, the key has {len(sources)}")
    pre.meta = _moved(meta, dict(zip(built_from, sources)))
    return pre


def _moved(obj: Any, where: dict[str, str]) -> Any:
    if isinstance(obj, str):
        return where.get(obj, obj)
    if isinstance(obj, dict):
        return {k: _moved(v, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_moved(v, where) for v in obj]
    return obj


# -- pruning -------------------------------------------------------------------------------
#: a temporary file of a live atomic write is seconds old; one older than this was orphaned
#: by a killed process
TEMP_FILE_AGE_S = 3600.0


def prune_cache(root: str | Path | None = None, *, older_than_days: float = 30.0,
                dry_run: bool = False, now: float | None = None) -> list[dict[str, Any]]:
    """Remove what the cache under ``root`` (default: ``$ADBENCH_CACHE``) no longer needs.

    - slice-cache entries (``slices/<dataset>/*.npz``) neither built nor read for
      ``older_than_days`` (every read sets an entry's atime; 0 removes every entry);
    - quarantined files (``*.corrupt-*``, anywhere: never read again, kept only until a
      prune so the damage can be looked at);
    - temporary files of interrupted atomic writes (``.<name>.<random>.tmp…``) older than
      :data:`TEMP_FILE_AGE_S`.
    Then the manifests and hash indexes of the slice cache forget what is gone. An entry
    removed while a run is about to read it is simply preprocessed again.

    Returns one ``{"path", "bytes", "reason"}`` per file removed (with ``dry_run``: per file
    that would be), in path order.
    """
    if not older_than_days >= 0:  # NaN too
        raise ValueError(f"prune: older_than_days={older_than_days!r}: expected a number of "
                         f"days >= 0 (0 removes every slice-cache entry)")
    base = Path(root) if root is not None else cache_dir()
    now = time.time() if now is None else float(now)
    found: dict[Path, str] = {}
    # only the cache's own folders: a wrong --cache-dir (a home folder) must lose nothing
    owned = [base / d for d in CACHE_FOLDERS if (base / d).is_dir()]
    if not owned:
        raise ValueError(f"prune: {base} holds none of the cache folders "
                         f"{', '.join(CACHE_FOLDERS)}; is it an adbench cache? (ADBENCH_CACHE "
                         f"or --cache-dir names the folder that holds them)")
    walk = (entry for folder in owned for entry in os.walk(folder))
    for dirpath, _dirs, files in walk:  # does not follow links out of the cache
        for name in files:
            path = Path(dirpath) / name
            if ".corrupt-" in name:
                found[path] = "quarantined (corrupt)"
            elif (name.startswith(".") and (name.endswith(".tmp") or ".tmp." in name)
                  and now - _mtime(path) > TEMP_FILE_AGE_S):
                found[path] = "temporary file left by an interrupted write"
    slices = base / "slices"
    datasets = sorted(d for d in slices.iterdir() if d.is_dir()) if slices.is_dir() else []
    for d in datasets:
        for path in d.glob("*.npz"):
            age = now - _last_used(path)
            if age > older_than_days * 86400:
                found[path] = ("slice-cache entry unused for " + (f"{age / 86400:.1f} days"
                               if age >= 86400 else f"{age / 3600:.1f} hours"))
    removed = []
    for path in sorted(found):
        try:
            size = path.stat().st_size
            if not dry_run:
                path.unlink()
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        removed.append({"path": str(path), "bytes": size, "reason": found[path]})
    if not dry_run:
        for d in datasets:
            _forget_missing(d)
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")  # gone: never "old"


def _last_used(path: Path) -> float:
    try:
        st = path.stat()
    except FileNotFoundError:
        return float("inf")
    return max(st.st_atime, st.st_mtime)


def _stat_id(st: os.stat_result) -> str:
    # size and mtime alone miss a same-size rewrite that kept its mtime (cp -p, rsync -t);
    # the inode and ctime change with it (ctime cannot be set back by utime)
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"


def _memo(path: Path) -> str:
    """The hash-memo key of a file: ``<resolved path>:<size>:<mtime_ns>:<inode>:<ctime_ns>``."""
    return f"{path.resolve()}:{_stat_id(path.stat())}"


def _forget_missing(folder: Path) -> None:
    """Drop manifest entries whose file is gone, and hash memos of files that are gone or
    changed (see :func:`_memo`)."""
    if (folder / "manifest.json").exists():
        def entries(cur: dict) -> dict:
            return {s: e for s, e in cur.items()
                    if isinstance(e, dict) and (folder / str(e.get("file", ""))).exists()}
        update_json(folder / "manifest.json", entries)
    if (folder / "file-hashes.json").exists():
        def memos(cur: dict) -> dict:
            keep = {}
            for memo, sha in cur.items():
                path, stat_id = _split_memo(memo)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if _stat_id(st) == stat_id:
                    keep[memo] = sha
            return keep
        update_json(folder / "file-hashes.json", memos)


def _split_memo(memo: str) -> tuple[str, str]:
    """(path, stat id) of a memo key; an old-format key gets a stat id that never matches."""
    parts = memo.rsplit(":", 4)
    return (parts[0], ":".join(parts[1:])) if len(parts) == 5 else (memo, "")


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
            except (DataError, OSError) as exc:
                # an OSError while hashing or reading (an I/O error, a folder the user cannot
                # enter) is that subject's problem, like a corrupt file
                reason = str(exc) if isinstance(exc, DataError) else os_error_reason(exc)
                if strict:
                    if isinstance(exc, DataError):
                        raise
                    raise DataError(f"{reason} (subject {subject!r}; --strict is on)") from exc
                report.append({"subject": subject, "path": _first_source(dataset, subject),
                               "reason": reason})
                log.warning("skipping %s: %s", subject, reason)
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
