"""The dataset contract.

A dataset plugin's factory returns an object with this interface (subclassing
:class:`Dataset` is the easy way). Subjects are loaded one at a time so a 1,000-volume
dataset never sits in memory; a subject that cannot be read raises
:class:`adbench.DataError` naming the file and the problem, and the runner reports it and
skips it (or stops, with ``--strict``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from adbench.data.volume import Volume
from adbench.params import PositiveInt, check_value

__all__ = ["Dataset", "ListedDataset", "SubjectLimit", "first_subjects", "HeldOut", "hold_out",
           "validation_source", "VAL_SPLIT"]

#: Name of the healthy validation split (subjects disjoint from "train"), which sets the
#: thresholds of :mod:`adbench.evaluation.thresholds`. A dataset offers it by setting
#: ``has_val_split = True`` and answering ``subjects("val")``.
VAL_SPLIT = "val"

log = logging.getLogger("adbench")

#: Type of a "keep only the first N subjects" key (``max_subjects``, OpenBHB's
#: ``n_subjects``): None = all. Readers use it as the hint, so ``adbench run`` refuses 0 or
#: -1 before any folder exists (a slice ``ids[:-1]`` would silently drop the last subject).
SubjectLimit = PositiveInt | None


class Dataset:
    """Base class of dataset plugins.

    Subclasses set ``name`` and implement ``subjects`` and ``load``. ``fingerprint``
    identifies the content of a split; the default hashes the subject list, the
    constructor parameters and each source file's size and modification time as reported
    by ``source_files``.

    ``location_params``: names of constructor parameters that only say where files are
    (beyond the default rule: ``data_root``, ``cache_dir``, ``manifest`` and names ending in
    ``_root``, ``_dir`` or ``_path``). The slice cache leaves them out of its key, so the same
    files read from another folder reuse their entries (:mod:`adbench.data.cache`).
    """

    name: str = "dataset"
    location_params: tuple[str, ...] = ()
    #: whether ``subjects("val")`` lists healthy validation subjects (possibly none)
    has_val_split: bool = False

    def subjects(self, split: str) -> list[str]:  # pragma: no cover - abstract
        """Subject ids of ``split`` ("train": healthy volumes, "test": volumes with lesion
        masks, "val": healthy volumes disjoint from "train", for datasets that list it), in
        a deterministic order."""
        raise NotImplementedError(f"{type(self).__name__} must implement subjects(split)")

    def load(self, subject: str) -> Volume:  # pragma: no cover - abstract
        """Read one subject. Raise DataError (naming the file) when it is unusable."""
        raise NotImplementedError(f"{type(self).__name__} must implement load(subject)")

    def problems(self, split: str) -> list[dict[str, str]]:
        """Subjects of ``split`` left out while listing (duplicate ids, missing files, ...),
        as dicts {"subject", "path", "reason"}. The runner reports them with the subjects
        that fail to load, and ``--strict`` makes any of them fatal. Default: none."""
        return []

    def source_files(self, subject: str) -> list[Path]:
        """Files a subject is read from (for cache invalidation). Default: none."""
        return []

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and not k.endswith("_")}

    def fingerprint(self, split: str) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"name": self.name, "split": split, "params": self.params()},
                            sort_keys=True, default=str).encode())
        for s in self.subjects(split):
            h.update(s.encode())
            for f in self.source_files(s):
                try:
                    st = Path(f).stat()
                except OSError as exc:  # the run skips that subject; its state is still hashed
                    h.update(f"{f}:{type(exc).__name__}:{exc.errno}".encode())
                    continue
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


class ListedDataset(Dataset):
    """A dataset listed by one scan of its folder.

    Subclasses implement ``_listing() -> (found: subject → entry, problems: list)`` (cached
    by the subclass) and ``_check_split(split)`` (raise DataError for a split it lacks), and
    may set ``max_subjects`` to keep only the first N subjects.
    """

    max_subjects: int | None = None

    def _listing(self) -> tuple[dict, list]:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement _listing()")

    def _check_split(self, split: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement _check_split(split)")

    def subjects(self, split: str) -> list[str]:
        self._check_split(split)
        ids = list(self._listing()[0])
        return first_subjects(ids, self.max_subjects, dataset=self.name)

    def problems(self, split: str) -> list[dict[str, str]]:
        self._check_split(split)
        return list(self._listing()[1])


def first_subjects(ids: list[str], limit: Any, *, dataset: str, key: str = "max_subjects") -> list[str]:
    """The first ``limit`` of ``ids`` (all when None); a limit that is not an int >= 1 is
    a ConfigError naming the key, even for a dataset built directly (not by ``adbench run``)."""
    if limit is None:
        return ids
    check_value(SubjectLimit, limit, f"dataset {dataset!r}", key)
    return ids[:limit]


class HeldOut(Dataset):
    """A dataset whose "train" split is split in two: ``train`` subjects and ``val`` subjects
    held out for threshold estimation (when the dataset gives no "val" split itself).

    Every other call goes to the wrapped dataset, so the slice cache and the model cache see
    the same files, parameters and name; ``fingerprint("train")`` hashes the kept subjects.
    """

    def __init__(self, dataset: Dataset, train: list[str], val: list[str]):
        self._ds = dataset
        self._split = {"train": list(train), VAL_SPLIT: list(val)}
        self.name = dataset.name
        self.location_params = getattr(dataset, "location_params", ())
        self.has_val_split = True

    def subjects(self, split: str) -> list[str]:
        return list(self._split[split]) if split in self._split else self._ds.subjects(split)

    def problems(self, split: str) -> list[dict[str, str]]:
        return [] if split == VAL_SPLIT else self._ds.problems(split)

    def load(self, subject: str) -> Volume:
        return self._ds.load(subject)

    def source_files(self, subject: str) -> list[Path]:
        return self._ds.source_files(subject)

    def params(self) -> dict[str, Any]:
        return self._ds.params()

    def fingerprint(self, split: str) -> str:
        if split not in self._split:
            return self._ds.fingerprint(split)
        h = hashlib.sha256(f"{self._ds.fingerprint(split)}:held-out:".encode())
        h.update(json.dumps(self._split[split]).encode())
        return h.hexdigest()[:16]


def hold_out(subjects: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, val): ``floor(fraction * n)`` of the ``n`` subjects (never all: one stays for
    training) drawn without replacement with ``seed``; both lists keep the listing's order.
    None is held out when that is 0 (``fraction`` 0, or fewer than 1/fraction subjects: a
    tiny training set is not cut further)."""
    n = len(subjects)
    k = 0 if fraction <= 0 else min(n - 1, int(math.floor(fraction * n + 1e-9)))
    if k == 0:
        return list(subjects), []
    rng = np.random.default_rng([int(seed), 0x7A1])
    pick = set(rng.choice(n, size=k, replace=False).tolist())
    return ([s for i, s in enumerate(subjects) if i not in pick],
            [s for i, s in enumerate(subjects) if i in pick])


