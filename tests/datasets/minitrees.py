"""Miniature copies of the real datasets' folder trees, for tests.

Real file and folder names, real orientations (BraTS: LPS, affine diag(-1, -1, 1) scaled;
ATLAS: RAS MNI152NLin2009aSym; OpenBHB quasi-raw: the FSL MNI152 grid, x right→left),
real dtypes (BraTS images int16 or float32, segmentations uint8) and the real quirks
(BraTS20_Training_355's segmentation named W39_1998.09.19_Segm.nii, .nii copies,
name_mapping.csv). Shapes are reduced (e.g. 48x48x31 instead of 240x240x155) by larger
voxels. Anatomy is nilearn's MNI152 2009a template resampled onto each grid, so healthy
training scans and test scans look alike, as real ones do.
"""
from __future__ import annotations

import csv
import functools
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

BRATS_SHAPE = (48, 48, 31)          # real: 240 x 240 x 155 at 1 mm → 5 mm voxels
ATLAS_STEP = 4.0                    # real: 197 x 233 x 189 at 1 mm → 4 mm voxels
OPENBHB_SHAPE = (46, 55, 46)        # real: 182 x 218 x 182 at 1 mm → 4 mm voxels
MNI_CENTRE = np.array([0.0, -18.0, 18.0])   # roughly the middle of the brain, mm


@functools.lru_cache(maxsize=1)
def _mni() -> tuple[np.ndarray, np.ndarray]:
    from adbench.datasets.atlas.reader import mni152_template_path

    t = nib.load(str(mni152_template_path()))   # = nilearn's load_mni152_template(), unscaled
    data = np.asarray(t.dataobj, dtype=np.float32)
    return data / data.max(), np.asarray(t.affine, dtype=np.float64)


def sample_mni(shape, affine, *, centre_world=None) -> np.ndarray:
    """The MNI152 template (values in [0, 1], skull-stripped) sampled on a grid.

    The grid's world point ``centre_world`` (default: its own centre) is placed at the
    middle of the brain, so grids with odd origins (BraTS) still hold a whole brain.
    """
    data, mni_aff = _mni()
    affine = np.asarray(affine, dtype=np.float64)
    if centre_world is None:
        centre_world = affine[:3, :3] @ ((np.asarray(shape) - 1) / 2) + affine[:3, 3]
    shift = np.eye(4)
    shift[:3, 3] = MNI_CENTRE - np.asarray(centre_world)
    vox = np.linalg.inv(mni_aff) @ shift @ affine
    return ndimage.affine_transform(data, vox[:3, :3], offset=vox[:3, 3], output_shape=tuple(shape),
                                    order=1, mode="constant", cval=0.0).astype(np.float32)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype=None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(data) if dtype is None else np.asarray(data).astype(dtype)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.set_qform(np.asarray(affine, dtype=np.float64), code=1)
    img.set_sform(np.asarray(affine, dtype=np.float64), code=1)
    nib.save(img, str(path))
    return path


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to a fraction of its bytes, as an interrupted download leaves it."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def _ball(shape, centre, radius) -> np.ndarray:
    idx = np.indices(shape, dtype=np.float32)
    d2 = sum((idx[i] - centre[i]) ** 2 for i in range(3))
    return d2 <= radius ** 2


# -- BraTS2020 -----------------------------------------------------------------------------
def brats_affine(shape=BRATS_SHAPE, step: float = 5.0) -> np.ndarray:
    """The real BraTS header, scaled: diag(-1, -1, 1) · step, origin (0, (Y-1)·step, 0)."""
    return np.array([[-step, 0, 0, 0], [0, -step, 0, (shape[1] - 1) * step],
                     [0, 0, step, 0], [0, 0, 0, 1]], dtype=np.float64)


def brats_subject(i: int, shape=BRATS_SHAPE, seed: int = 0) -> dict[str, np.ndarray]:
    """Images of all four modalities and a {0, 1, 2, 4} segmentation for subject i."""
    rng = np.random.default_rng([seed, i])
    anat = sample_mni(shape, brats_affine(shape))
    brain = anat > 0.2
    inside = np.argwhere(ndimage.binary_erosion(brain, iterations=4))
    centre = inside[rng.integers(len(inside))]
    edema, enh, core = (_ball(shape, centre, r) & brain for r in (4.0, 2.6, 1.6))
    seg = np.zeros(shape, np.uint8)
    seg[edema] = 2
    seg[enh] = 4
    seg[core] = 1
    out = {"seg": seg}
    for k, (gain, tumour) in enumerate({"t1": (900, 0.5), "t1ce": (800, 1.6), "t2": (1200, 1.4),
                                        "flair": (700, 1.8)}.values()):
        img = anat * gain * (1 + 0.03 * rng.standard_normal(shape))
        img[seg > 0] *= tumour
        out[("t1", "t1ce", "t2", "flair")[k]] = np.where(brain, np.maximum(img, 1), 0)
    return out


