"""BraTS2020 training data, read as distributed (paper §3.1: T1 test volumes).

Layout (``data_root`` = the folder holding ``MICCAI_BraTS2020_TrainingData/``, that folder
itself, or the Kaggle copy's ``BraTS2020_TrainingData/`` above it)::

    MICCAI_BraTS2020_TrainingData/
        name_mapping.csv                      (optional; grade and TCGA ids → Volume.meta)
        BraTS20_Training_001/
            BraTS20_Training_001_{t1,t1ce,t2,flair,seg}.nii.gz   (some copies: .nii)
        ...
        BraTS20_Training_355/
            BraTS20_Training_355_{t1,t1ce,t2,flair}.nii
            W39_1998.09.19_Segm.nii            (the release's one misnamed segmentation;
                                                read as is, see ``KNOWN_SEG_NAMES``)

Volumes are 240x240x155 at 1 mm, skull-stripped (background exactly 0), stored LPS
(nibabel affine diag(-1, -1, 1)); the shared preprocessing reorients them. Labels:
0 background, 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing tumour; the anomaly is
label > 0 unless ``lesion_labels`` lists the labels to use. The brain mask is image > 0.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Literal, get_args

from adbench.data.dataset import ListedDataset, SubjectLimit
from adbench.data.nifti import load_nifti, nifti_suffix, strip_nifti_suffix
from adbench.data.validate import (check_not_empty, check_same_grid, labels_to_mask, listed_entry,
                                   not_a_file, os_error_reason, problem, require_data_root)
from adbench.data.volume import DataError, Volume

__all__ = ["BraTS2020", "MODALITIES", "BRATS_LABELS", "KNOWN_SEG_NAMES"]

Modality = Literal["t1", "t1ce", "t2", "flair"]
MODALITIES = get_args(Modality)
BRATS_LABELS = (0, 1, 2, 4)
#: Segmentations that the official BraTS2020 training release ships under another name than
#: ``<id>_seg.nii[.gz]``: subject id -> the released file name (a gzipped copy of it is found
#: too). They are read without configuration and recorded in ``Volume.meta["seg_source"]``
#: (hence in the run summary's ``data_sources``); a ``seg_overrides`` entry still wins, and a
#: ``<id>_seg`` file, if someone renamed it, comes first.
KNOWN_SEG_NAMES: dict[str, str] = {"BraTS20_Training_355": "W39_1998.09.19_Segm.nii"}
_SUBJECT_RE = re.compile(r"^BraTS20_Training_\d+$")
_EXPECTED = ("the folder that holds MICCAI_BraTS2020_TrainingData/ (or that folder itself, "
             "whose sub-folders are BraTS20_Training_NNN/)")


class BraTS2020(ListedDataset):
    """BraTS2020 training volumes with their tumour segmentations ("test" split only).

    data_root       see the module docstring.
    modality        "t1" (paper), "t1ce", "t2" or "flair".
    lesion_labels   labels counted as anomaly; None = label > 0 (whole tumour).
    label_values    the label set a segmentation must use; anything else is an error.
    seg_overrides   subject id → segmentation file name (relative to the subject folder, or
                    absolute) for subjects whose file is not ``<id>_seg.nii[.gz]``, e.g.
                    {"BraTS20_Training_042": "seg_final.nii.gz"}. Not needed for the release's
                    own misnamed file (subject 355, see ``KNOWN_SEG_NAMES``), which it
                    overrides when it names that subject.
    max_subjects    keep only the first N usable subjects (sorted by id); None = all.
    """

    name = "brats"

    #: Settings that only choose which subjects are listed; they never change what ``load``
    #: returns, so they stay out of ``params()`` and hence out of the per-subject slice-cache
    #: key (a smoke run reuses the full run's cache). ``fingerprint`` still hashes the list.
    _selection_keys: tuple[str, ...] = ("max_subjects",)

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in super().params().items() if k not in self._selection_keys}

    def __init__(self, data_root: str | None = None, modality: Modality = "t1",
                 lesion_labels: list[int] | None = None,
                 label_values: list[int] = list(BRATS_LABELS),
                 seg_overrides: dict[str, str] | None = None, max_subjects: SubjectLimit = None):
        self.data_root = data_root
        self.modality = modality
        self.lesion_labels = lesion_labels
        self.label_values = label_values
        self.seg_overrides = dict(seg_overrides or {})
        self.max_subjects = max_subjects
        self._scan: tuple[dict[str, tuple[Path, Path]], list[dict]] | None = None
        self._mapping: dict[str, dict[str, str]] | None = None

    # -- listing ---------------------------------------------------------------------------
    def training_dir(self) -> Path:
        """The folder whose sub-folders are ``BraTS20_Training_NNN/``."""
        root = require_data_root(self.data_root, dataset=self.name, expected=_EXPECTED)
        for cand in (root, root / "MICCAI_BraTS2020_TrainingData",
                     root / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"):
            if cand.is_dir() and any(_SUBJECT_RE.match(p.name) and p.is_dir()
                                     for p in cand.iterdir()):
                return cand
        hint = ""
        if any(root.glob("BraTS20_Validation_*")) or any(root.glob("*/BraTS20_Validation_*")):
            hint = (" (found BraTS20_Validation_* folders: the validation data has no "
                    "segmentations and cannot be evaluated)")
        raise DataError(f"dataset 'brats': no BraTS20_Training_*/ folders under {root}{hint}; "
                        f"pass {_EXPECTED}")

    def _listing(self) -> tuple[dict[str, tuple[Path, Path]], list[dict]]:
        if self._scan is not None:
            return self._scan
        if self.modality not in MODALITIES:
            raise DataError(f"dataset 'brats': modality {self.modality!r} is not one of "
                            f"{MODALITIES}; set modality=t1 (the paper's choice) or another")
        tdir = self.training_dir()
        found: dict[str, tuple[Path, Path]] = {}
        problems: list[dict] = []
        for sdir in sorted(p for p in tdir.iterdir() if p.is_dir() and _SUBJECT_RE.match(p.name)):
            sid = sdir.name
            try:
                entry, bad = self._subject_files(sid, sdir)
            except OSError as exc:  # a subject folder this user may not enter: that subject only
                entry, bad = None, problem(sid, sdir, os_error_reason(exc, sdir))
            if entry is None:
                problems.append(bad)
            else:
                found[sid] = entry
        unknown = sorted(set(self.seg_overrides) - set(found) - {p["subject"] for p in problems})
        for sid in unknown:
            problems.append(problem(sid, tdir / sid, f"seg_overrides names subject {sid!r}, which "
                                                     f"has no folder in {tdir}; fix the mapping"))
        self._scan = (found, problems)
        return self._scan

    def _subject_files(self, sid: str, sdir: Path) -> tuple[tuple[Path, Path] | None, dict]:
        """((image, segmentation), {}) of one subject folder, or (None, the problem)."""
        image = _find(sdir, f"{sid}_{self.modality}")
        if image is None:
            return None, problem(sid, sdir / f"{sid}_{self.modality}.nii.gz",
                                 f"no {self.modality} image {sid}_{self.modality}.nii[.gz] "
                                 f"in {sdir}; the subject is incomplete")
        odd = not_a_file(image)
        if odd is not None:
            return None, problem(sid, image, odd)
        seg, why = self._seg_path(sid, sdir)
        if seg is None:
            return None, problem(sid, sdir, why)
        odd = not_a_file(seg)
        if odd is not None:
            return None, problem(sid, seg, odd)
        return (image, seg), {}

    def _seg_path(self, sid: str, sdir: Path) -> tuple[Path | None, str]:
        if sid in self.seg_overrides:
            p = Path(self.seg_overrides[sid])
            p = p if p.is_absolute() else sdir / p
            odd = not_a_file(p)
            if odd is not None:
                return None, f"seg_overrides maps {sid!r} to {p}, which cannot be used: {odd}"
            if not p.is_file():
                return None, (f"seg_overrides maps {sid!r} to {p}, which does not exist; "
                              f"fix the mapping")
            return p, ""
        seg = _find(sdir, f"{sid}_seg")
        if seg is not None:
            return seg, ""
        if sid in KNOWN_SEG_NAMES:
            seg = _find(sdir, strip_nifti_suffix(KNOWN_SEG_NAMES[sid]))
            if seg is not None:
                return seg, ""
        known = {f"{sid}_{m}" for m in MODALITIES}
        others = sorted(p.name for p in sdir.iterdir()
                        if nifti_suffix(p.name) and strip_nifti_suffix(p.name) not in known
                        and p.is_file())
        if others:
            return None, (f"segmentation {sid}_seg.nii[.gz] not found in {sdir}; the folder has "
                          f"{', '.join(others)}, which looks like it (the BraTS2020 release "
                          f"names subject 355's segmentation W39_1998.09.19_Segm.nii). To use "
                          f"it, set seg_overrides: {{\"{sid}\": \"{others[0]}\"}} "
                          f"(command line: --set 'dataset.seg_overrides={{{sid}: {others[0]}}}')")
        return None, f"segmentation {sid}_seg.nii[.gz] not found in {sdir}"

    def source_files(self, subject: str) -> list[Path]:
        return list(self._paths(subject))

    def _check_split(self, split: str) -> None:
        if split != "test":
            raise DataError(f"dataset 'brats' has only the 'test' split (volumes with tumour "
                            f"masks), not {split!r}; train on a healthy dataset, e.g. "
                            f"--train-on openbhb")

    def _paths(self, subject: str) -> tuple[Path, Path]:
        return listed_entry(*self._listing(), subject, dataset="brats",
                            missing=f"no such subject folder in {self.training_dir()}")

    # -- loading ---------------------------------------------------------------------------
    def load(self, subject: str) -> Volume:
        """(240, 240, 155) LPS volume of ``subject``: the modality image, brain = image > 0,
        lesion = the label rule applied to the segmentation."""
        image_path, seg_path = self._paths(subject)
        image, affine = load_nifti(image_path, what="image")
        seg, seg_affine = load_nifti(seg_path, what="segmentation")
        check_same_grid(seg.shape, seg_affine, image.shape, affine, path=seg_path,
                        ref_path=image_path, what="segmentation")
        lesion = labels_to_mask(seg, path=seg_path, what="segmentation",
                                allowed=self.label_values, lesion_labels=self.lesion_labels)
        brain = image > 0
        check_not_empty(brain, path=image_path, what="brain (image > 0)",
                        hint="the image is blank; re-extract the file or remove the subject")
        check_not_empty(lesion, path=seg_path, what="tumour mask",
                        hint=f"no voxel has a lesion label ({self._rule()}); a test volume "
                             f"needs a lesion: fix the file or remove the subject")
        meta: dict[str, Any] = {
            "dataset": self.name, "modality": self.modality, "image_path": str(image_path),
            "lesion_path": str(seg_path), "lesion_rule": self._rule(),
            "brain_mask_source": "image > 0 (BraTS volumes are skull-stripped)",
        }
        source = self._seg_source(subject, seg_path)
        if source is not None:
            meta["seg_override"] = seg_path.name
            meta["seg_source"] = source
        meta.update(self._name_mapping().get(subject, {}))
        return Volume(image=image, brain_mask=brain, lesion_mask=lesion, affine=affine,
                      subject_id=subject, meta=meta)

    def _seg_source(self, subject: str, seg_path: Path) -> str | None:
        """Why ``seg_path`` is the segmentation when it is not ``<id>_seg.nii[.gz]`` (None
        when it is), e.g. "BraTS20_Training_355: W39_1998.09.19_Segm.nii (known BraTS2020
        release quirk)". Values name the subject: the run summary keeps the set of them."""
        if seg_path.name == f"{subject}_seg{nifti_suffix(seg_path.name)}":
            return None
        if subject in self.seg_overrides:
            return f"{subject}: {seg_path.name} (seg_overrides)"
        return f"{subject}: {seg_path.name} (known BraTS2020 release quirk)"

    def _rule(self) -> str:
        return "label > 0" if self.lesion_labels is None else f"label in {list(self.lesion_labels)}"

    def _name_mapping(self) -> dict[str, dict[str, str]]:
        """name_mapping.csv (if present): BraTS_2020_subject_ID → grade and origin ids."""
        if self._mapping is not None:
            return self._mapping
        path = self.training_dir() / "name_mapping.csv"
        self._mapping = {}
        if path.is_file():
            try:
                with open(path, newline="", encoding="utf-8-sig") as f:
                    rows = list(csv.DictReader(f))
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataError(f"{path}: cannot parse ({exc}); it is only metadata: fix or "
                                f"delete it") from exc
            except OSError as exc:
                raise DataError(f"{os_error_reason(exc, path)} (it is only metadata: deleting "
                                f"it is fine too)") from exc
            for row in rows:
                sid = (row.get("BraTS_2020_subject_ID") or "").strip()
                if not sid:
                    continue
                meta = {"grade": (row.get("Grade") or "").strip()}
                if meta["grade"]:  # HGG / LGG: the lesion type of per_volume.csv
                    meta["lesion_type"] = meta["grade"]
                tcga = (row.get("TCGA_TCIA_subject_ID") or "").strip()
                if tcga and tcga.upper() != "NA":
                    meta["tcga_tcia_id"] = tcga
                self._mapping[sid] = meta
        return self._mapping


def _find(folder: Path, stem: str) -> Path | None:
    """``folder/stem.nii.gz`` or ``folder/stem.nii`` (the gzipped copy wins if both exist).

    A file comes first; else whatever else has that name (a directory), which the caller
    reports as such rather than as a missing file."""
    cands = [folder / f"{stem}{suffix}" for suffix in (".nii.gz", ".nii")]
    return (next((p for p in cands if p.is_file()), None)
            or next((p for p in cands if p.exists()), None))