def validation_source(train_ds: Dataset, name: str, fraction: float,
                      seed: int) -> tuple[Dataset, dict[str, Any]]:
    """(training dataset, validation record for summary.json).

    The training dataset's own "val" split when it lists subjects there (``source``
    "dataset"); else ``fraction`` (``runner.val_holdout``) of its training subjects held out
    by :func:`hold_out` (``source`` "held out from training"; the returned :class:`HeldOut`
    lists only the rest as "train"); else none (``source`` None, with a note saying why).
    """
    own = train_ds.subjects(VAL_SPLIT) if getattr(train_ds, "has_val_split", False) else []
    if own:
        return train_ds, {"source": "dataset", "dataset": name, "subjects": list(own)}
    kept, held = hold_out(train_ds.subjects("train"), fraction, seed)
    if not held:
        why = ("runner.val_holdout is 0" if fraction <= 0 else
               f"runner.val_holdout={fraction:g} of its {len(kept)} training subjects is less "
               f"than one")
        return train_ds, {"source": None, "dataset": name, "subjects": [],
                          "note": f"no validation subjects: {name!r} has no 'val' split and "
                                  f"{why}; the dice_fpr columns are NaN"}
    log.info("validation: %d of %d training subjects of %r held out (runner.val_holdout=%g)",
             len(held), len(held) + len(kept), name, fraction)
    return HeldOut(train_ds, kept, held), {
        "source": "held out from training", "dataset": name, "subjects": held,
        "fraction": float(fraction),
        "note": f"{name!r} has no 'val' split: {len(held)} of its training subjects were held "
                f"out and not trained on (runner.val_holdout={fraction:g})"}
