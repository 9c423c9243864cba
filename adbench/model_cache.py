"""The model cache: which fitted model a run may reuse, and why it fits a new one.

A model is keyed by (method, fit config, preprocessing, seed, input files by content, and
the training set actually used: each subject with a hash of its source files' bytes, and the
subjects skipped). A changed training set is never served a stale model; ``training.json``
beside each model records what it was fitted on, so a refit can say what changed. A cached
``state.pt`` that fails its checksum or does not load is moved aside and the model fitted
again (architecture §5: results are data, never silently reused).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adbench.data.cache import SliceCache
from adbench.data.dataset import Dataset
from adbench.data.preprocess import PreprocessConfig
from adbench.data.volume import SliceSet
from adbench.detector import Context, Detector
from adbench.io import (CorruptCacheError, _out_of_memory, cache_dir, file_sha256, load_tensors,
                        quarantine, read_json_verified, save_tensors, write_json)
from adbench.locking import LockTimeout, file_lock
from adbench.plugins import get_registry
from adbench.rundir import RunFolder

if TYPE_CHECKING:
    from adbench.runner import RunSpec

__all__ = ["TrainingSet", "training_set", "input_files", "model_keys", "fit_or_load"]

log = logging.getLogger("adbench")


def input_files(spec: RunSpec) -> dict[str, dict[str, str]]:
    """key -> {"path", "sha256"} of the files the method's config names (``file_keys``)."""
    mspec = (spec.registry or get_registry()).method(spec.method)
    return {k: {"path": str(spec.method_config[k]), "sha256": file_sha256(spec.method_config[k])}
            for k in mspec.file_keys if spec.method_config.get(k) is not None}


@dataclass
class TrainingSet:
    """What a fit was trained on: each used subject with a hash of its source files' bytes,
    the subjects skipped, and the dataset's own fingerprint of its train split (``listing``:
    recorded to explain a refit, never part of the key: it holds paths and mtimes). Paths are
    left out of the content hashes, so a data folder or synth cache that moved keeps its
    models."""

    subjects: dict[str, str]
    skipped: list[str]
    listing: str

    @property
    def fingerprint(self) -> str:
        payload = {"subjects": self.subjects, "skipped": sorted(self.skipped)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "dataset_fingerprint": self.listing,
                "n_subjects": len(self.subjects), "subjects": sorted(self.subjects),
                "skipped": sorted(self.skipped)}


def training_set(ds: Dataset, name: str, cfg: PreprocessConfig, used: list[str],
                 skipped: list[dict]) -> TrainingSet:
    """The :class:`TrainingSet` of a loaded training split. The slice cache has just hashed
    every source file and keeps the hashes (its ``key``), so no file is read again here."""
    cache = SliceCache(ds, name, cfg)

    def content(subject: str) -> str:
        # the slice-cache key: the source files' sha256 in order, the dataset's parameters
        # that change what is read (not where from) and the preprocessing; no paths
        return hashlib.sha256(json.dumps([subject, cache.key(subject)[0]]).encode()).hexdigest()[:16]

    return TrainingSet(subjects={s: content(s) for s in used},
                       skipped=[str(r.get("subject") or r.get("path") or "?") for r in skipped],
                       listing=ds.fingerprint("train"))


def _model_key(spec: RunSpec, train: TrainingSet | str) -> str:
    """The model-cache key (``train``: a TrainingSet, or a bare fingerprint string)."""
    return model_keys(spec, train)[0]


def model_keys(spec: RunSpec, train: TrainingSet | str) -> tuple[str, str]:
    """(model key, config key): the config key is the same hash without the training data,
    so a model fitted with the same settings on other data can be found and named."""
    predict_only = set((spec.registry or get_registry()).method(spec.method).predict_keys)
    fit_config = {k: v for k, v in spec.method_config.items() if k not in predict_only}
    # a file enters the key by content, not by name: the method's file_keys, and any other
    # fit key whose value names an existing weights file (``weights=/path/vgg16.pth``), so a
    # file replaced at the same path refits and a copy at another path does not
    fit_config.update({k: f"sha256:{v['sha256']}" for k, v in input_files(spec).items()})
    fit_config.update({k: f"sha256:{file_sha256(v)}" for k, v in fit_config.items()
                       if _weights_file(v)})
    payload = {"method": spec.method, "config": fit_config, "preprocess": spec.preprocess.to_dict(),
               "seed": spec.seed, "max_train_volumes": spec.runner["max_train_volumes"]}
    config_key = _digest(payload)
    if isinstance(train, TrainingSet):
        # not train.listing: the dataset's fingerprint holds paths and mtimes, so a copied
        # or moved data folder would refit; the training set's content says what was used
        payload.update(train_set=train.fingerprint)
    else:
        payload["train"] = train
    return _digest(payload), config_key


#: file names that are weights (a value such as ``imagenet`` or ``random`` is not a path)
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz", ".pkl")


