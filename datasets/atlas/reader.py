"""ATLAS v2.0 (stroke lesions, T1w in MNI152NLin2009aSym space), read as distributed.

Layout (``data_root`` = the folder holding ``ATLAS_2/``, ``ATLAS_2/`` itself, or its
``Training/`` folder)::

    ATLAS_2/Training/R001/sub-r001s001/ses-1/anat/
        sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz
        sub-r001s001_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz

Volumes are 197x233x189 at 1 mm in MNI152NLin2009aSym, not skull-stripped (the paper
skull-stripped them with FreeSurfer). ``ATLAS_2/Testing/`` has no released lesion masks and
is not used. Brain mask, in order of preference:

* ``brain_mask`` = a file pattern: a user-provided mask per subject (e.g. FreeSurfer's,
  converted to NIfTI on the image grid), checked like the lesion mask;
* ``brain_mask`` = "mni152" (default): the MNI152 2009a brain mask nilearn ships
  (``load_mni152_brain_mask(resolution=1)``, template > 0.2), which lies on the same
  197x233x189 grid; on any other grid it is resampled (nearest neighbour, through the two
  affines). The choice is recorded in ``Volume.meta["brain_mask_source"]``.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

from adbench.data.dataset import ListedDataset, SubjectLimit
from adbench.data.nifti import load_nifti
from adbench.data.validate import (AFFINE_ATOL, check_not_empty, check_same_grid, labels_to_mask,
                                   listed_entry, not_a_file, problem, require_data_root,
                                   split_duplicates)
from adbench.data.volume import DataError, Volume

__all__ = ["ATLAS2", "mni152_brain_mask"]

_T1_SUFFIX = "_space-MNI152NLin2009aSym_T1w.nii.gz"
_MASK_SUFFIX = "_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz"
_PREFIX_RE = re.compile(r"^(sub-[^_]+)_(ses-[^_]+)$")
_EXPECTED = ("the folder that holds ATLAS_2/ (or ATLAS_2/ itself, or ATLAS_2/Training/ whose "
             "sub-folders are R001/ ... R052/)")
MNI_SOURCE = ("nilearn MNI152 2009a brain mask (nilearn.datasets.load_mni152_brain_mask("
              "resolution=1), template > 0.2)")


def mni152_template_path() -> Path:
    """The MNI152 2009a (symmetric) T1 template file that nilearn ships (1 mm, 197x233x189)."""
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'atlas': nilearn is not installed; it provides the default MNI152 "
                        "brain mask (pip install nilearn), or set brain_mask to a file pattern")
    return (Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
            / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")


@functools.lru_cache(maxsize=1)
def mni152_brain_mask() -> tuple[np.ndarray, np.ndarray]:
    """(197, 233, 189) bool brain mask of nilearn's MNI152 2009a template and its affine.

    Exactly ``nilearn.datasets.load_mni152_brain_mask(resolution=1)`` (template rescaled to
    [0, 1], > 0.2), read straight from the packaged file: importing nilearn.datasets costs
    seconds (it pulls in pandas and scikit-learn) and this is all it would do.
    """
    path = mni152_template_path()
    data, affine = load_nifti(path, what="MNI152 template")
    data = data.astype(np.float32)
    return data / data.max() > 0.2, affine


def resample_mask(mask: np.ndarray, affine: np.ndarray, shape: tuple[int, ...],
                  target_affine: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resampling of a bool mask onto another grid via world (mm)
    coordinates: target voxel v takes mask[round(A_mask⁻¹ · A_target · v)]."""
    from scipy import ndimage

    vox = np.linalg.inv(affine) @ np.asarray(target_affine, dtype=np.float64)
    out = ndimage.affine_transform(mask.astype(np.uint8), vox[:3, :3], offset=vox[:3, 3],
                                   output_shape=tuple(shape), order=0, mode="constant", cval=0)
    return out > 0