def brats_tree(root: Path, ids=(1, 2, 3), *, ext: str = ".nii.gz", quirk_355: bool = False,
               misnamed: dict[int, str] | None = None, name_mapping: bool = True,
               image_dtype=np.int16, shape=BRATS_SHAPE, seed: int = 0) -> Path:
    """``root/MICCAI_BraTS2020_TrainingData/BraTS20_Training_NNN/...``; returns ``root``.

    quirk_355  add subject 355 as released: .nii files and its segmentation named
               W39_1998.09.19_Segm.nii.
    misnamed   subject number (one of ``ids``) → file name of its segmentation, for a
               misnamed file the reader does not know.
    """
    misnamed = dict(misnamed or {})
    tdir = Path(root) / "MICCAI_BraTS2020_TrainingData"
    aff = brats_affine(shape)
    all_ids = list(ids) + ([355] if quirk_355 else [])
    for i in all_ids:
        sid = f"BraTS20_Training_{i:03d}"
        vols = brats_subject(i, shape, seed)
        e = ".nii" if i == 355 else ext
        for mod in ("t1", "t1ce", "t2", "flair"):
            write_nifti(tdir / sid / f"{sid}_{mod}{e}", vols[mod], aff, image_dtype)
        seg_name = "W39_1998.09.19_Segm.nii" if i == 355 else misnamed.get(i, f"{sid}_seg{e}")
        write_nifti(tdir / sid / seg_name, vols["seg"], aff, np.uint8)
    if name_mapping:
        with open(tdir / "name_mapping.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Grade", "BraTS_2017_subject_ID", "BraTS_2018_subject_ID",
                        "TCGA_TCIA_subject_ID", "BraTS_2019_subject_ID", "BraTS_2020_subject_ID"])
            for i in all_ids:
                grade = "LGG" if i % 2 == 0 else "HGG"
                w.writerow([grade, "NA", "NA", f"TCGA-02-{i:04d}", f"BraTS19_X_{i}_1",
                            f"BraTS20_Training_{i:03d}"])
    return Path(root)


# -- ATLAS v2.0 ----------------------------------------------------------------------------
def atlas_grid(step: float = ATLAS_STEP) -> tuple[tuple[int, int, int], np.ndarray]:
    """The MNI152NLin2009aSym 197x233x189 grid (origin -98, -134, -72) at ``step`` mm."""
    shape = tuple(int(np.ceil(n / step)) for n in (197, 233, 189))
    aff = np.diag([step, step, step, 1.0])
    aff[:3, 3] = (-98.0, -134.0, -72.0)
    return shape, aff