def _weights_file(v: Any) -> bool:
    return (isinstance(v, str) and not v.startswith("sha256:")
            and v.lower().endswith(WEIGHT_SUFFIXES) and Path(v).is_file())


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


STATE, TRAINING = "state.pt", "training.json"   # in a model-cache folder


def _names(subjects: list[str], n: int = 5) -> str:
    return ", ".join(subjects[:n]) + (f" and {len(subjects) - n} more" if len(subjects) > n else "")


def _refit_reason(method_dir: Path, key: str, config_key: str, train: TrainingSet) -> str:
    """Why there is no cached model: none with these settings at all, or one fitted on other
    training data (named, with the subjects that differ)."""
    found = []
    for p in method_dir.glob(f"*/{TRAINING}"):
        state = p.parent / STATE
        if p.parent.name == key or not state.is_file():
            continue
        try:
            rec = read_json_verified(p)
        except (CorruptCacheError, OSError):
            continue  # only used to explain a refit; a damaged record explains nothing
        if isinstance(rec, dict) and rec.get("config_key") == config_key:
            found.append((state.stat().st_mtime, p.parent.name, rec))
    if not found:
        return (f"no cached model with key {key} (training set {train.fingerprint}: "
                f"{len(train.subjects)} subjects, {len(train.skipped)} skipped)")
    _, old_key, rec = max(found)
    old, new = dict(rec.get("subjects") or {}), train.subjects
    changed = sorted(s for s in set(old) & set(new) if old[s] != new[s])
    added, gone = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    parts = [f"{len(names)} subject(s) {what} ({_names(names)})" for names, what in (
        (changed, "changed"), (added, "used now but not then"), (gone, "used then but not now"))
        if names]
    if not parts:
        parts = [f"the dataset's fingerprint changed ({rec.get('dataset_fingerprint')} -> "
                 f"{train.listing})"]
    return (f"training data changed since cached model {old_key} (training set "
            f"{rec.get('train_set')} -> {train.fingerprint}): " + "; ".join(parts))


def fit_or_load(detector: Detector, train: SliceSet, spec: RunSpec, train_set: TrainingSet,
                 ctx: Context, folder: RunFolder) -> tuple[dict, Path]:
    """Load the cached model or fit one; returns the summary's ``model`` record and the
    model-cache folder."""
    key, config_key = model_keys(spec, train_set)
    mdir = cache_dir("models", spec.method, key)
    ctx.workdir = mdir / "work"
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    # one fit per key: a second run of the same model (a parallel predict-only sweep) waits
    # for the first, then loads its state instead of fitting again and racing its writes
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(mdir / STATE, timeout=0))
        except LockTimeout:
            log.info("another process is fitting %s (model cache %s); waiting for it",
                     spec.method, mdir)
            held.enter_context(file_lock(mdir / STATE, timeout=None))
        return _fit_or_load_locked(detector, train, spec, train_set, ctx, folder, key,
                                   config_key, mdir)


def _fit_or_load_locked(detector: Detector, train: SliceSet, spec: RunSpec,
                        train_set: TrainingSet, ctx: Context, folder: RunFolder, key: str,
                        config_key: str, mdir: Path) -> tuple[dict, Path]:
    state_path, record_path = mdir / STATE, mdir / TRAINING
    status, reason = "fitted", None
    if state_path.exists():
        try:
            state = load_tensors(state_path, map_location="cpu")
            try:
                detector.load_state_dict(state)
            except (KeyError, ValueError, RuntimeError, TypeError) as exc:
                if _out_of_memory(exc):
                    raise
                raise CorruptCacheError(state_path, f"does not load into {spec.method} "
                                                    f"({type(exc).__name__}: {exc})") from exc
            status = "cached"
            reason = f"cached model {key} was fitted on this training set ({train_set.fingerprint})"
            log.info("reusing cached model %s", mdir)
        except CorruptCacheError as exc:
            quarantine(state_path, exc.reason, f"fitting {spec.method} again", log)
            reason = f"the cached {STATE} was unusable ({exc.reason}); moved aside and fitted again"
    if status == "fitted":
        reason = reason or _refit_reason(mdir.parent, key, config_key, train_set)
        log.info("fitting %s on %d training slices (model cache %s): %s", spec.method, len(train),
                 mdir, reason)
        detector.fit(train, ctx)
        write_json(mdir / "params.json", detector.get_params())
        save_tensors(state_path, detector.state_dict())
    if status == "fitted" or not record_path.exists():
        write_json(record_path, {"key": key, "config_key": config_key, "method": spec.method,
                                 "train_on": spec.train_on, "train_set": train_set.fingerprint,
                                 "dataset_fingerprint": train_set.listing,
                                 "subjects": train_set.subjects,
                                 "skipped": sorted(train_set.skipped)}, checksum=True)
    record = {"status": status, "reason": reason, "key": key, "cache_dir": str(mdir)}
    folder.write_model({**record, "training_set": train_set.fingerprint,
                        "params": detector.get_params()})
    return record, mdir
