"""The test half of a run: stream test volumes, predict, localise, evaluate, write outputs.

Volumes are processed one at a time (a 369-volume BraTS test set never sits in memory):
preprocess (cached) → select the evaluation slices → predict in batches → for
reconstruction detectors, the shared perceptual score A_per of (slice, reconstruction) →
the (H, W, Z) map on the preprocessed grid → :func:`adbench.evaluation.volume.evaluate_volume` →
NIfTI map, image and masks → one CSV row. Each row also holds ``lesion_ml`` (the lesion's
volume in ml on the preprocessed grid, world units) and ``lesion_type`` (from the dataset's
metadata, "" when unknown); the runner adds the Dice at thresholds set on healthy validation
data (:mod:`adbench.evaluation.thresholds`) from :attr:`TestSetResult.regions`.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adbench.data.cache import finalize_image, iter_preprocessed, to_slices
from adbench.data.native import native_grid_of
from adbench.data.selection import select_slices
from adbench.detector import Context, Detector
from adbench.evaluation.metrics import pooled_dice_max, slice_auroc, slice_scores, summarize
from adbench.evaluation.volume import (definitions, evaluate_volume, lesion_ml, lesion_type,
                                       region_mask)
from adbench.rundir import RunFolder

__all__ = ["evaluate_test_set", "predict_maps", "TestSetResult"]

log = logging.getLogger("adbench")
N_FIGURE_VOLUMES = 4


def _scorer(spec, detector: Detector):
    if not detector.reconstructs or spec.runner["localisation"] != "perceptual":
        return None
    from adbench.nn.perceptual import PerceptualScore
    blocks = tuple(int(b) for b in spec.runner["perceptual_blocks"])
    return PerceptualScore(weights=spec.weights, blocks=blocks, seed=spec.seed).to(spec.device).eval()


def predict_maps(detector: Detector, images: torch.Tensor, ctx: Context, scorer, batch_size: int,
                 *, reconstructions: list | None = None,
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Maps (N, H, W) for slices (N, 1, H, W); reconstruction maps via the shared A_per.

    ``reconstructions``: a list that receives the (B, H, W) reconstructions of a
    reconstruction detector, batch by batch (for the run's figure); untouched otherwise."""
    maps, extras = [], {}
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size]
        pred = detector.predict(x, ctx)
        m = pred.maps
        if scorer is not None and pred.reconstructions is not None:
            with torch.no_grad():
                dev = next(scorer.parameters()).device
                m = scorer(x.to(dev), pred.reconstructions.to(dev))
        if reconstructions is not None and pred.reconstructions is not None:
            reconstructions.append(pred.reconstructions[:, 0].detach().float().cpu())
        maps.append(m.detach().float().cpu())
        for k, v in pred.extras.items():
            extras.setdefault(k, []).append(v.detach().float().cpu())
    return torch.cat(maps), {k: torch.cat(v) for k, v in extras.items()}


@dataclass
class TestSetResult:
    """What the evaluation of a test set gives the runner (which writes the files)."""

    rows: list[dict[str, Any]]      # one per volume, sorted by subject (per_volume.csv)
    summary: dict[str, Any]         # the evaluation's part of summary.json
    skipped: list[dict[str, str]]   # test subjects skipped, each with its reason
    timings: dict[str, float]       # predict_s, predict_s_per_slice
    #: subject → (map values, lesion labels) inside its region R_v, for Dice at thresholds
    #: set later (:mod:`adbench.evaluation.thresholds`); the same arrays as the pooled ⌈Dice⌉'s
    regions: dict[str, tuple[np.ndarray, np.ndarray]] = None
    scorer: Any = None              # the shared A_per module (None: the method's own maps)


