"""``adbench show``: draw a few volumes of a dataset with their lesion contours.

For each of the first ``--n`` subjects of a split, one row of the figure: an axial and a
coronal slice through the lesion's largest cross-section (for healthy volumes, through the
brain's centre) of the volume as the dataset delivers it (reoriented to RAS so left is on the
left and anterior at the top), and the same axial level after the shared preprocessing
(the 160x128 slice a detector sees). Lesion masks are drawn as red contours. The figure is a
PNG written atomically (matplotlib, Agg backend: no display needed).

Only the drawn volumes are read: a dataset that generates its volumes on first use and has a
``generate`` setting (synth) is asked for ``generate="each"``, so a preview generates the
``--n`` volumes it draws, not the whole set; cached volumes are read as they are, and the
files it writes are those a later ``adbench run`` would write, so the run reuses them.

``--anomalies`` draws the shared pseudo-anomaly synthesis (:mod:`adbench.nn.synthesis`)
instead, on preprocessed healthy training slices: see :func:`show_anomalies`.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from adbench.config import ConfigError, dataset_sets, merge_section
from adbench.io import atomic_path, show_progress
from adbench.plugins import UnknownNameError, get_registry

__all__ = ["add_parser", "main", "show", "show_anomalies"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "show", help="draw slices of a dataset's volumes with lesion contours (or synthetic "
                     "anomalies, --anomalies) into a PNG",
        description="Draw axial and coronal slices of the first N volumes of a dataset split, "
                    "raw and preprocessed, with lesion contours, into a PNG. With --anomalies: "
                    "draw N preprocessed healthy training slices, the pseudo-anomalies the "
                    "shared synthesis (DRÆM, RealNet, MediCLIP) makes of them, and their "
                    "masks, in three rows.")
    p.add_argument("dataset", help="dataset name (see `adbench list`), e.g. synth")
    p.add_argument("--out", required=True, help="PNG file to write (e.g. preview.png)")
    p.add_argument("--n", type=int, default=6,
                   help="number of volumes to draw (default 6); with --anomalies: of slices")
    p.add_argument("--split", choices=("train", "test"), default="test",
                   help="which split to draw (default: test, the volumes with lesions)")
    p.add_argument("--preset", default=None, help="dataset preset, e.g. smoke")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset config key, e.g. --set seed=3 (dataset.KEY=VALUE works too)")
    p.add_argument("--data-root", default=None, help="the dataset's folder (sets data_root)")
    p.add_argument("--no-preprocessed", dest="preprocessed", action="store_false",
                   help="leave out the preprocessed 160x128 column")
    p.add_argument("--anomalies", action="store_true",
                   help="draw synthetic anomalies on healthy training slices: row 1 the "
                        "slice, row 2 the slice with its anomaly, row 3 the same with the "
                        "exact mask's outline in red; titles give the texture source, beta "
                        "and the mask's pixels")
    p.add_argument("--synthesis-set", dest="synthesis_sets", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="with --anomalies: a synthesis key, the same keys as a method's "
                        "`synthesis` config (e.g. --synthesis-set sources=[healthy] or "
                        "--synthesis-set dtd_root=/data/dtd/images --synthesis-set "
                        "sources=[dtd]); p_anomaly defaults to 1 here so that every drawn "
                        "slice has an anomaly")
    p.add_argument("--seed", type=int, default=0,
                   help="with --anomalies: seed of the drawn anomalies (default 0)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (default: a bar only when stderr is a terminal)")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    sets = dataset_sets(args.sets)
    layer = sets["dataset"]
    if args.anomalies:
        path = show_anomalies(args.dataset, args.out, n=args.n, preset=args.preset,
                              dataset_config=layer, data_root=args.data_root,
                              synthesis=_synthesis_sets(args.synthesis_sets),
                              seed=args.seed,
                              progress=show_progress(False if args.quiet else None))
        print(f"wrote {path}")
        return 0
    elif args.synthesis_sets:
        raise ConfigError("--synthesis-set: only meaningful with --anomalies")
    path = show(args.dataset, args.out, n=args.n, split=args.split, preset=args.preset,
                dataset_config=layer, data_root=args.data_root,
                preprocessed=args.preprocessed,
                progress=show_progress(False if args.quiet else None))
    print(f"wrote {path}")
    return 0


def show(dataset: str, out: str | Path, *, n: int = 6, split: str = "test",
         preset: str | None = None, dataset_config: dict[str, Any] | None = None,
         data_root: str | None = None, preprocessed: bool = True, progress: bool = False) -> Path:
    """Draw the first ``n`` subjects of ``split`` into the PNG ``out``; return its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adbench.data.preprocess import PreprocessConfig, preprocess_volume, to_ras

    if n < 1:
        raise ConfigError(f"--n {n}: expected at least 1 volume")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: expected a .png file name")
    spec = get_registry().dataset(dataset)
    if split not in spec.splits:
        raise ConfigError(f"dataset {dataset!r} has no {split!r} split (it provides {list(spec.splits)})")
    if preset is not None and preset not in spec.presets and preset != "default":
        raise UnknownNameError(f"unknown preset {preset!r} for dataset {dataset!r}; its presets: "
                               f"{', '.join(sorted(spec.presets)) or '(none)'}")
    layer = {"data_root": str(data_root)} if data_root is not None else {}
    extra: dict[str, Any] = {"progress": progress} if "progress" in spec.default_config else {}
    if "generate" in spec.default_config:  # generate only what is drawn (a --set may override)
        extra["generate"] = "each"
    cfg = merge_section(f"dataset {dataset!r}", spec.default_config, spec.presets, preset,
                        extra, dict(dataset_config or {}), layer)
    ds = spec.factory(**cfg)
    subjects = ds.subjects(split)[:n]
    if not subjects:
        raise ConfigError(f"dataset {dataset!r} split {split!r} has no subjects to draw")

    ncol = 3 if preprocessed else 2
    fig, axes = plt.subplots(len(subjects), ncol, figsize=(3.2 * ncol, 3.0 * len(subjects)),
                             squeeze=False, facecolor="black")
    for row, subject in zip(axes, subjects):
        vol = to_ras(ds.load(subject))
        lesion = vol.lesion_mask if vol.lesion_mask is not None and vol.lesion_mask.any() else None
        z, y = _levels(vol.brain_mask, lesion)
        vmax = float(np.percentile(vol.image[vol.brain_mask], 99.5)) if vol.brain_mask.any() else 1.0
        title = _title(subject, vol.meta)
        _panel(row[0], vol.image[:, :, z].T, None if lesion is None else lesion[:, :, z].T, vmax,
               f"{title}\naxial z={z}", lower=True)
        _panel(row[1], vol.image[:, y, :].T, None if lesion is None else lesion[:, y, :].T, vmax,
               f"coronal y={y}", lower=True)
        if preprocessed:
            pre = preprocess_volume(vol, PreprocessConfig())
            pz, _ = _levels(pre.brain, pre.lesion if pre.lesion is not None and pre.lesion.any() else None)
            _panel(row[2], pre.image[:, :, pz], None if pre.lesion is None else pre.lesion[:, :, pz],
                   1.0, f"preprocessed {pre.image.shape[0]}x{pre.image.shape[1]}, z={pz}", lower=False)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90, facecolor=fig.get_facecolor())
    plt.close(fig)
    return out


