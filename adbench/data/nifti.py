"""Reading NIfTI volumes defensively.

Every dataset reader goes through :func:`load_nifti`, so the failure modes of real
downloads (truncated ``.nii.gz``, a 4-D series where a volume was expected, NaN voxels,
a broken affine) all surface as one :class:`adbench.DataError` that names the file, says
what was found and what to do — never as a zlib/EOF traceback halfway through a run.

Voxel data is returned in the file's own grid and orientation, with its affine;
reorientation to RAS is the job of :mod:`adbench.data.preprocess`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from adbench.data.validate import NIFTI_FILE, not_a_file, os_error_reason
from adbench.data.volume import DataError

__all__ = ["load_nifti", "nifti_suffix", "strip_nifti_suffix"]

_SUFFIXES = (".nii.gz", ".nii")


def nifti_suffix(name: str) -> str | None:
    """".nii.gz" or ".nii" when ``name`` ends with one of them, else None."""
    for s in _SUFFIXES:
        if name.endswith(s):
            return s
    return None


def strip_nifti_suffix(name: str) -> str:
    """File name without its ``.nii``/``.nii.gz`` ending (``"a_t1.nii.gz"`` → ``"a_t1"``)."""
    s = nifti_suffix(name)
    return name[: -len(s)] if s else name


def load_nifti(path: str | Path, *, what: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Read one 3-D NIfTI volume.

    path   a ``.nii`` or ``.nii.gz`` file.
    what   "image" (returned as float32, must be finite) or a mask/label description such
           as "lesion mask" (returned in the stored dtype after scaling, must be finite);
           it only changes the wording of errors and the returned dtype.

    Returns ``(data (X, Y, Z), affine (4, 4) float64)``. A 4-D file whose fourth axis has
    length 1 (a common export artefact) is squeezed to 3-D; a genuine series raises.

    Raises :class:`DataError` naming ``path`` when the file is missing, a directory,
    unreadable (permissions, I/O error) or truncated, not 3-D, has non-finite voxels or a
    singular/non-finite affine.
    """
    import nibabel as nib

    path = Path(path)
    odd = not_a_file(path, NIFTI_FILE)
    if odd is not None:
        raise DataError(odd)
    if not path.is_file():
        raise DataError(f"{path}: {what} file does not exist; check the dataset folder "
                        f"(or the pattern/mapping that names this file)")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises EOFError, zlib.error, ImageFileError, OSError ...
        if isinstance(exc, OSError) and exc.errno is not None:
            # the system refused (permissions, I/O): not a damaged file (BadGzipFile, an
            # OSError too, has no errno)
            raise DataError(os_error_reason(exc, path)) from exc
        raise DataError(
            f"{path}: cannot read the {what} ({type(exc).__name__}: {exc}); the file is "
            f"truncated or not a NIfTI. Re-extract or re-download it, or remove the subject"
        ) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        extra = " (a 4-D series: export a single volume)" if data.ndim == 4 else ""
        raise DataError(f"{path}: the {what} must be a 3-D volume, got shape {data.shape}{extra}")
    if min(data.shape) < 1:
        raise DataError(f"{path}: the {what} is empty, shape {data.shape}")
    if what == "image":
        data = np.asarray(data, dtype=np.float32)
    else:
        data = np.asarray(data)
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DataError(f"{path}: the {what} has {int(bad.sum())} non-finite voxel(s) "
                            f"(NaN/inf, first at voxel {first}); fix or remove the file")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise DataError(f"{path}: the {what} has an invalid affine (non-finite or singular):\n"
                        f"{affine}\nfix the header (qform/sform) of this file")
    return data, affine