def atlas_subject(i: int, shape, affine, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(T1w with a skull — ATLAS is not skull-stripped —, binary uint8 lesion mask)."""
    rng = np.random.default_rng([seed, 100 + i])
    anat = sample_mni(shape, affine, centre_world=MNI_CENTRE)
    brain = anat > 0.2
    head = ndimage.binary_dilation(brain, iterations=2)
    skull = head & ~ndimage.binary_dilation(brain, iterations=1)
    img = anat * 600 * (1 + 0.03 * rng.standard_normal(shape))
    img[skull] = 900
    inside = np.argwhere(ndimage.binary_erosion(brain, iterations=3))
    lesion = _ball(shape, inside[rng.integers(len(inside))], 2.5) & brain
    img[lesion] *= 0.4
    return np.maximum(img, 0).astype(np.float32), lesion.astype(np.uint8)


def atlas_paths(root: Path, cohort: str, sub: str, ses: str = "ses-1") -> tuple[Path, Path]:
    anat = Path(root) / "ATLAS_2" / "Training" / cohort / sub / ses / "anat"
    pre = f"{sub}_{ses}_space-MNI152NLin2009aSym"
    return anat / f"{pre}_T1w.nii.gz", anat / f"{pre}_label-L_desc-T1lesion_mask.nii.gz"


def atlas_tree(root: Path, subjects=(("R001", "sub-r001s001"), ("R001", "sub-r001s002"),
                                     ("R002", "sub-r002s001")), *, step: float = ATLAS_STEP,
               seed: int = 0, testing: bool = True) -> Path:
    """``root/ATLAS_2/Training/RNNN/sub-*/ses-1/anat/...``; also an unlabelled ``Testing``
    subject as in the release. Returns ``root``."""
    shape, aff = atlas_grid(step)
    for i, (cohort, sub) in enumerate(subjects):
        img, les = atlas_subject(i, shape, aff, seed)
        t1, mask = atlas_paths(root, cohort, sub)
        write_nifti(t1, img, aff, np.float32)
        write_nifti(mask, les, aff, np.uint8)
    if testing:
        img, _ = atlas_subject(99, shape, aff, seed)
        write_nifti(Path(root) / "ATLAS_2" / "Testing" / "R003" / "sub-r003s001" / "ses-1" / "anat"
                    / "sub-r003s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz", img, aff, np.float32)
    return Path(root)


# -- OpenBHB -------------------------------------------------------------------------------
OPENBHB_IDS = (1000017895, 1000285438, 1001156574, 1002461323, 1003529402, 1004871622)


def openbhb_affine(step: float = 4.0) -> np.ndarray:
    """The FSL MNI152 grid (x right→left, origin 90, -126, -72), at ``step`` mm."""
    return np.array([[-step, 0, 0, 90], [0, step, 0, -126], [0, 0, step, -72], [0, 0, 0, 1]],
                    dtype=np.float64)


def openbhb_subject(i: int, seed: int = 0, shape=OPENBHB_SHAPE) -> np.ndarray:
    rng = np.random.default_rng([seed, 200 + i])
    anat = sample_mni(shape, openbhb_affine(), centre_world=MNI_CENTRE)
    img = anat * (1 + 0.03 * rng.standard_normal(shape)) * (0.9 + 0.2 * rng.random())
    return np.where(anat > 0.2, np.maximum(img, 1e-3), 0).astype(np.float32)


def openbhb_tree(root: Path, ids=OPENBHB_IDS[:4], *, form: str = "npy", layout: str = "hf",
                 template: bool = True, seed: int = 0) -> Path:
    """OpenBHB release: participants.tsv + quasi-raw arrays (1, 1, X, Y, Z) float32.

    layout "hf": ``train/derivatives/sub-<id>/ses-1/sub-<id>_preproc-quasiraw_T1w.npy``;
    "dataport": ``train_quasiraw/sub-<id>_preproc-quasiraw_T1w.npy`` with train.tsv.
    form "npy", "nifti" (BIDS ``sub-<id>/ses-1/anat/sub-<id>_ses-1_T1w.nii.gz``) or "both".
    template   write ``resource/quasiraw_space-MNI152_desc-brain_T1w.nii.gz`` (the grid's
               affine travels with it).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    aff = openbhb_affine()
    sites = ("IXI", "ABIDE1", "CoRR", "GSP")
    for k, pid in enumerate(ids):
        img = openbhb_subject(k, seed)
        if form in ("npy", "both"):
            if layout == "hf":
                p = root / "train" / "derivatives" / f"sub-{pid}" / "ses-1" / f"sub-{pid}_preproc-quasiraw_T1w.npy"
            else:
                p = root / "train_quasiraw" / f"sub-{pid}_preproc-quasiraw_T1w.npy"
            p.parent.mkdir(parents=True, exist_ok=True)
            np.save(p, img[None, None])
        if form in ("nifti", "both"):
            write_nifti(root / f"sub-{pid}" / "ses-1" / "anat" / f"sub-{pid}_ses-1_T1w.nii.gz",
                        img, aff, np.float32)
    table = "participants.tsv" if layout == "hf" else "train.tsv"
    with open(root / table, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["participant_id", "study", "sex", "age", "site", "diagnosis", "split"])
        for k, pid in enumerate(ids):
            w.writerow([pid, sites[k % 4], "female" if k % 2 else "male", f"{20.5 + 3 * k}",
                        k % 3, "control", "train"])
    if template:
        write_nifti(root / "resource" / "quasiraw_space-MNI152_desc-brain_T1w.nii.gz",
                    sample_mni(OPENBHB_SHAPE, aff, centre_world=MNI_CENTRE), aff, np.float32)
    return root
