"""OpenBHB healthy T1w scans (quasi-raw release), read as distributed (paper §3.1: 640
healthy training volumes).

Two forms are read (``form``: "auto" prefers the .npy arrays when both are present):

* quasi-raw arrays, ``sub-<id>_preproc-quasiraw_T1w.npy`` of shape (1, 1, 182, 218, 182),
  anywhere under ``data_root`` (IEEE DataPort: ``train_quasiraw/``; Hugging Face:
  ``train/derivatives/sub-<id>/ses-1/``). They are skull-stripped and affinely registered to
  the 1 mm MNI152 template but carry no affine: we assign the affine of the release's own
  template ``resource/quasiraw_space-MNI152_desc-brain_T1w.nii.gz`` when it is present, else
  the FSL MNI152 1 mm grid's (182x218x182)::

      [[-1, 0, 0,   90],
       [ 0, 1, 0, -126],
       [ 0, 0, 1,  -72],
       [ 0, 0, 0,    1]]

  (x runs right→left, as in FSL's template). ``npy_affine`` (a 4x4 list) overrides both.
* BIDS NIfTI, ``sub-<id>/[ses-<s>/]anat/sub-<id>[_ses-<s>]_T1w.nii[.gz]``, with their own
  affines; assumed skull-stripped like the quasi-raw arrays.

Metadata (site, age, sex, study, split) comes from ``participants.tsv`` and/or
``train.tsv``/``val.tsv`` at the top of ``data_root``. The brain mask is
image > ``brain_threshold`` (skull-stripped data). ``n_subjects`` scans (the paper: 640) are
drawn without replacement with ``seed`` from the usable ones, and listed sorted (split
"train"). Split "val" holds ``n_val`` further healthy scans, drawn with ``seed`` from those
*not* drawn for training (a second, independent draw, so the training draw is exactly as
without it); empty when every usable scan is a training scan.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import numpy as np

from adbench.data.dataset import Dataset, SubjectLimit
from adbench.data.nifti import load_nifti
from adbench.data.validate import (NIFTI_FILE, check_not_empty, listed_entry, not_a_file,
                                   os_error_reason, problem, require_data_root, split_duplicates)
from adbench.data.volume import DataError, Volume
from adbench.params import NonNegativeInt, check_value

__all__ = ["OpenBHB", "FSL_MNI152_1MM_AFFINE", "TEMPLATE_NAME"]

FSL_MNI152_1MM_AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
TEMPLATE_NAME = "quasiraw_space-MNI152_desc-brain_T1w.nii.gz"
_NPY_SUFFIX = "_preproc-quasiraw_T1w.npy"
_NPY_FILE = "a .npy array file"
_META_FILES = ("participants.tsv", "train.tsv", "val.tsv")
_META_KEYS = ("age", "sex", "site", "siteXacq", "study", "split", "diagnosis")
_EXPECTED = ("the OpenBHB folder (holding participants.tsv and the sub-*_preproc-quasiraw_T1w.npy "
             "arrays, e.g. train_quasiraw/ or train/derivatives/, or BIDS sub-*/ses-*/anat/"
             "*_T1w.nii.gz)")


class OpenBHB(Dataset):
    """OpenBHB healthy scans: "train" and a disjoint "val" split.

    data_root         see the module docstring.
    form              "auto", "npy" (quasi-raw arrays) or "nifti" (BIDS NIfTI).
    n_subjects        number of scans drawn (paper: 640); None = all usable scans.
    n_val             number of further scans drawn for "val" (thresholds); 0 = none.
    seed              seed of the draw.
    source_split      keep only participants whose metadata ``split`` column has this value
                      ("train", "internal_test", "external_test"); None = all.
    npy_affine        4x4 list assigned to .npy arrays; None = template or FSL MNI152 1 mm.
    brain_threshold   brain = image > this.
    """

    name = "openbhb"
    has_val_split = True

    #: Settings that only choose which subjects are listed; they never change what ``load``
    #: returns, so they stay out of ``params()`` and hence out of the per-subject slice-cache
    #: key (a smoke run reuses the full run's cache). ``fingerprint`` still hashes the list.
    _selection_keys: tuple[str, ...] = ("n_subjects", "seed", "source_split", "n_val")

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in super().params().items() if k not in self._selection_keys}

    def __init__(self, data_root: str | None = None, form: Literal["auto", "npy", "nifti"] = "auto",
                 n_subjects: SubjectLimit = 640, seed: int = 0, source_split: str | None = None,
                 npy_affine: list[list[float]] | None = None, brain_threshold: float = 0.0,
                 n_val: NonNegativeInt = 20):
        self.data_root = data_root
        self.form = form
        self.n_subjects = n_subjects
        self.seed = seed
        self.source_split = source_split
        self.npy_affine = npy_affine
        self.brain_threshold = brain_threshold
        self.n_val = n_val
        self._val: dict[str, Path] = {}
        self._scan: tuple[dict[str, Path], list[dict]] | None = None
        self._meta: dict[str, dict[str, Any]] | None = None

    # -- listing ---------------------------------------------------------------------------
    def _root(self) -> Path:
        return require_data_root(self.data_root, dataset=self.name, expected=_EXPECTED)

    def _files(self, root: Path) -> tuple[str, list[Path]]:
        if self.form not in ("auto", "npy", "nifti"):
            raise DataError(f"dataset 'openbhb': form {self.form!r} is not one of "
                            f"'auto', 'npy', 'nifti'")
        npy = sorted(root.rglob(f"sub-*{_NPY_SUFFIX}")) if self.form != "nifti" else []
        if npy:
            return "npy", npy
        nii = [] if self.form == "npy" else sorted(
            p for p in root.rglob("sub-*_T1w.nii*")
            if p.parent.name == "anat" and p.name.endswith(("_T1w.nii", "_T1w.nii.gz")))
        if nii:
            return "nifti", nii
        want = {"npy": f"sub-*{_NPY_SUFFIX}", "nifti": "sub-*/ses-*/anat/sub-*_T1w.nii.gz"}
        what = " or ".join(want[f] for f in (("npy", "nifti") if self.form == "auto" else (self.form,)))
        raise DataError(f"dataset 'openbhb': no {what} files under {root}; pass {_EXPECTED}")

    def _listing(self) -> tuple[dict[str, Path], list[dict]]:
        if self._scan is not None:
            return self._scan
        root = self._root()
        form, found = self._files(root)
        self.form_ = form
        expected = _NPY_FILE if form == "npy" else NIFTI_FILE
        # a directory named like a scan is that subject's problem, not a crash at hashing
        odd = {p: why for p in found if (why := not_a_file(p, expected)) is not None}
        kept, problems = split_duplicates((p.name.split("_")[0], p) for p in found if p not in odd)
        problems = [problem(p.name.split("_")[0], p, why) for p, why in odd.items()] + problems
        meta = self._metadata()
        if self.source_split is not None:
            kept = {s: p for s, p in kept.items()
                    if str(meta.get(_bare(s), {}).get("split", "")) == self.source_split}
        ids = all_ids = sorted(kept)
        # checked here too: a dataset built directly (not by `adbench run`) must not draw -1
        check_value(SubjectLimit, self.n_subjects, f"dataset {self.name!r}", "n_subjects")
        if self.n_subjects is not None and len(ids) > int(self.n_subjects):
            rng = np.random.default_rng(int(self.seed))
            pick = np.sort(rng.choice(len(ids), size=int(self.n_subjects), replace=False))
            ids = [ids[i] for i in pick]
        rest = sorted(set(all_ids) - set(ids))
        n_val = min(int(self.n_val or 0), len(rest))
        if n_val < 0:
            raise DataError(f"dataset 'openbhb': n_val={self.n_val!r}; expected an integer >= 0")
        vpick = np.sort(np.random.default_rng([int(self.seed), 1]).choice(len(rest), size=n_val,
                                                                          replace=False))
        self._val = {rest[i]: kept[rest[i]] for i in vpick}
        self._scan = ({s: kept[s] for s in ids}, problems)
        return self._scan

    def _metadata(self) -> dict[str, dict[str, Any]]:
        """participant id (without "sub-") → selected columns of the .tsv files."""
        if self._meta is not None:
            return self._meta
        table: dict[str, dict[str, Any]] = {}
        for name in _META_FILES:
            path = self._root() / name
            if not path.is_file():
                continue
            try:
                with open(path, newline="", encoding="utf-8-sig") as f:
                    rows = list(csv.DictReader(f, delimiter="\t"))
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataError(f"{path}: cannot parse as a tab-separated table ({exc}); fix "
                                f"or delete it (it only provides metadata)") from exc
            except OSError as exc:
                raise DataError(f"{os_error_reason(exc, path)} (it only provides metadata: "
                                f"deleting it is fine too)") from exc
            for row in rows:
                pid = _bare(str(row.get("participant_id", "")).strip())
                if not pid:
                    continue
                entry = table.setdefault(pid, {})
                for k in _META_KEYS:
                    v = row.get(k)
                    if v not in (None, "", "n/a", "NA", "nan"):
                        entry.setdefault(k, _number(v.strip()))
        self._meta = table
        return table

    def subjects(self, split: str) -> list[str]:
        self._check_split(split)
        found = self._listing()[0]
        return list(self._val) if split == "val" else list(found)

    def problems(self, split: str) -> list[dict[str, str]]:
        self._check_split(split)
        return list(self._listing()[1]) if split == "train" else []

    def source_files(self, subject: str) -> list[Path]:
        files = [self._path(subject)]
        if self.form_ == "npy" and self.npy_affine is None:
            tpl = self._root() / "resource" / TEMPLATE_NAME
            if tpl.is_file():
                files.append(tpl)
        return files

    def _check_split(self, split: str) -> None:
        if split not in ("train", "val"):
            raise DataError(f"dataset 'openbhb' has only the 'train' and 'val' splits (healthy "
                            f"scans), not {split!r}; test on brats, atlas or folder")

    def _path(self, subject: str) -> Path:
        found, problems = self._listing()
        if subject in self._val:
            return self._val[subject]
        return listed_entry(found, problems, subject, dataset="openbhb",
                            missing=f"not among the selected scans under {self._root()}")

    # -- loading ---------------------------------------------------------------------------
    def npy_grid_affine(self, shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
        """(affine assigned to a .npy array of ``shape``, where it came from)."""
        if self.npy_affine is not None:
            aff = np.asarray(self.npy_affine, dtype=np.float64)
            if aff.shape != (4, 4):
                raise DataError(f"dataset 'openbhb': npy_affine must be a 4x4 list, got shape "
                                f"{aff.shape}")
            return aff, "config npy_affine"
        tpl = self._root() / "resource" / TEMPLATE_NAME
        if tpl.is_file():
            import nibabel as nib
            try:
                img = nib.load(str(tpl))
            except Exception as exc:
                raise DataError(f"{tpl}: cannot read the template header ({exc}); fix or "
                                f"delete it to use the FSL MNI152 1 mm affine") from exc
            if tuple(img.shape[:3]) != tuple(shape):
                raise DataError(f"{tpl}: template grid {tuple(img.shape[:3])} differs from the "
                                f"arrays' shape {tuple(shape)}; the arrays do not come from this "
                                f"release: set npy_affine or remove the template")
            return np.asarray(img.affine, dtype=np.float64), str(tpl)
        return FSL_MNI152_1MM_AFFINE.copy(), "FSL MNI152 1 mm grid (182x218x182) default"

    def load(self, subject: str) -> Volume:
        """Native-grid healthy volume: (182, 218, 182) for the quasi-raw arrays."""
        path = self._path(subject)
        if path.name.endswith(".npy"):
            image = _load_npy(path)
            affine, affine_source = self.npy_grid_affine(image.shape)
        else:
            image, affine = load_nifti(path, what="image")
            affine_source = "file header"
        brain = image > float(self.brain_threshold)
        check_not_empty(brain, path=path, what=f"brain (image > {self.brain_threshold})",
                        hint="the scan is blank; remove the subject")
        meta: dict[str, Any] = {
            "dataset": self.name, "image_path": str(path), "form": self.form_,
            "affine_source": affine_source,
            "brain_mask_source": f"image > {self.brain_threshold} (quasi-raw is skull-stripped)",
        }
        meta.update(self._metadata().get(_bare(subject), {}))
        return Volume(image=image, brain_mask=brain, lesion_mask=None, affine=affine,
                      subject_id=subject, meta=meta)


def _load_npy(path: Path) -> np.ndarray:
    """(X, Y, Z) float32 from a quasi-raw array stored (1, 1, X, Y, Z)."""
    odd = not_a_file(path, _NPY_FILE)
    if odd is not None:
        raise DataError(odd)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # truncated: ValueError (mmap length); not .npy: ValueError/OSError
        if isinstance(exc, OSError) and exc.errno is not None:  # the system refused: say so
            raise DataError(os_error_reason(exc, path)) from exc
        raise DataError(f"{path}: cannot read the array ({type(exc).__name__}: {exc}); the file "
                        f"is truncated or not a .npy array. Re-download it or remove the "
                        f"subject") from exc
    shape = arr.shape
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise DataError(f"{path}: expected a (1, 1, X, Y, Z) quasi-raw array (182x218x182 in the "
                        f"release), got shape {shape}")
    data = np.array(arr, dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        raise DataError(f"{path}: {int(bad.sum())} non-finite voxel(s) (NaN/inf); fix or remove "
                        f"the file")
    return data


def _bare(pid: str) -> str:
    pid = pid[4:] if pid.startswith("sub-") else pid
    return pid[:-2] if pid.endswith(".0") and pid[:-2].isdigit() else pid


def _number(v: str) -> Any:
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v else f
