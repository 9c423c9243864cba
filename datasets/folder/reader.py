"""A user's own NIfTI images, with optional lesion masks and brain masks.

Subjects are found either by glob patterns (relative to ``data_root``) or by a CSV manifest.

Patterns (defaults shown)::

    data_root/
        train/*.nii*                 healthy images          train_pattern
        test/*.nii*                  images with lesions     test_pattern
        test_masks/{name}.nii*       their lesion masks      mask_pattern
                                     (optional) brain masks  brain_pattern

``mask_pattern`` and ``brain_pattern`` are formatted per image with ``{name}`` (file name
without .nii/.nii.gz), ``{dir}`` (the image's folder relative to data_root) and
``{subject}``, then globbed: exactly one file must match. The subject id is ``{name}``, or
the group ``subject`` (else group 1) of ``subject_regex`` searched in the image's path
relative to data_root.

Manifest (``manifest`` = a CSV path, relative to data_root): columns ``subject``, ``image``,
optional ``mask``, ``brain`` and ``split`` ("train"/"test"; default: "test" when a mask is
given, else "train"); paths relative to the manifest's folder.

Validation ("val" split: healthy images not trained on, which set the thresholds at a
false-positive rate): ``val_subjects``, a list of subject ids among the healthy images, moves
them from "train" to "val"; in a manifest, ``split`` may also be "val". Without either the
runner holds out ``runner.val_holdout`` of the training subjects instead.

Without a brain mask the brain is image > ``brain_threshold`` (skull-stripped images).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from adbench.data.dataset import Dataset, SubjectLimit, first_subjects
from adbench.data.nifti import load_nifti, nifti_suffix, strip_nifti_suffix
from adbench.data.validate import (check_not_empty, check_same_grid, labels_to_mask, listed_entry,
                                   not_a_file, os_error_reason, problem, require_data_root,
                                   split_duplicates)
from adbench.data.volume import DataError, Volume

__all__ = ["NiftiFolder"]

_SPLITS = ("train", "test", "val")


class NiftiFolder(Dataset):
    """NIfTI images in a folder, "train" (no masks) and/or "test" (with lesion masks).

    data_root        the folder; patterns and the manifest are relative to it.
    train_pattern    glob of healthy images; None = no train split.
    test_pattern     glob of lesioned images; None = no test split.
    mask_pattern     lesion mask of a test image (see module docstring).
    brain_pattern    brain mask of any image; None = image > brain_threshold.
    manifest         CSV file replacing the patterns; None = use the patterns.
    subject_regex    regex giving the subject id from the image's relative path.
    lesion_labels    labels counted as lesion; None = label > 0.
    label_values     the label set masks must use; None = any non-negative integers.
    brain_threshold  brain = image > this when no brain mask is given.
    max_subjects     keep only the first N usable subjects of each split; None = all.
    val_subjects     ids of healthy images that form the "val" split instead of "train".
    """

    name = "folder"
    has_val_split = True  # empty unless val_subjects (or manifest split "val") names some

    #: Settings that only choose which subjects are listed; they never change what ``load``
    #: returns, so they stay out of ``params()`` and hence out of the per-subject slice-cache
    #: key (a smoke run reuses the full run's cache). ``fingerprint`` still hashes the list.
    _selection_keys: tuple[str, ...] = ("max_subjects", "val_subjects")

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in super().params().items() if k not in self._selection_keys}

    def __init__(self, data_root: str | None = None, train_pattern: str | None = "train/*.nii*",
                 test_pattern: str | None = "test/*.nii*",
                 mask_pattern: str | None = "test_masks/{name}.nii*",
                 brain_pattern: str | None = None, manifest: str | None = None,
                 subject_regex: str | None = None, lesion_labels: list[int] | None = None,
                 label_values: list[int] | None = None, brain_threshold: float = 0.0,
                 max_subjects: SubjectLimit = None, val_subjects: list[str] | None = None):
        self.data_root = data_root
        self.train_pattern = train_pattern
        self.test_pattern = test_pattern
        self.mask_pattern = mask_pattern
        self.brain_pattern = brain_pattern
        self.manifest = manifest
        self.subject_regex = subject_regex
        self.lesion_labels = lesion_labels
        self.label_values = label_values
        self.brain_threshold = brain_threshold
        self.max_subjects = max_subjects
        self.val_subjects = val_subjects
        self._scan: tuple[dict[str, dict[str, Any]], list[dict]] | None = None

    # -- listing ---------------------------------------------------------------------------
    def _root(self) -> Path:
        return require_data_root(self.data_root, dataset=self.name,
                                 expected="the folder of NIfTI images (see train_pattern, "
                                          "test_pattern or manifest)")

    def _listing(self) -> tuple[dict[str, dict[str, Any]], list[tuple[str | None, dict]]]:
        """(subject → row, [(split or None, problem)]); the first image of an id wins."""
        if self._scan is None:
            rows, bad = self._from_manifest() if self.manifest else self._from_patterns()
            problems: list[tuple[str | None, dict]] = [(None, p) for p in bad]
            found: dict[str, dict[str, Any]] = {}
            seen: dict[str, Path] = {}
            for r in rows:
                sid = r["subject"]
                if sid in seen:
                    _, [dup] = split_duplicates([(sid, seen[sid]), (sid, r["image"])])
                    problems.append((r["split"], dup))
                    continue
                seen[sid] = r["image"]
                if r.get("missing"):
                    problems.append((r["split"], problem(sid, r["missing_path"], r["missing"])))
                else:
                    found[sid] = r
            self._scan = (found, problems)
        return self._scan

    def _subject_id(self, rel: str, name: str) -> str:
        if not self.subject_regex:
            return name
        m = re.search(self.subject_regex, rel)
        if m is None:
            raise DataError(f"dataset 'folder': subject_regex {self.subject_regex!r} does not "
                            f"match image path {rel!r}; fix the regex")
        return m.groupdict().get("subject") or (m.group(1) if m.groups() else m.group(0))

    def _from_patterns(self) -> tuple[list[dict], list[dict]]:
        root = self._root()
        rows: list[dict] = []
        for split, pattern in (("train", self.train_pattern), ("test", self.test_pattern)):
            if not pattern:
                continue
            # a directory named like an image is listed (and reported), not silently passed over
            for img in sorted(p for p in root.glob(pattern) if nifti_suffix(p.name)):
                rel = img.relative_to(root).as_posix()
                name = strip_nifti_suffix(img.name)
                sid = self._subject_id(rel, name)
                fields = {"name": name, "dir": img.parent.relative_to(root).as_posix(),
                          "subject": sid}
                row: dict[str, Any] = {"subject": sid, "image": img, "split": split}
                odd = not_a_file(img)
                if odd is not None:
                    row.update(missing=odd, missing_path=img)
                    rows.append(row)
                    continue
                if split == "test":
                    if not self.mask_pattern:
                        raise DataError("dataset 'folder': test_pattern is set but mask_pattern "
                                        "is not; set mask_pattern (e.g. 'masks/{name}.nii*')")
                    row["mask"] = self._match(root, self.mask_pattern, fields, row, "lesion mask")
                if self.brain_pattern:
                    row["brain"] = self._match(root, self.brain_pattern, fields, row, "brain mask")
                rows.append(row)
        if not rows:
            raise DataError(f"dataset 'folder': no NIfTI images under {root} match train_pattern="
                            f"{self.train_pattern!r} or test_pattern={self.test_pattern!r}; set "
                            f"the patterns (globs relative to data_root) or a manifest")
        return rows, []

    def _match(self, root: Path, pattern: str, fields: dict, row: dict, what: str) -> Path | None:
        pat = pattern.format(**fields)
        hits = sorted(root.glob(pat))
        if len(hits) == 1 and not_a_file(hits[0]) is not None:
            row["missing"] = f"{not_a_file(hits[0])} (the {what}, pattern {pattern!r})"
            row["missing_path"] = hits[0]
            return None
        if len(hits) == 1:
            return hits[0]
        if not hits:
            row["missing"] = f"no {what} matches {pat!r} (pattern {pattern!r}) under {root}"
        else:
            row["missing"] = (f"{len(hits)} files match the {what} pattern {pat!r}: "
                              f"{', '.join(h.name for h in hits)}; make the pattern specific")
        row["missing_path"] = root / pat
        return None

    def _from_manifest(self) -> tuple[list[dict], list[dict]]:
        path = Path(self.manifest)
        path = path if path.is_absolute() else self._root() / path
        if not path.is_file():
            raise DataError(f"dataset 'folder': manifest {path} does not exist")
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                table = list(csv.DictReader(f))
        except OSError as exc:
            raise DataError(f"dataset 'folder': manifest {os_error_reason(exc, path)}") from exc
        if not table or not {"subject", "image"} <= set(table[0]):
            raise DataError(f"{path}: a manifest needs a header with columns subject,image "
                            f"(optional mask, brain, split); got {list(table[0]) if table else 'no rows'}")
        rows, problems = [], []
        for i, rec in enumerate(table, start=2):
            sid = (rec.get("subject") or "").strip()
            mask = (rec.get("mask") or "").strip()
            brain = (rec.get("brain") or "").strip()
            split = (rec.get("split") or "").strip() or ("test" if mask else "train")
            if not sid or split not in _SPLITS or (split == "test" and not mask):
                problems.append(problem(sid or f"line {i}", path,
                                        f"manifest line {i}: needs a subject, split in {_SPLITS} "
                                        f"and, for test, a mask; got {dict(rec)}"))
                continue
            row: dict[str, Any] = {"subject": sid, "image": path.parent / rec["image"].strip(),
                                   "split": split}
            if mask:
                row["mask"] = path.parent / mask
            if brain:
                row["brain"] = path.parent / brain
            for key in ("image", "mask", "brain"):
                if key in row and not Path(row[key]).is_file() and "missing" not in row:
                    odd = not_a_file(row[key])
                    row["missing"] = (f"{odd} (manifest line {i}, column {key})" if odd else
                                      f"manifest line {i}: {key} file {row[key]} does not exist")
                    row["missing_path"] = row[key]
            rows.append(row)
        return rows, problems

    def subjects(self, split: str) -> list[str]:
        self._check_split(split)
        found = self._listing()[0]
        val = set(self.val_subjects or ())
        bad = sorted(v for v in val if v not in found or found[v]["split"] == "test")
        if bad:
            raise DataError(f"dataset 'folder': val_subjects {bad} are not healthy images listed "
                            f"under {self._root()} (train_pattern={self.train_pattern!r} or "
                            f"manifest split train/val); give ids of healthy (train) images")
        ids = [s for s, r in found.items()
               if ("val" if r["split"] == "train" and s in val else r["split"]) == split]
        return first_subjects(ids, self.max_subjects, dataset=self.name)

    def problems(self, split: str) -> list[dict[str, str]]:
        self._check_split(split)
        return [p for s, p in self._listing()[1] if s == split or (s is None and split != "val")]

    def source_files(self, subject: str) -> list[Path]:
        r = self._row(subject)
        return [Path(r[k]) for k in ("image", "mask", "brain") if r.get(k)]

    def _check_split(self, split: str) -> None:
        if split not in _SPLITS:
            raise DataError(f"dataset 'folder': split must be one of {_SPLITS}, got {split!r}")

    def _row(self, subject: str) -> dict[str, Any]:
        found, problems = self._listing()
        return listed_entry(found, [p for _, p in problems], subject, dataset="folder",
                            missing=f"no such subject under {self._root()}")

    # -- loading ---------------------------------------------------------------------------
    def load(self, subject: str) -> Volume:
        r = self._row(subject)
        image, affine = load_nifti(r["image"], what="image")
        meta: dict[str, Any] = {"dataset": self.name, "image_path": str(r["image"]),
                                "split": r["split"]}
        lesion = None
        if r.get("mask"):
            labels, m_aff = load_nifti(r["mask"], what="lesion mask")
            check_same_grid(labels.shape, m_aff, image.shape, affine, path=r["mask"],
                            ref_path=r["image"], what="lesion mask")
            lesion = labels_to_mask(labels, path=r["mask"], allowed=self.label_values,
                                    lesion_labels=self.lesion_labels)
            if r["split"] == "test":
                check_not_empty(lesion, path=r["mask"], what="lesion mask",
                                hint="a test volume needs a lesion: fix the mask, or list the "
                                     "image as healthy (train)")
            meta["lesion_path"] = str(r["mask"])
        if r.get("brain"):
            data, b_aff = load_nifti(r["brain"], what="brain mask")
            check_same_grid(data.shape, b_aff, image.shape, affine, path=r["brain"],
                            ref_path=r["image"], what="brain mask")
            brain = labels_to_mask(data, path=r["brain"], what="brain mask", allowed=None)
            meta["brain_mask_source"] = "file"
            meta["brain_mask_path"] = str(r["brain"])
        else:
            brain = image > float(self.brain_threshold)
            meta["brain_mask_source"] = f"image > {self.brain_threshold} (skull-stripped images)"
        check_not_empty(brain, path=r.get("brain") or r["image"], what="brain mask",
                        hint="the image is blank or the brain mask selects nothing")
        return Volume(image=image, brain_mask=brain, lesion_mask=lesion, affine=affine,
                      subject_id=subject, meta=meta)
