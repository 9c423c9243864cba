"""Throughput of StyleGAN2 training steps (G and D steps, lazy R1/PL amortised); prints JSON.

    python benchmarks/perf/stylegan_train.py --preset cpu-quick --batch 8 --steps 16
    python benchmarks/perf/stylegan_train.py --preset gpu-quick --batch 32 --precision bf16 \
        --device cuda --steps 64 [--compile]

Runs ``train_stylegan`` on procedural 160x128 slices for ``2 * steps`` iterations in a temporary
folder: the first ``steps`` are warm-up (allocator, cuDNN autotuning, torch.compile), the second
``steps`` are timed (from the training log's own timer, taken before any sample or checkpoint
is written). Use a multiple of 16 steps so that lazy R1 (every 16) and path length (every 4)
are amortised exactly.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from adbench.methods.scrps.stylegan_train import STYLEGAN_PRESETS, train_stylegan


def procedural_slices(n: int, h: int = 160, w: int = 128, seed: int = 0) -> torch.Tensor:
    """Brain-like ellipses with an inner darker ellipse, (n, 1, h, w) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    a = 0.75 + 0.15 * torch.rand(n, 1, 1, generator=g)
    b = 0.65 + 0.15 * torch.rand(n, 1, 1, generator=g)
    e = (yy / a) ** 2 + (xx / b) ** 2
    inner = (yy / (0.4 * a)) ** 2 + (xx / (0.25 * b)) ** 2
    img = torch.where(e < 1, 0.6 - 0.4 * e, torch.tensor(-1.0))
    img = torch.where(inner < 1, torch.tensor(-0.6), img)
    return img[:, None]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-quick", choices=sorted(STYLEGAN_PRESETS))
    p.add_argument("--batch", type=int, default=None, help="global batch (default: the preset's)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the main G and D passes")
    p.add_argument("--steps", type=int, default=16, help="timed iterations (same again as warm-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a StyleGAN2 config key, e.g. fused_modconv=false")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = str(args.device).startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    cfg = dict(STYLEGAN_PRESETS[args.preset])
    for item in args.set:
        k, v = item.split("=", 1)
        cfg[k] = yaml.safe_load(v)
    if args.batch:
        cfg["batch_size"] = args.batch
    cfg.update(iterations=2 * args.steps, log_interval=args.steps, precision=args.precision,
               compile=args.compile, checkpoint_interval=10 ** 9, sample_interval=10 ** 9)
    images = procedural_slices(max(64, 2 * cfg["batch_size"]))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_stylegan(images, cfg, Path(tmp), device=args.device)
        records = [json.loads(x) for x in (Path(tmp) / "train_log.jsonl").read_text().splitlines()]
    wall = time.perf_counter() - t0
    timed = records[-1]
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({
        "images_per_s": round(timed["images_per_s"], 3),
        "sec_per_iter": round(timed["sec_per_iter"], 5),
        "warmup_sec_per_iter": round(records[0]["sec_per_iter"], 5),
        "peak_mem_mb": round(peak, 1),
        "peak_mem_kind": "cuda_max_allocated" if cuda else "process_max_rss",
        "preset": args.preset, "batch": cfg["batch_size"], "precision": args.precision,
        "compile": args.compile, "steps": args.steps, "device": args.device,
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "fused_modconv": cfg["fused_modconv"],
        "pl_weight": cfg["pl_weight"], "r1_gamma": cfg["r1_gamma"], "total_wall_s": round(wall, 1),
        "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
