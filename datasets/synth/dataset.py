"""The ``synth`` dataset: healthy and lesioned volumes derived from the MNI152 template.

Generated on first use into the cache (``cache_dir`` or ``adbench.io.cache_dir("synth")``),
one file per volume, and read from there afterwards: by default the first read of a missing
volume generates every missing volume of both splits (in parallel; a run reads them all), with
``generate="each"`` only the volume read (``adbench show``). Either way a volume's file is the
same bytes, so a preview's files are reused by a later run. Split "train" holds healthy volumes
(``lesion_mask`` None), split "test" volumes with one tumour-like or stroke-like lesion each,
split "val" further healthy volumes (``n_val``) for thresholds set without test labels; they
have their own random streams, so adding them leaves every train and test volume as it was.
"""
from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

from adbench import DataError, Dataset, Volume
from adbench.config import ConfigError
from adbench.datasets.synth.generate import (SynthParams, cache_root, ensure_volumes, parse_subject,
                                             read_volume, reconcile_manifest, volume_path)

__all__ = ["SynthDataset"]

_GENERATE = ("all", "each")


class SynthDataset(Dataset):
    """Embedded synthetic dataset (architecture §8); runs anywhere, downloads nothing.

    n_train, n_test   number of healthy / lesioned volumes.
    n_val             number of healthy validation volumes (split "val"; not trained on).
    lesion_mix        fraction of test volumes with a tumour (the others have a stroke).
    seed              every volume is a pure function of (seed, split, index).
    spacing           voxel size in mm: 1 = the template's 197x233x189 grid, 2 = 99x117x95.
    lesion_min_mm, lesion_max_mm
                      lesion size range (equivalent-sphere diameter >= min; inside a ball of
                      diameter <= max).
    cache_dir         folder for the generated files (None: ``$ADBENCH_CACHE/synth``).
    progress          progress bar while generating; None: only when stderr is a terminal.
    generate          what reading a missing volume generates: "all" every missing volume of
                      both splits (what a run reads), "each" only that volume (what a preview
                      reads). A volume's file is the same bytes either way.
    """

    name = "synth"
    has_val_split = True

    def __init__(self, n_train: int = 40, n_test: int = 20, lesion_mix: float = 0.5, seed: int = 0,
                 spacing: int = 1, lesion_min_mm: float = 5.0, lesion_max_mm: float = 45.0,
                 cache_dir: str | None = None, progress: bool | None = None,
                 generate: str = "all", n_val: int = 0) -> None:
        self.n_train = n_train
        self.n_test = n_test
        self.n_val = n_val
        self.lesion_mix = lesion_mix
        self.seed = seed
        self.spacing = spacing
        self.lesion_min_mm = lesion_min_mm
        self.lesion_max_mm = lesion_max_mm
        self.cache_dir = cache_dir
        self.progress = progress
        self.generate = generate
        # validated now: a bad --set value should fail before any run folder is made
        try:
            self._params = SynthParams.from_config(
                n_train=n_train, n_test=n_test, n_val=n_val, lesion_mix=lesion_mix, seed=seed, spacing=spacing,
                lesion_min_mm=lesion_min_mm, lesion_max_mm=lesion_max_mm)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"dataset 'synth': {exc}") from None
        if generate not in _GENERATE:
            raise ConfigError(f"dataset 'synth': generate={generate!r}: expected one of "
                              f"{list(_GENERATE)} ('all': a missing volume generates every "
                              f"missing one; 'each': only itself)")
        self._root: Path | None = None

    # -- the Dataset contract --------------------------------------------------------------
    def subjects(self, split: str) -> list[str]:
        try:
            return self._params.subjects(split)
        except ValueError as exc:
            raise DataError(f"dataset 'synth': {exc}") from None

    def load(self, subject: str) -> Volume:
        path = self._file(subject)
        self._ensure(subject, path)
        try:
            data = read_volume(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"synth cache file {path} is unreadable ({type(exc).__name__}: {exc}); "
                            f"delete it and it will be generated again") from None
        split = parse_subject(subject)[0]
        meta = dict(data["meta"])
        meta["image_path"] = str(path)
        return Volume(image=data["image"], brain_mask=data["brain"],
                      lesion_mask=data["lesion"] if split == "test" else None,
                      affine=data["affine"], subject_id=subject, meta=meta)

    def source_files(self, subject: str) -> list[Path]:
        path = self._file(subject)
        self._ensure(subject, path)
        return [path]

    def params(self) -> dict[str, Any]:
        # where the files live and whether a bar is shown do not change the data, nor does
        # how many validation volumes there are (each is a pure function of its index)
        return {k: v for k, v in super().params().items()
                if k not in ("cache_dir", "progress", "generate", "n_val")}

    def fingerprint(self, split: str) -> str:
        """Content-based: the volumes are a pure function of the content key and the subject
        list, so a regenerated cache (new mtimes, same bytes) keeps trained models valid."""
        h = hashlib.sha256(json.dumps({"name": self.name, "split": split,
                                       "content": self._params.content(),
                                       "subjects": self.subjects(split)}, sort_keys=True).encode())
        return h.hexdigest()[:16]

    # -- generation ------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The cache folder of this configuration's content key; its manifest is reconciled
        with the files there on first use (a killed generation may have left them apart)."""
        if self._root is None:
            root = cache_root(self._params, self.cache_dir)
            reconcile_manifest(self._params, root)
            self._root = root
        return self._root

    def prepare(self, progress: bool | None = None) -> list[str]:
        """Generate every missing volume of both splits; return the subjects generated now."""
        wanted = self.subjects("train") + self.subjects("test") + self.subjects("val")
        return ensure_volumes(self._params, self.root, wanted, progress=self._bar(progress))

    def _ensure(self, subject: str, path: Path) -> None:
        """Generate ``subject``'s file if it is missing: with every other missing volume
        ("all", in parallel) or alone ("each", in this process)."""
        if path.exists():
            return
        if self.generate == "each":
            ensure_volumes(self._params, self.root, [subject], progress=self._bar(None), workers=1)
        else:
            self.prepare()

    def _bar(self, progress: bool | None) -> bool:
        show = self.progress if progress is None else progress
        return sys.stderr.isatty() if show is None else bool(show)

    def _file(self, subject: str) -> Path:
        try:
            split, index = parse_subject(subject)
        except ValueError as exc:
            raise DataError(f"dataset 'synth': {exc}") from None
        if subject not in self.subjects(split):
            raise DataError(f"dataset 'synth': subject {subject!r} is not in split {split!r} of this "
                            f"configuration (n_{split}={getattr(self, 'n_' + split)})")
        return volume_path(self.root, subject)

