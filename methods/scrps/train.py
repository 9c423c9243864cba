"""Train SCRPS's StyleGAN2 on a dataset's healthy slices (thin CLI over ``train_stylegan``).

    python -m adbench.methods.scrps.train --dataset synth --preset cpu-quick --out runs/sg
    torchrun --nproc_per_node=8 -m adbench.methods.scrps.train --dataset openbhb --preset paper \
        --out runs/sg --device cuda

Running the same command again resumes from ``<out>/stylegan2-checkpoint.pt``. The generator
(EMA weights) is written to ``<out>/generator.pt`` (state dict) and ``<out>/generator.json``
(constructor config); rebuild it with ``generator_from_config``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

from adbench.io import save_tensors, write_json
from adbench.methods.scrps.stylegan_train import STYLEGAN_PRESETS, resolve_config, train_stylegan
from adbench.training import init_distributed


def parse_set(items: list[str]) -> dict:
    """``["k=v", ...]`` -> {k: yaml.safe_load(v)}; malformed items are an error naming the flag."""
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set: got {item!r}, expected key=value (e.g. --set iterations=500)")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m adbench.methods.scrps.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="registered dataset name (its 'train' split)")
    p.add_argument("--preset", default="paper", choices=sorted(STYLEGAN_PRESETS),
                   help="StyleGAN2 preset; also passed to the dataset as its preset")
    p.add_argument("--out", required=True, type=Path, help="work folder (checkpoint, log, samples)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per torchrun process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a StyleGAN2 config key (repeatable)")
    p.add_argument("--data-root", default=None, help="dataset root folder, if it needs one")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if str(args.device).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    cfg = resolve_config({**STYLEGAN_PRESETS[args.preset], **parse_set(args.set)})
    rank, world, device = init_distributed(args.device)
    from adbench.runner import load_split

    train = load_split(args.dataset, "train", preset=args.preset, data_root=args.data_root,
                       progress=not args.no_progress and rank == 0)
    out = args.out.resolve()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "train_config.json", {"dataset": args.dataset, "preset": args.preset,
                                               "seed": args.seed, "world_size": world,
                                               "n_slices": int(train.images.shape[0]),
                                               "stylegan": cfg})
    G = train_stylegan(train.images, cfg, out, device=device, seed=args.seed,
                       progress=not args.no_progress, log=lambda m: print(m, file=sys.stderr, flush=True))
    if rank == 0:
        save_tensors(out / "generator.pt", G.state_dict())
        write_json(out / "generator.json", G.config())
        print(json.dumps({"generator": str(out / "generator.pt"), "num_ws": G.num_ws,
                          "n_slices": int(train.images.shape[0])}))
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