def _levels(brain: np.ndarray, lesion: np.ndarray | None) -> tuple[int, int]:
    """(axial z, coronal y) through the lesion's largest cross-sections, else the brain centre."""
    ref = lesion if lesion is not None else brain
    if not ref.any():
        return brain.shape[2] // 2, brain.shape[1] // 2
    z = int(np.argmax(ref.sum(axis=(0, 1))))
    y = int(np.argmax(ref.sum(axis=(0, 2))))
    if lesion is None:  # healthy: the middle of the brain, not its widest (inferior) slice
        zs, ys = np.flatnonzero(ref.any(axis=(0, 1))), np.flatnonzero(ref.any(axis=(0, 2)))
        z = int(zs[int(len(zs) * 0.6)])
        y = int(ys[len(ys) // 2])
    return z, y


def _title(subject: str, meta: dict) -> str:
    kind = meta.get("lesion_type")
    if not kind:
        return subject
    size = meta.get("lesion_diameter_mm")
    sub = meta.get("lesion_subtype")
    return f"{subject}: {kind}" + (f" ({sub})" if sub else "") + \
        (f", {size:.0f} mm" if isinstance(size, (int, float)) else "")


def _panel(ax, image: np.ndarray, lesion: np.ndarray | None, vmax: float, title: str,
           *, lower: bool) -> None:
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=vmax, origin="lower" if lower else "upper",
              interpolation="nearest")
    if lesion is not None and lesion.any():
        ax.contour(lesion.astype(float), levels=[0.5], colors="red", linewidths=0.8)
    ax.set_title(title, color="white", fontsize=7)
    ax.axis("off")


# -- --anomalies --------------------------------------------------------------------------
def _synthesis_sets(items: list[str]) -> dict[str, Any]:
    """``["sources=[healthy]", "beta_range=[0,0.5]"]`` -> {"sources": ["healthy"], ...}."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--synthesis-set {item!r}: expected key=value (e.g. "
                              "--synthesis-set sources=[healthy,intensity])")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--synthesis-set {item!r}: value is not valid YAML ({exc})") from None
    return out


def _healthy_slices(ds, dataset: str, n: int, progress: bool):
    """(images (M, 1, H, W), brain (M, 1, H, W), labels) of preprocessed slices of the first
    training volumes, enough for ``n`` drawn slices and a pool, as a run preprocesses them
    (histogram matching to a reference fitted on these volumes)."""
    import torch

    from adbench.data.cache import finalize_image
    from adbench.data.preprocess import HistogramReference, PreprocessConfig, preprocess_volume
    from adbench.data.selection import select_slices

    cfg = PreprocessConfig()
    subjects = ds.subjects("train")
    if not subjects:
        raise ConfigError(f"dataset {dataset!r} has no training volumes to draw healthy "
                          "slices from (check its n_train / train split)")
    pres = []
    for subject in subjects[:max(1, min(len(subjects), (n + 3) // 4))]:
        pres.append(preprocess_volume(ds.load(subject), cfg))
    ref = HistogramReference.fit([(p.image, p.brain) for p in pres], cfg.n_quantiles) \
        if cfg.match else None
    images, brains, labels = [], [], []
    for pre in pres:
        z = select_slices(pre.brain, None, cfg.slices_train, cfg.min_brain_fraction)
        if not len(z):
            continue
        img = finalize_image(pre, ref, cfg)
        # the central 60 % of the selected slices: the anatomy a detector sees most of
        z = z[int(0.2 * len(z)):max(int(0.8 * len(z)), int(0.2 * len(z)) + 1)]
        for zz in z:
            images.append(img[:, :, zz])
            brains.append(pre.brain[:, :, zz])
            labels.append(f"{pre.subject_id} z={int(zz)}")
    if not images:
        raise ConfigError(f"dataset {dataset!r}: the drawn training volumes have no slice "
                          "with enough brain")
    to_t = lambda a, dt: torch.from_numpy(np.stack(a)[:, None]).to(dt)
    return to_t(images, torch.float32), to_t(brains, torch.bool), labels


def show_anomalies(dataset: str, out: str | Path, *, n: int = 6, preset: str | None = None,
                   dataset_config: dict[str, Any] | None = None, data_root: str | None = None,
                   synthesis: dict[str, Any] | None = None, seed: int = 0,
                   progress: bool = False) -> Path:
    """Draw ``n`` healthy training slices of ``dataset``, their synthetic anomalies and masks
    into the PNG ``out`` (3 rows x n columns); return its path.

    synthesis  :class:`~adbench.nn.synthesis.SynthesisConfig` keys (p_anomaly defaults to 1
               here, so every slice shows an anomaly); slice i uses the seed
               ``sample_seeds(seed, i)``; the ``healthy`` source's pool is the other drawn
               volumes' slices.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adbench.nn.synthesis import SynthesisConfig, sample_seeds, synthesize_one

    if n < 1:
        raise ConfigError(f"--n {n}: expected at least 1 slice")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: expected a .png file name")
    cfg = SynthesisConfig.from_dict({"p_anomaly": 1.0, **(synthesis or {})})
    spec = get_registry().dataset(dataset)
    if "train" not in spec.splits:
        raise ConfigError(f"dataset {dataset!r} has no 'train' split (it provides "
                          f"{list(spec.splits)}); --anomalies draws healthy training slices")
    if preset is not None and preset not in spec.presets and preset != "default":
        raise UnknownNameError(f"unknown preset {preset!r} for dataset {dataset!r}; its presets: "
                               f"{', '.join(sorted(spec.presets)) or '(none)'}")
    layer = {"data_root": str(data_root)} if data_root is not None else {}
    extra: dict[str, Any] = {"progress": progress} if "progress" in spec.default_config else {}
    if "generate" in spec.default_config:
        extra["generate"] = "each"
    ds = spec.factory(**merge_section(f"dataset {dataset!r}", spec.default_config, spec.presets,
                                      preset, extra, dict(dataset_config or {}), layer))
    images, brains, labels = _healthy_slices(ds, dataset, n, progress)
    pick = np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int)
    pool = images[:, 0].numpy()
    seeds = sample_seeds(seed, n=len(pick)).tolist()

    fig, axes = plt.subplots(3, len(pick), figsize=(1.9 * len(pick), 2.4 * 3 + 0.3),
                             squeeze=False, facecolor="black")
    for col, (i, s) in enumerate(zip(pick, seeds)):
        img, brain = images[i, 0].numpy(), brains[i, 0].numpy()
        info: dict = {}
        others = np.delete(pool, i, axis=0) if len(pool) > 1 else pool
        aug, mask = synthesize_one(img, brain, s, cfg, others, details=info)
        what = "no anomaly" if info["source"] is None else \
            f"{info['source']}, beta={info['beta']:.2f}\n{int(mask.sum())} px"
        for row, (arr, title) in enumerate(((img, labels[i]), (aug, what),
                                            (mask, "mask outline"))):
            ax = axes[row, col]
            ax.imshow(arr, cmap="gray", vmin=-1.0 if row < 2 else 0.0, vmax=1.0,
                      interpolation="nearest")
            if row == 2 and mask.any():  # the mask's outline over the anomaly, for comparison
                ax.imshow(aug, cmap="gray", vmin=-1.0, vmax=1.0, interpolation="nearest")
                ax.contour(mask, levels=[0.5], colors="red", linewidths=0.5)
            ax.set_title(title, color="white", fontsize=6)
            ax.axis("off")
    fig.suptitle(f"{dataset}: synthetic anomalies (sources {', '.join(cfg.sources)}, seed {seed})",
                 color="white", fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110, facecolor=fig.get_facecolor())
    plt.close(fig)
    return out
