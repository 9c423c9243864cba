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
from pathlib import Path
from typing import Any

from adbench.data.volume import Volume
from adbench.params import PositiveInt, check_value

__all__ = ["Dataset", "ListedDataset", "SubjectLimit", "first_subjects"]

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

    def subjects(self, split: str) -> list[str]:  # pragma: no cover - abstract
        """Subject ids of ``split`` ("train": healthy volumes, "test": volumes with lesion
        masks), in a deterministic order."""
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
