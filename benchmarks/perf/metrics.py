"""Per-volume AUROC + ⌈Dice⌉: adbench's exact sort-and-scan against the alternatives; prints JSON.

    python benchmarks/perf/metrics.py                      # 240x240x155, 369-volume estimate
    python benchmarks/perf/metrics.py --subset 2 --brute-thresholds 10   # quicker

One run times, on a procedural 240x240x155 volume (ellipsoid brain, spherical lesion, noisy
float32 map with a lesion signal):

* ``exact``       — adbench: :func:`adbench.evaluation.volume.evaluate_volume` from the masks (region
                    extraction included; one sort of each class,
                    AUROC by rank counting, ⌈Dice⌉ by a cumulative scan over all thresholds,
                    AUPRC for free from the same scan);
* ``sklearn_auroc`` — :func:`sklearn.metrics.roc_auc_score` on the same region, for reference;
* ``bisection``   — the 10-step threshold search used in public code: each step evaluates the
                    Dice at the two quarter points of the current interval and keeps the
                    better half (20 Dice evaluations, approximate), plus sklearn's AUROC;
* ``brute_force`` — Dice at every distinct score as threshold. Infeasible at this size, so
                    it is timed on ``--brute-thresholds`` thresholds and extrapolated to the
                    number of distinct scores (``extrapolated: true`` in the JSON).

Two regions are timed: ``full_volume`` (all 8.9 M voxels, the worst case) and
``lesion_slices`` (brain ∩ slices holding lesion: the paper's protocol, what runs evaluate).
The 369-volume test set (BraTS2020 size) is timed on ``--subset`` volumes and extrapolated
linearly (``extrapolated_from`` in the JSON), including :func:`adbench.evaluation.metrics.pooled_dice_max`
(one global threshold) and its peak extra memory (tracemalloc), to compare with one region. The Dice error of the bisection (exact minus
bisection) is reported too.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from adbench.evaluation.metrics import pooled_dice_max
from adbench.evaluation.volume import evaluate_volume, region_mask

SHAPE = (240, 240, 155)


def make_volume(seed: int):
    """(map float32, lesion bool, brain bool) of SHAPE; the lesion size varies with the seed."""
    rng = np.random.default_rng(seed)
    x, y, z = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    brain = ((x - 120) / 85.0) ** 2 + ((y - 120) / 100.0) ** 2 + ((z - 78) / 65.0) ** 2 <= 1
    c = rng.integers([90, 90, 60], [150, 150, 100])
    r = rng.uniform(8, 25)
    lesion = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= r * r) & brain
    amap = rng.normal(size=SHAPE).astype(np.float32) + 1.2 * lesion
    return amap, lesion, brain


def dice_at(scores, labels, t) -> float:
    pred = scores >= t
    return 2.0 * np.count_nonzero(pred & labels) / (np.count_nonzero(pred) + np.count_nonzero(labels))


def dice_bisection(scores, labels, steps: int = 10) -> float:
    lo, hi = float(scores.min()), float(scores.max())
    best = 0.0
    for _ in range(steps):
        q1, q3 = lo + (hi - lo) / 4, lo + 3 * (hi - lo) / 4
        d1, d3 = dice_at(scores, labels, q1), dice_at(scores, labels, q3)
        best = max(best, d1, d3)
        lo, hi = (lo, (lo + hi) / 2) if d1 >= d3 else ((lo + hi) / 2, hi)
    return best


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_region(amap, lesion, brain, rule: str, brute_thresholds: int) -> dict:
    region, _ = region_mask(lesion, brain, slice_rule=rule)
    s, y = amap[region], lesion[region]
    t_exact, row = timed(lambda: evaluate_volume(amap, lesion, brain, slice_rule=rule))
    t_skl, auc_skl = timed(lambda: roc_auc_score(y, s))
    t_bis, d_bis = timed(lambda: dice_bisection(s, y))
    n_distinct = int(np.unique(s).size)
    ts = np.quantile(s, np.linspace(0.5, 1.0, brute_thresholds))
    t_bf, _ = timed(lambda: [dice_at(s, y, t) for t in ts])
    return {
        "n_voxels": int(s.size), "n_lesion_voxels": int(y.sum()), "n_distinct_scores": n_distinct,
        "exact_auroc_dice_auprc_s": t_exact,
        "sklearn_auroc_s": t_skl,
        "bisection_10_steps_dice_s": t_bis,
        "bisection_plus_sklearn_auroc_s": t_bis + t_skl,
        "brute_force_dice_s": t_bf / brute_thresholds * n_distinct,
        "brute_force": {"extrapolated": True, "timed_thresholds": brute_thresholds,
                        "to_thresholds": n_distinct},
        "auroc_exact": row["auroc"], "auroc_sklearn": float(auc_skl),
        "auroc_abs_diff": abs(row["auroc"] - float(auc_skl)),
        "dice_max_exact": row["dice_max"], "dice_bisection": d_bis,
        "dice_bisection_error": row["dice_max"] - d_bis,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", type=int, default=3, help="volumes timed for the 369-volume estimate")
    ap.add_argument("--n-volumes", type=int, default=369, help="test-set size to extrapolate to")
    ap.add_argument("--brute-thresholds", type=int, default=20)
    args = ap.parse_args()

    amap, lesion, brain = make_volume(0)
    one = {  # full_volume: no brain restriction and every slice, all 8.9 M voxels count
        "full_volume": bench_region(amap, lesion, np.ones(SHAPE, bool), "all", args.brute_thresholds),
        "lesion_slices": bench_region(amap, lesion, brain, "lesion", args.brute_thresholds),
    }

    per = {"exact": [], "bisection_plus_sklearn_auroc": []}
    pairs = []
    for seed in range(1, args.subset + 1):
        a, l, b = make_volume(seed)
        t, _ = timed(lambda: evaluate_volume(a, l, b))
        per["exact"].append(t)
        region, _ = region_mask(l, b)
        s, y = a[region], l[region]
        t1, _ = timed(lambda: dice_bisection(s, y))
        t2, _ = timed(lambda: roc_auc_score(y, s))
        per["bisection_plus_sklearn_auroc"].append(t1 + t2)
        pairs.append((s, y))
    import tracemalloc
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    t_pooled, _ = timed(lambda: pooled_dice_max(pairs))
    pooled_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    largest = max(s.nbytes + y.nbytes for s, y in pairs)
    scale = args.n_volumes / args.subset
    print(json.dumps({
        "benchmark": "per-volume auroc + dice_max",
        "volume_shape": list(SHAPE),
        "single_volume": one,
        "test_set": {
            "n_volumes": args.n_volumes, "region": "lesion_slices",
            "exact_s": sum(per["exact"]) * scale,
            "bisection_plus_sklearn_auroc_s": sum(per["bisection_plus_sklearn_auroc"]) * scale,
            "brute_force_s": one["lesion_slices"]["brute_force_dice_s"] * args.n_volumes,
            "pooled_dice_max_s": t_pooled * scale,
            "pooled_dice_max_peak_extra_mb": pooled_peak / 2**20,
            "largest_region_input_mb": largest / 2**20,
            "pooled_dice_max_memory": "O(one volume's region + all positives): the peak does not "
                                      "grow with the number of volumes beyond the positives",
            "extrapolated_from": {"timed_volumes": args.subset,
                                  "brute_force": "single-volume extrapolation x n_volumes"},
        },
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "numpy": np.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
