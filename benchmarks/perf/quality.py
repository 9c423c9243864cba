"""Sample quality of a saved StyleGAN2 generator against real slices of a dataset; prints JSON.

    python benchmarks/perf/quality.py --generator runs/sg/generator.pt --dataset synth \\
        --preset cpu-quick --n 256 --weights /path/vgg16.pth
    python benchmarks/perf/quality.py --generator runs/sg/stylegan2-checkpoint.pt \\
        --dataset synth --n 2000 --device cuda --inception /path/inception_v3_google.pth

``--generator``: a generator file (``generator.pt`` of ``python -m adbench.methods.scrps.train``)
or a training checkpoint (``stylegan2-checkpoint.pt``: its EMA generator is scored). ``--n``
real slices of the dataset's ``train`` split (a fixed subset chosen by ``--seed``, the same
rule as during training) are compared with as many samples of the generator (latents from
``--seed``): KID and FID on VGG16 block-5 features (``kid_vgg``, ``fid_vgg``), ProGAN's
SWD (× 10³, per pyramid level too) and, with ``--inception``, KID and FID on Inception-v3
features. Values depend on ``n``: compare numbers computed with the same ``n``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from adbench.io import file_sha256
from adbench.methods.scrps.stylegan2 import Generator, generator_from_config, load_generator
from adbench.methods.scrps.stylegan_train import named_generator, quality_reals
from adbench.nn.quality import QualityEvaluator, swd


def read_generator(path: Path) -> Generator:
    """The EMA generator of a training checkpoint, or the generator of a generator file."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "G_ema" in state and "generator_config" in state:
        G = generator_from_config(json.loads(state["generator_config"]))
        G.load_state_dict(state["G_ema"])
        return G.eval().requires_grad_(False)
    return load_generator(path)


@torch.no_grad()
def sample(G: Generator, n: int, seed: int, device: torch.device, batch: int = 32) -> torch.Tensor:
    """n images (n, C, H, W) of G from latents of the ``quality-latents`` stream of ``seed``
    (zero noise, as SCRPS uses the generator)."""
    z = torch.randn(n, G.z_dim, generator=named_generator(seed, "quality-latents"))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return torch.cat([G(z[i:i + batch].to(device), noise_mode="none").float().cpu()
                          for i in range(0, n, batch)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", required=True, type=Path,
                   help="generator.pt or stylegan2-checkpoint.pt")
    p.add_argument("--dataset", default="synth", help="registered dataset (its train split)")
    p.add_argument("--preset", default=None, help="dataset / preprocessing preset")
    p.add_argument("--data-root", default=None)
    p.add_argument("--n", type=int, default=256, help="real slices, and as many samples")
    p.add_argument("--weights", default="imagenet", help="VGG16: imagenet | random | PATH")
    p.add_argument("--inception", default=None, help="torchvision inception_v3 state dict")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.generator.is_file():
        print(f"quality.py: error: --generator {str(args.generator)!r} does not exist",
              file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    t0 = time.perf_counter()
    G = read_generator(args.generator).to(dev)
    from adbench.runner import load_split

    train = load_split(args.dataset, "train", preset=args.preset, data_root=args.data_root)
    if tuple(train.images.shape[1:]) != (G.img_channels, *G.img_resolution):
        print(f"quality.py: error: the generator makes {(G.img_channels, *G.img_resolution)} "
              f"images, dataset {args.dataset!r} gives {tuple(train.images.shape[1:])}",
              file=sys.stderr)
        return 2
    reals = quality_reals(train.images, {"quality_reals": args.n}, args.seed)
    t1 = time.perf_counter()
    fakes = sample(G, reals.shape[0], args.seed, dev, args.batch_size)
    t2 = time.perf_counter()
    ev = QualityEvaluator(reals, weights=args.weights, inception=args.inception, device=dev,
                          batch_size=args.batch_size, seed=args.seed)
    t3 = time.perf_counter()
    out = ev(fakes)
    levels = swd(reals, fakes, seed=args.seed)["levels"]
    print(json.dumps({
        "generator": str(args.generator), "sha256": file_sha256(args.generator),
        "dataset": args.dataset, "preset": args.preset, "n_real": int(reals.shape[0]),
        "n_fake": int(fakes.shape[0]), "n_train_slices": int(train.images.shape[0]),
        **{k: v for k, v in out.items() if k != "quality_s"}, "swd_levels": levels,
        "features": ev.weights_info, "device": str(dev),
        "seconds": {"load": t1 - t0, "sample": t2 - t1, "real_features": t3 - t2,
                    "score": out["quality_s"], "total": time.perf_counter() - t0},
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
