"""Checks shared by the dataset readers and by ``adbench prepare``.

Each check raises :class:`adbench.DataError` with the file, what was found, what was
expected and what to do, so a bad subject is reported with its path and reason and
skipped (or made fatal by ``--strict``) instead of crashing a run halfway.
"""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from adbench.data.volume import DataError, Volume

__all__ = ["AFFINE_ATOL", "problem", "require_data_root", "check_same_grid", "labels_to_mask",
           "check_not_empty", "split_duplicates", "validate_volume", "not_a_file",
           "os_error_reason", "NIFTI_FILE"]

#: Largest difference (mm, per affine entry) tolerated between an image's affine and the
#: affine of its masks. Real releases differ by float32 rounding of sform vs qform (1e-5);
#: a real misregistration is at least a voxel.
AFFINE_ATOL = 1e-3


def problem(subject: str, path: str | Path, reason: str) -> dict[str, str]:
    """A listing problem as ``Dataset.problems`` returns it (api: subject, path, reason)."""
    return {"subject": str(subject), "path": str(path), "reason": reason}


#: What a reader expects where it finds a directory instead of an image or mask.
NIFTI_FILE = "a NIfTI file"


def not_a_file(path: str | Path, expected: str = NIFTI_FILE) -> str | None:
    """Why ``path`` cannot be read as a file, or None when it is one (or does not exist:
    the caller says what is missing). A directory named like an image is the usual case:
    "<path> is a directory; expected a NIfTI file"."""
    p = Path(path)
    try:
        if p.is_dir():
            return f"{p} is a directory; expected {expected}"
        if p.exists() and not p.is_file():
            return f"{p} is not a regular file (a device, socket or pipe); expected {expected}"
    except OSError as exc:  # e.g. a parent folder this user may not enter
        return os_error_reason(exc, p)
    return None


#: Advice per errno for files a subject is read from.
_OS_ADVICE = {
    errno.EACCES: "this user may not read it: fix its permissions (e.g. chmod a+r, and a+x on "
                  "its folders) or its owner, or remove the subject",
    errno.EPERM: "this user may not read it: fix its permissions or owner, or remove the subject",
    errno.EISDIR: "a directory is where a file was expected: put the file there or remove the "
                  "subject",
    errno.EIO: "the disk or network share reported an I/O error: check the storage, copy the "
               "file again, or remove the subject",
}


def os_error_reason(exc: OSError, path: str | Path | None = None) -> str:
    """A subject's skip reason for an OSError met while reading its files: the file, the
    system's message and what to do, e.g. "/d/s1_t1.nii.gz: cannot read (Permission denied,
    errno 13); this user may not read it: ..."."""
    where = exc.filename if exc.filename is not None else (path if path is not None else "")
    what = exc.strerror or str(exc) or type(exc).__name__
    code = f", errno {exc.errno}" if exc.errno is not None else ""
    advice = _OS_ADVICE.get(exc.errno, "check the file and the storage, or remove the subject")
    return f"{where}: cannot read ({what}{code}); {advice}"


def listed_entry(found: dict[str, Any], problems: list[dict], subject: str, *, dataset: str,
                 missing: str) -> Any:
    """The listing entry of ``subject``, or a DataError giving the reason it was left out
    (from ``problems``) or ``missing`` (e.g. "not found under /data/x")."""
    if subject in found:
        return found[subject]
    why = next((p["reason"] for p in problems if p["subject"] == subject), None)
    raise DataError(f"dataset {dataset!r}: subject {subject!r} cannot be loaded: {why or missing}")


def require_data_root(data_root: str | Path | None, *, dataset: str, expected: str) -> Path:
    """``data_root`` as an existing folder, or a DataError saying which folder to pass.

    expected  a sentence describing the folder the dataset wants, e.g. "the folder that
              holds MICCAI_BraTS2020_TrainingData/ (or that folder itself)".
    """
    if data_root in (None, ""):
        raise DataError(f"dataset {dataset!r}: no data root given; pass --data-root PATH "
                        f"(or --set dataset.data_root=PATH) with {expected}")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset {dataset!r}: data root {root} is not an existing folder; "
                        f"pass {expected}")
    return root


