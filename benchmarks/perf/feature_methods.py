"""PatchCore and PaDiM: fit / predict time and peak memory, and coreset selection cost; prints JSON.

    python benchmarks/perf/feature_methods.py                        # synth default, imagenet weights
    python benchmarks/perf/feature_methods.py --weights random --max-train-slices 200 \\
        --test-slices 16 --coreset-sizes 100000 1000000 --device cuda

Part 1 (``methods``): each method runs in a fresh subprocess (so peak RSS is its own) with its
registered ``default`` preset, fitted on the ``synth`` training split of ``--dataset-preset``
(optionally evenly thinned to ``--max-train-slices``: the per-slice figures stay comparable) and
predicting ``--test-slices`` test slices. Reported: fit seconds, fit seconds per training slice,
predict seconds per slice, peak RSS (``resource.ru_maxrss``) and, on CUDA,
``torch.cuda.max_memory_allocated``.

Part 2 (``coreset``): greedy coreset selection of ratio x N points from N random 1280-d
"patch" vectors (VGG16 blocks 3-5 width), for every N in ``--coreset-sizes``:

* ``adbench``  JL projection to 128-d + :func:`greedy_coreset` (fused O(N d) update per step,
               no host sync), on ``--device``;
* ``naive``    the plain greedy: no projection, full 1280-d distances recomputed from the
               new centre to every point each step, one Python loop iteration per selection.

Each selection step of either algorithm costs the same (one pass over all N points), so when
a full run would exceed ``--max-seconds`` only the first steps are timed and the total is
extrapolated linearly to all k steps; such entries carry ``"extrapolated": true`` and the
number of measured steps. The naive greedy at N = 10^6 would need the 5 GB full matrix; it is
extrapolated from N = 10^5 by its O(N) per-step cost (``"extrapolated_from_n"``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

import torch

DIM = 1280


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# -- part 1: one method in this process ----------------------------------------------------
def run_method(args) -> dict:
    from adbench import Context
    from adbench.data.sampling import spread_subset
    from adbench.plugins import get_registry
    from adbench.runner import load_split

    train = load_split("synth", "train", preset=args.dataset_preset)
    test = load_split("synth", "test", preset=args.dataset_preset)
    train = spread_subset(train, args.max_train_slices)
    x = test.images[:args.test_slices]
    spec = get_registry().method(args.one)
    cfg = {**spec.default_config, **spec.presets.get("default", {})}
    if args.weights is not None:
        cfg["weights"] = args.weights
    det = spec.factory(**cfg)
    ctx = Context(device=args.device, seed=0)
    rss_data = _rss_mb()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    det.fit(train, ctx)
    _sync(args.device)
    fit_s = time.perf_counter() - t0
    rss_fit = _rss_mb()
    det.predict(x[:1], ctx)                       # warm-up (device copies of the model)
    _sync(args.device)
    t0 = time.perf_counter()
    maps = det.predict(x, ctx).maps
    _sync(args.device)
    pred_s = time.perf_counter() - t0
    out = {"config": {k: v for k, v in cfg.items() if k != "layers"},
           "n_train_slices": len(train), "n_test_slices": int(x.shape[0]),
           "fit_s": round(fit_s, 3), "fit_s_per_train_slice": round(fit_s / len(train), 4),
           "predict_s_per_slice": round(pred_s / x.shape[0], 4),
           "peak_rss_mb_after_data": round(rss_data, 1), "peak_rss_mb_after_fit": round(rss_fit, 1),
           "peak_rss_mb": round(_rss_mb(), 1), "map_shape": list(maps.shape),
           "weights": getattr(det, "weights_info_", None)}
    if hasattr(det, "bank_info_"):
        out["bank"] = det.bank_info_
        out["bank_mb"] = round(det.memory_bank_.numel() * 4 / 2**20, 1)
    if hasattr(det, "inv_cov_"):
        out["inv_cov_mb"] = round(det.inv_cov_.numel() * 4 / 2**20, 1)
    if args.device.startswith("cuda"):
        out["cuda_max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def methods_part(args) -> dict:
    res = {}
    for name in ("patchcore", "padim"):
        cmd = [sys.executable, __file__, "--one", name, "--device", args.device,
               "--dataset-preset", args.dataset_preset, "--test-slices", str(args.test_slices),
               "--threads", str(args.threads)]
        if args.weights is not None:
            cmd += ["--weights", args.weights]
        if args.max_train_slices is not None:
            cmd += ["--max-train-slices", str(args.max_train_slices)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            res[name] = {"error": p.stderr.strip().splitlines()[-5:]}
        else:
            res[name] = json.loads(p.stdout.strip().splitlines()[-1])
    return res


# -- part 2: coreset selection ---------------------------------------------------------------
def _random_projected(n: int, device: str, seed: int) -> tuple[torch.Tensor, float]:
    """N random 1280-d vectors, generated chunk-wise and JL-projected; (N, 128), projection s."""
    from adbench.nn.coreset import random_projection

    g = torch.Generator().manual_seed(seed)
    r = random_projection(DIM, 128, torch.Generator().manual_seed(seed + 1), device)
    out = torch.empty(n, 128, device=device)
    spent = 0.0
    for s in range(0, n, 65536):
        chunk = torch.randn(min(65536, n - s), DIM, generator=g).to(device)
        _sync(device)
        t0 = time.perf_counter()
        out[s:s + len(chunk)] = chunk @ r
        _sync(device)
        spent += time.perf_counter() - t0
    return out, spent


def _time_greedy(x: torch.Tensor, k: int, device: str, budget_s: float) -> dict:
    from adbench.nn.coreset import greedy_coreset

    probe = min(k, 200)
    greedy_coreset(x, min(k, 20))                 # warm-up (allocator, kernels)
    _sync(device)
    t0 = time.perf_counter()
    greedy_coreset(x, probe)
    _sync(device)
    per_step = (time.perf_counter() - t0) / probe
    if per_step * k <= budget_s:
        t0 = time.perf_counter()
        greedy_coreset(x, k)
        _sync(device)
        return {"seconds": round(time.perf_counter() - t0, 3), "extrapolated": False}
    steps = max(probe, int(budget_s / per_step / 4))
    t0 = time.perf_counter()
    greedy_coreset(x, steps)
    _sync(device)
    per_step = (time.perf_counter() - t0) / steps
    return {"seconds": round(per_step * k, 1), "extrapolated": True, "measured_steps": steps,
            "seconds_per_step": per_step}


def _time_naive(n: int, k: int, device: str, steps: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, DIM, generator=g).to(device)
    d = torch.full((n,), float("inf"), device=device)
    i = 0
    steps = min(steps, k)
    d = torch.minimum(d, ((x - x[i]) ** 2).sum(1))      # warm-up step, not timed
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        d = torch.minimum(d, ((x - x[i]) ** 2).sum(1))
        i = int(torch.argmax(d))
    _sync(device)
    per_step = (time.perf_counter() - t0) / steps
    return {"seconds": round(per_step * k, 1), "extrapolated": steps < k, "measured_steps": steps,
            "seconds_per_step": per_step}


def coreset_part(args) -> dict:
    res = {}
    naive_per_point_step = None
    for n in args.coreset_sizes:
        k = math.ceil(args.coreset_ratio * n)
        x, proj_s = _random_projected(n, args.device, seed=n)
        ours = _time_greedy(x, k, args.device, args.max_seconds)
        ours["projection_s"] = round(proj_s, 3)
        del x
        entry = {"n": n, "k": k, "dim": DIM, "projection_dim": 128, "adbench": ours}
        if n * DIM * 4 <= args.naive_max_bytes:
            naive = _time_naive(n, k, args.device, args.naive_steps, seed=n)
            naive_per_point_step = naive["seconds_per_step"] / n
            naive_n = n
        elif naive_per_point_step is not None:
            per_step = naive_per_point_step * n
            naive = {"seconds": round(per_step * k, 1), "extrapolated": True,
                     "extrapolated_from_n": naive_n, "seconds_per_step": per_step,
                     "why": f"the {n} x {DIM} float32 matrix ({n * DIM * 4 / 2**30:.1f} GiB) "
                            f"exceeds --naive-max-bytes"}
        else:
            naive = {"skipped": "matrix too large and no smaller N measured"}
        entry["naive"] = naive
        if "seconds" in naive:
            entry["speedup"] = round(naive["seconds"] / max(ours["seconds"] + proj_s, 1e-9), 1)
        res[str(n)] = entry
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None,
                    help="VGG16 weights: imagenet (env/torchvision cache), a path, or random "
                         "(default: the method's default, i.e. imagenet resolution)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dataset-preset", default="default")
    ap.add_argument("--max-train-slices", type=int, default=None)
    ap.add_argument("--test-slices", type=int, default=16)
    ap.add_argument("--coreset-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--coreset-ratio", type=float, default=0.1)
    ap.add_argument("--max-seconds", type=float, default=300.0,
                    help="time budget of one full coreset run before extrapolating")
    ap.add_argument("--naive-steps", type=int, default=20)
    ap.add_argument("--naive-max-bytes", type=float, default=2 * 2**30)
    ap.add_argument("--skip-methods", action="store_true")
    ap.add_argument("--skip-coreset", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_method(args)))
        return 0
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "torch_threads": torch.get_num_threads(), "device": args.device,
                       "load_average_1min": os.getloadavg()[0],
                       "cuda": torch.cuda.get_device_name() if args.device.startswith("cuda")
                       else None},
           "dataset": {"name": "synth", "preset": args.dataset_preset,
                       "max_train_slices": args.max_train_slices,
                       "test_slices": args.test_slices}}
    if not args.skip_methods:
        out["methods"] = methods_part(args)
    if not args.skip_coreset:
        out["coreset"] = coreset_part(args)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