class ATLAS2(ListedDataset):
    """ATLAS v2.0 training subjects with their lesion masks ("test" split only).

    data_root      see the module docstring.
    brain_mask     "mni152" (default) or a file pattern for a per-subject brain mask; the
                   pattern may use {anat} (the subject's anat folder), {prefix}
                   ("sub-r001s001_ses-1") and {subject}; relative patterns are taken inside
                   the anat folder, e.g. "{prefix}_desc-brain_mask.nii.gz".
    lesion_labels  labels counted as lesion; None = label > 0.
    label_values   the label set a lesion mask must use ({0, 1}).
    max_subjects   keep only the first N usable subjects (sorted); None = all.
    """

    name = "atlas"

    #: Settings that only choose which subjects are listed; they never change what ``load``
    #: returns, so they stay out of ``params()`` and hence out of the per-subject slice-cache
    #: key (a smoke run reuses the full run's cache). ``fingerprint`` still hashes the list.
    _selection_keys: tuple[str, ...] = ("max_subjects",)

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in super().params().items() if k not in self._selection_keys}

    def __init__(self, data_root: str | None = None, brain_mask: str = "mni152",
                 lesion_labels: list[int] | None = None, label_values: list[int] = [0, 1],
                 max_subjects: SubjectLimit = None):
        self.data_root = data_root
        self.brain_mask = brain_mask
        self.lesion_labels = lesion_labels
        self.label_values = label_values
        self.max_subjects = max_subjects
        self._scan: tuple[dict[str, tuple[Path, Path]], list[dict]] | None = None

    def training_dir(self) -> Path:
        root = require_data_root(self.data_root, dataset=self.name, expected=_EXPECTED)
        for cand in (root / "ATLAS_2" / "Training", root / "Training", root):
            if cand.is_dir() and any(cand.glob(f"*/sub-*/ses-*/anat/*{_T1_SUFFIX}")):
                return cand
        raise DataError(f"dataset 'atlas': no R*/sub-*/ses-*/anat/*{_T1_SUFFIX} files under "
                        f"{root}; pass {_EXPECTED}")

    def _listing(self) -> tuple[dict[str, tuple[Path, Path]], list[dict]]:
        if self._scan is not None:
            return self._scan
        tdir = self.training_dir()
        entries, odd = [], []
        for t1 in sorted(tdir.glob(f"*/sub-*/ses-*/anat/*{_T1_SUFFIX}")):
            prefix = t1.name[: -len(_T1_SUFFIX)]
            m = _PREFIX_RE.match(prefix)
            sid = prefix if m is None else (m[1] if m[2] == "ses-1" else prefix)
            why = not_a_file(t1)
            if why is not None:
                odd.append(problem(sid, t1, why))
            else:
                entries.append((sid, t1))
        kept, problems = split_duplicates(entries)
        problems = odd + problems
        found: dict[str, tuple[Path, Path]] = {}
        for sid, t1 in kept.items():
            mask = t1.with_name(t1.name[: -len(_T1_SUFFIX)] + _MASK_SUFFIX)
            odd_files = [(f, why) for f in (mask, self._brain_path(sid, t1))
                         if f is not None and (why := not_a_file(f)) is not None]
            if odd_files:  # e.g. a directory named like the mask
                problems.append(problem(sid, *odd_files[0]))
                continue
            if not mask.is_file():
                problems.append(problem(sid, mask, f"lesion mask {mask.name} not found beside "
                                                   f"{t1.name}; the subject cannot be evaluated"))
                continue
            found[sid] = (t1, mask)
        self._scan = (found, problems)
        return self._scan

    def source_files(self, subject: str) -> list[Path]:
        t1, mask = self._paths(subject)
        brain = self._brain_path(subject, t1)
        return [t1, mask] + ([brain] if brain is not None else [])

    def _check_split(self, split: str) -> None:
        if split != "test":
            raise DataError(f"dataset 'atlas' has only the 'test' split (volumes with lesion "
                            f"masks), not {split!r}; train on a healthy dataset, e.g. "
                            f"--train-on openbhb")

    def _paths(self, subject: str) -> tuple[Path, Path]:
        return listed_entry(*self._listing(), subject, dataset="atlas",
                            missing=f"not found under {self.training_dir()}")

    def _brain_path(self, subject: str, t1: Path) -> Path | None:
        if self.brain_mask == "mni152":
            return None
        prefix = t1.name[: -len(_T1_SUFFIX)]
        p = Path(str(self.brain_mask).format(anat=t1.parent, prefix=prefix, subject=subject))
        return p if p.is_absolute() else t1.parent / p

    def load(self, subject: str) -> Volume:
        """Native-grid volume (197x233x189 in the release): T1w, lesion mask, brain mask."""
        t1, mask_path = self._paths(subject)
        image, affine = load_nifti(t1, what="image")
        labels, m_aff = load_nifti(mask_path, what="lesion mask")
        check_same_grid(labels.shape, m_aff, image.shape, affine, path=mask_path, ref_path=t1,
                        what="lesion mask")
        lesion = labels_to_mask(labels, path=mask_path, allowed=self.label_values,
                                lesion_labels=self.lesion_labels)
        check_not_empty(lesion, path=mask_path, what="lesion mask",
                        hint="a test volume needs a lesion: fix the file or remove the subject")
        meta: dict[str, Any] = {"dataset": self.name, "image_path": str(t1),
                                "lesion_path": str(mask_path),
                                "cohort": t1.parents[3].name if len(t1.parents) > 3 else ""}
        brain_path = self._brain_path(subject, t1)
        if brain_path is None:
            mni, mni_aff = mni152_brain_mask()
            same = (mni.shape == image.shape
                    and np.max(np.abs(mni_aff - affine)) <= AFFINE_ATOL)
            brain = mni if same else resample_mask(mni, mni_aff, image.shape, affine)
            meta["brain_mask_source"] = MNI_SOURCE + (
                "" if same else "; resampled (nearest neighbour) to the image grid")
            check_not_empty(brain, path=t1, what="MNI152 brain mask on this image's grid",
                            hint="the image does not overlap MNI space; pass a per-subject "
                                 "brain mask with brain_mask=PATTERN")
        else:
            data, b_aff = load_nifti(brain_path, what="brain mask")
            check_same_grid(data.shape, b_aff, image.shape, affine, path=brain_path,
                            ref_path=t1, what="brain mask")
            brain = labels_to_mask(data, path=brain_path, what="brain mask", allowed=None)
            check_not_empty(brain, path=brain_path, what="brain mask",
                            hint="the brain mask selects nothing: fix the file")
            meta["brain_mask_source"] = "file"
            meta["brain_mask_path"] = str(brain_path)
        return Volume(image=image, brain_mask=brain, lesion_mask=lesion, affine=affine,
                      subject_id=subject, meta=meta)