def check_same_grid(shape: Sequence[int], affine: np.ndarray, ref_shape: Sequence[int],
                    ref_affine: np.ndarray, *, path: str | Path, ref_path: str | Path,
                    what: str = "mask", atol: float = AFFINE_ATOL) -> None:
    """A mask must lie on its image's voxel grid: same shape, affines equal within ``atol``
    mm per entry. Masks are never silently resampled: a mismatch usually means the wrong
    file was paired."""
    if tuple(shape) != tuple(ref_shape):
        raise DataError(f"{path}: {what} shape {tuple(shape)} != image shape {tuple(ref_shape)} "
                        f"of {ref_path}; the two files do not belong together (or the {what} "
                        f"was resampled): pair the right files")
    diff = float(np.max(np.abs(np.asarray(affine) - np.asarray(ref_affine))))
    if diff > atol:
        raise DataError(f"{path}: {what} affine differs from the image affine of {ref_path} by "
                        f"{diff:.4g} mm (tolerance {atol} mm):\n{np.asarray(affine)}\nvs\n"
                        f"{np.asarray(ref_affine)}\nthe {what} is not on the image's grid")


def labels_to_mask(labels: np.ndarray, *, path: str | Path, what: str = "lesion mask",
                   allowed: Iterable[int] | None = (0, 1),
                   lesion_labels: Iterable[int] | None = None) -> np.ndarray:
    """Turn a label volume into a boolean lesion mask, checking its values.

    labels         (X, Y, Z) integer-valued array (any dtype).
    allowed        the label set the file must use (BraTS: {0, 1, 2, 4}; binary masks:
                   {0, 1}); None accepts any non-negative integer.
    lesion_labels  labels counted as lesion; None = every label > 0 (the paper's rule).
    Returns a (X, Y, Z) bool array.
    """
    arr = np.asarray(labels)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
        frac = arr[arr != np.round(arr)]
        raise DataError(f"{path}: {what} has non-integer values (e.g. {float(frac.flat[0]):g}); "
                        f"expected integer labels {_fmt(allowed)}; was it resampled with "
                        f"linear interpolation? Use nearest-neighbour")
    values = np.unique(arr).astype(np.int64)
    if allowed is not None:
        extra = sorted(set(values.tolist()) - {int(v) for v in allowed})
        if extra:
            raise DataError(f"{path}: {what} has label(s) {extra} outside the expected set "
                            f"{_fmt(allowed)} (found {values.tolist()[:20]}); set the label "
                            f"values in the dataset config if this file is right")
    elif values.size and values[0] < 0:
        raise DataError(f"{path}: {what} has negative labels {values[values < 0].tolist()}")
    if lesion_labels is None:
        return arr > 0
    return np.isin(arr, np.asarray(list(lesion_labels)))


def check_not_empty(mask: np.ndarray, *, path: str | Path, what: str, hint: str) -> None:
    """A mask with no voxel set is unusable: a brain mask must hold the brain, and a test
    volume's lesion mask must hold a lesion (else AUROC and Dice are undefined)."""
    if not np.any(mask):
        raise DataError(f"{path}: {what} is empty (no voxel set); {hint}")


def split_duplicates(entries: Iterable[tuple[str, Path]]) -> tuple[dict[str, Path], list[dict]]:
    """Keep the first path of every subject id; report each later one as a problem.

    entries  (subject id, path) in a deterministic (sorted) order.
    Returns (id → kept path, in order, problems for the skipped copies).
    """
    kept: dict[str, Path] = {}
    problems: list[dict] = []
    for sid, path in entries:
        if sid in kept:
            problems.append(problem(sid, path, f"duplicate subject id {sid!r}: also found at "
                                               f"{kept[sid]}; this copy is skipped — remove one "
                                               f"of the two or give them distinct ids"))
        else:
            kept[sid] = path
    return kept, problems


def validate_volume(vol: Volume, *, require_lesion: bool = False) -> None:
    """Checks every loaded subject must pass, whatever dataset it came from.

    image finite; brain mask not empty; when ``require_lesion`` (test split) a non-empty
    lesion mask. Shapes are already checked by :class:`Volume`.
    """
    where = vol.meta.get("image_path") or f"subject {vol.subject_id!r}"
    if not np.all(np.isfinite(vol.image)):
        raise DataError(f"{where}: image has non-finite voxels")
    check_not_empty(vol.brain_mask, path=vol.meta.get("brain_mask_path", where), what="brain mask",
                    hint="the image is blank or the brain-mask rule/pattern selects nothing")
    if require_lesion:
        if vol.lesion_mask is None:
            raise DataError(f"{where}: test subject {vol.subject_id!r} has no lesion mask")
        check_not_empty(vol.lesion_mask, path=vol.meta.get("lesion_path", where),
                        what="lesion mask", hint="a test volume needs a lesion to localise; "
                        "remove the subject or fix its mask")


def _fmt(values: Iterable[int] | None) -> str:
    return "any" if values is None else "{" + ", ".join(str(int(v)) for v in values) + "}"