def evaluate_test_set(spec, folder: RunFolder, detector: Detector, ctx: Context, test_ds, reference,
                      *, progress: bool) -> TestSetResult:
    """Predict, localise and evaluate every test volume of ``test_ds``, one at a time; NIfTI
    maps and figures go to ``folder`` as they are made."""
    cfg = spec.preprocess
    rule = cfg.slices_test
    scorer = _scorer(spec, detector)
    skipped: list[dict[str, str]] = []
    rows: list[dict[str, Any]] = []
    pooled: list[tuple[np.ndarray, np.ndarray]] = []
    regions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    slice_s, slice_y = [], []
    figure_volumes: list[dict] = []
    n_slices_pred = 0
    t_pred = 0.0
    sources: dict[str, set] = {}  # e.g. brain_mask_source (ATLAS), affine_source (OpenBHB)
    for pre in iter_preprocessed(test_ds, spec.dataset, "test", cfg, strict=spec.strict, report=skipped,
                                 progress=progress, limit=spec.runner["max_test_volumes"]):
        for k, v in pre.meta.items():
            if k.endswith("_source"):
                sources.setdefault(k, set()).add(str(v))
        lesion = pre.lesion if pre.lesion is not None else np.zeros_like(pre.brain)
        z = select_slices(pre.brain, lesion, rule, cfg.min_brain_fraction)   # the one rule
        region, _ = region_mask(lesion, pre.brain, slice_rule=rule,
                                min_brain_fraction=cfg.min_brain_fraction)
        image = finalize_image(pre, reference, cfg)
        amap = np.zeros(pre.brain.shape, np.float32)
        extras: dict[str, float] = {}
        shown = len(figure_volumes) < N_FIGURE_VOLUMES and spec.runner["figures"]
        recon: list | None = [] if shown and detector.reconstructs else None
        if len(z):
            sl = to_slices(pre, image, z)
            t0 = time.perf_counter()
            m, ex = predict_maps(detector, sl.images, ctx, scorer, int(spec.runner["batch_size"]),
                                 reconstructions=recon)
            t_pred += time.perf_counter() - t0
            n_slices_pred += len(z)
            amap[:, :, z] = np.moveaxis(m.numpy(), 0, -1)
            extras = {f"extra_{k}": float(v.mean()) for k, v in ex.items()}
        row = {"subject": pre.subject_id, **evaluate_volume(amap, lesion, pre.brain, slice_rule=rule,
                                                         min_brain_fraction=cfg.min_brain_fraction), **extras,
               "lesion_ml": lesion_ml(lesion, pre.affine), "lesion_type": lesion_type(pre.meta)}
        rows.append(row)
        pooled.append((amap[region], lesion[region]))
        regions[pre.subject_id] = pooled[-1]
        if rule != "lesion":
            s, y, _ = slice_scores(amap, lesion, pre.brain)
            slice_s.append(s)
            slice_y.append(y)
        if spec.runner["write_maps"]:
            folder.write_map(pre.subject_id, amap, image, pre.brain, lesion, pre.affine)
        if spec.runner.get("native_maps", True):  # the map on the source scan's grid
            folder.write_native_map(pre.subject_id, amap,
                                    native_grid_of(pre, dataset=test_ds, cfg=cfg), slices=z)
        if len(figure_volumes) < N_FIGURE_VOLUMES:
            shown_volume = {"subject": pre.subject_id, "image": image, "map": amap,
                            "lesion": lesion, "brain": pre.brain}
            if recon:  # the slices a reconstruction detector made, on the slice grid
                vol = np.zeros(pre.brain.shape, np.float32)
                vol[:, :, z] = np.moveaxis(torch.cat(recon).numpy(), 0, -1)
                shown_volume["reconstruction"] = vol
            figure_volumes.append(shown_volume)
    if not rows:
        from adbench.data.volume import DataError
        raise DataError(f"dataset {spec.dataset!r}: no usable test volumes "
                        f"({len(skipped)} skipped: {[r['reason'] for r in skipped][:3]})")

    extra_keys = sorted({k for r in rows for k in r if k.startswith("extra_")})
    for r in rows:  # a volume with no evaluated slice has no extras: NaN, not a missing cell
        for k in extra_keys:
            r.setdefault(k, math.nan)
    rows.sort(key=lambda r: r["subject"])  # the order `adbench evaluate` writes, for byte equality
    pooled_dice, pooled_t = pooled_dice_max(pooled)
    summary: dict[str, Any] = {
        "n_volumes": len(rows),
        **summarize(rows),
        "pooled_dice_max": pooled_dice, "pooled_threshold": pooled_t,
        "slice_auroc": (slice_auroc(np.concatenate(slice_s), np.concatenate(slice_y))
                        if slice_s else math.nan),
        "n_slices": n_slices_pred,
        "definitions": {**definitions(rule, cfg.min_brain_fraction),
                        "slice_auroc": ("all brain slices" if rule != "lesion" else
                                        "undefined with slice_rule=lesion (every evaluated slice "
                                        "holds lesion); use --set preprocess.slices_test=brain")},
        "localisation": ("perceptual (A_per, VGG16 blocks %s)" % list(spec.runner["perceptual_blocks"])
                         if scorer is not None else "native"),
        "weights": _weights(scorer, detector),
        "data_sources": {k: sorted(v) for k, v in sorted(sources.items())},
    }
    for key in extra_keys:
        summary[f"{key}_mean"] = float(np.nanmean([r[key] for r in rows]))
    if spec.runner["figures"]:
        try:
            from adbench.report.figures import map_scale_name, write_run_figures
            # The curves pool every test volume (their regions are in memory for the pooled
            # ⌈Dice⌉ already); the legend's per-volume means are the summary's.
            write_run_figures(folder.path, figure_volumes, pairs=pooled,
                              means={m: summary[f"{m}_mean"] for m in ("auroc", "auprc")},
                              scale=map_scale_name(summary["localisation"], spec.method),
                              slice_rule=rule, min_brain_fraction=cfg.min_brain_fraction)
        except ImportError:  # reporting layer not installed in a minimal build
            log.info("figures skipped: adbench.report is unavailable")
    return TestSetResult(rows=rows, summary=summary, skipped=skipped,
                         timings={"predict_s": t_pred,
                                  "predict_s_per_slice": t_pred / max(n_slices_pred, 1)},
                         regions=regions, scorer=scorer)


def _weights(scorer, detector) -> dict | None:
    info = {}
    if scorer is not None:
        info["perceptual"] = getattr(scorer, "weights_info", None)
    if getattr(detector, "weights_info_", None) is not None:
        info["method"] = detector.weights_info_
    return info or None

