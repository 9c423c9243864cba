"""Train SCRPS's StyleGAN2 on a dataset's healthy slices (thin CLI over ``train_stylegan``).

    python -m adbench.methods.scrps.train --dataset synth --preset cpu-quick --out runs/sg
    torchrun --nproc_per_node=8 -m adbench.methods.scrps.train --dataset openbhb --preset paper \\
        --data-root /data/OpenBHB --out runs/sg --device cuda
    adbench run --method scrps --dataset brats --train-on openbhb --set generator=runs/sg/generator.pt

Running the same command again resumes from ``<out>/stylegan2-checkpoint.pt``. The EMA
generator is written to ``<out>/generator.pt``, one file with its weights and constructor
config, which ``adbench run --method scrps --set generator=PATH`` uses instead of training.
``--set`` takes StyleGAN2 keys (``--set iterations=500``) and, with a prefix, dataset and
preprocessing keys (``--set dataset.n_train=4``, ``--set preprocess.min_brain_fraction=0.35``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from adbench.config import parse_sets
from adbench.errors import ConfigError
from adbench.io import file_sha256, show_progress, write_json
from adbench.methods.scrps.stylegan2 import save_generator
from adbench.methods.scrps.stylegan_train import STYLEGAN_PRESETS, resolve_config, train_stylegan
from adbench.training import init_distributed

GENERATOR_FILE = "generator.pt"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m adbench.methods.scrps.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="registered dataset name (its 'train' split)")
    p.add_argument("--preset", default="paper", choices=sorted(STYLEGAN_PRESETS),
                   help="StyleGAN2 preset; also passed to the dataset and preprocessing")
    p.add_argument("--out", required=True, type=Path, help="work folder (checkpoint, log, samples)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per torchrun process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a StyleGAN2 key, or dataset.KEY / preprocess.KEY (repeatable)")
    p.add_argument("--data-root", default=None, help="dataset root folder, if it needs one")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: a bar only when stderr is a terminal)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sets = parse_sets(args.set)
        other = [s for s in ("train", "runner") if sets[s]]
        if other:
            raise ConfigError(f"--set {other[0]}.*: the StyleGAN2 training takes StyleGAN2 keys, "
                              "dataset.KEY and preprocess.KEY")
        cfg = resolve_config({**STYLEGAN_PRESETS[args.preset], **sets["method"]})
    except (ConfigError, ValueError) as exc:
        print(f"adbench.methods.scrps.train: error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if str(args.device).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    rank, world, device = init_distributed(args.device)
    from adbench.runner import load_split

    train = load_split(args.dataset, "train", preset=args.preset, data_root=args.data_root,
                       dataset_config=sets["dataset"], preprocess=sets["preprocess"],
                       progress=show_progress(False if args.no_progress else None) and rank == 0)
    out = args.out.resolve()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "train_config.json", {"dataset": args.dataset, "preset": args.preset,
                                               "seed": args.seed, "world_size": world,
                                               "n_slices": int(train.images.shape[0]),
                                               "dataset_config": sets["dataset"],
                                               "preprocess": sets["preprocess"],
                                               "stylegan": cfg})
    G = train_stylegan(train.images, cfg, out, device=device, seed=args.seed,
                       progress=show_progress(False if args.no_progress else None),
                       log=lambda m: print(m, file=sys.stderr, flush=True))
    if rank == 0:
        path = out / GENERATOR_FILE
        save_generator(path, G)
        print(json.dumps({"generator": str(path), "sha256": file_sha256(path), "num_ws": G.num_ws,
                          "n_slices": int(train.images.shape[0])}))
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
