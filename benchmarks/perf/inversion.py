"""SCRPS inversion throughput: batched vs one slice at a time, exact FLOPs, fraction of peak.

Prints one JSON object. For every batch size B (and mode eager / compile) it times
``invert`` on B slices and, on the same slices, inverting them one at a time, and reports
image-steps per second (one image-step = one Adam step of one slice's W+ code: generator
forward + VGG16 perceptual loss + MSE, backward to W+, update). FLOPs per image-step are
counted exactly with ``torch.utils.flop_counter.FlopCounterMode`` on one eager step at B=1
(matmul/convolution FLOPs, forward and backward); the fraction of peak is
achieved FLOP/s ÷ the device's peak (``--peak-tflops``, or a known dense peak for the
device and precision; "unknown" otherwise, e.g. for CPUs).

The generator is randomly initialised at the width of ``--preset`` (throughput does not
depend on trained weights) and the slices are procedural ellipse phantoms at 160x128
(``--dataset NAME`` uses real preprocessed training slices through ``adbench.runner``).

    python benchmarks/perf/inversion.py --preset cpu-quick --batch-sizes 1,8 --steps 3
    python benchmarks/perf/inversion.py --preset paper --device cuda --precision bf16 \\
        --batch-sizes 1,32,128,256 --modes eager,compile --steps 20
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

# Known dense peaks (FLOP/s) per (device-name fragment, precision); fp32 = non-tensor-core FP32.
KNOWN_PEAKS = {("H200", "bf16"): 989e12, ("H100", "bf16"): 989e12, ("A100", "bf16"): 312e12,
               ("H200", "fp32"): 67e12, ("H100", "fp32"): 67e12, ("A100", "fp32"): 19.5e12}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cpu-quick",
                   help="SCRPS preset: generator width and perceptual blocks (smoke|cpu-quick|gpu-quick|paper)")
    p.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes B")
    p.add_argument("--steps", type=int, default=3, help="timed Adam steps per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, caches)")
    p.add_argument("--single", type=int, default=2,
                   help="slices inverted one at a time per B (the first of the B; rate per image)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--modes", default="eager", help="comma-separated: eager, compile")
    p.add_argument("--compile", action="store_true", help="same as --modes eager,compile")
    p.add_argument("--single-mode", default="same", choices=["same", "eager"],
                   help="one-at-a-time baseline in the same mode as the batch, or always eager "
                        "(saves compiling a B=1 graph)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for the precision")
    p.add_argument("--blocks", default=None,
                   help="VGG16 blocks of the loss (default: the preset's; given, the perceptual term is on)")
    p.add_argument("--weights", default="random", help="VGG16 weights (throughput is the same)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--dataset", default=None, help="use real training slices of this dataset")
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p.parse_args(argv)


def phantoms(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 1, 160, 128) brain-like ellipse phantoms in [-1, 1] with background -1."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 160), torch.linspace(-1, 1, 128), indexing="ij")
    a = 0.75 + 0.15 * torch.rand(n, 1, 1, generator=g)
    b = 0.8 + 0.15 * torch.rand(n, 1, 1, generator=g)
    inside = (yy / a) ** 2 + (xx / b) ** 2 < 1
    inner = (yy / (0.6 * a)) ** 2 + (xx / (0.55 * b)) ** 2 < 1
    tex = torch.nn.functional.avg_pool2d(torch.randn(n, 1, 160, 128, generator=g), 9, 1, 4)[:, 0]
    img = torch.where(inner, 0.5, 0.1) + 0.8 * tex
    return torch.where(inside, img.clamp(-0.9, 1), torch.tensor(-1.0))[:, None]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from adbench.methods.scrps.inversion import _sample_losses, invert
    from adbench.methods.scrps.plugin import PRESETS
    from adbench.methods.scrps.stylegan2 import Generator
    from adbench.methods.scrps.stylegan_train import STYLEGAN_PRESETS
    from adbench.nn.perceptual import PerceptualLoss

    dev = torch.device(args.device)
    from adbench.plugins import get_registry
    method = {**get_registry().method("scrps").default_config, **PRESETS[args.preset]}
    sg = STYLEGAN_PRESETS[method["stylegan"]]
    blocks = tuple(int(b) for b in (args.blocks.split(",") if args.blocks else method["perceptual_blocks"]))
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    modes = args.modes.split(",") + (["compile"] if args.compile and "compile" not in args.modes else [])

    torch.manual_seed(0)
    G = Generator(z_dim=sg["z_dim"], w_dim=sg["w_dim"], mapping_layers=sg["mapping_layers"],
                  channel_base=sg["channel_base"], channel_max=sg["channel_max"],
                  channels=sg["channels"], fused_modconv=sg["fused_modconv"]).to(dev)
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping(torch.randn(1000, G.z_dim, device=dev))[:, 0].mean(0))
    # The preset's loss: perceptual_weight 0 is MSE-only (no VGG16), unless --blocks asks for it.
    pw = float(method["perceptual_weight"]) if not args.blocks else max(float(method["perceptual_weight"]), 1.0)
    loss_fn = (PerceptualLoss(weights=args.weights, mode=method["perceptual_mode"], blocks=blocks).to(dev)
               if pw > 0 else None)
    n = max(batch_sizes)
    if args.dataset:
        from adbench.runner import load_split
        images = load_split(args.dataset, "train", preset=args.preset).images
        images = images[torch.linspace(0, len(images) - 1, n).long()]
    else:
        images = phantoms(n)
    images = images.to(dev)

    # Exact FLOPs of one image-step (forward + backward, eager, B = 1).
    from torch.utils.flop_counter import FlopCounterMode
    G.requires_grad_(False)
    ws = G.mapping.w_avg[None, None].expand(1, G.num_ws, G.w_dim).clone().requires_grad_(True)
    feats = loss_fn.features(images[:1]) if loss_fn is not None else None
    with FlopCounterMode(display=False) as fc:
        _sample_losses(G, loss_fn, ws, images[:1], feats, method["mse_weight"], pw).sum().backward()
    flops = int(fc.get_total_flops())

    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"
    if peak is None and dev.type == "cuda":
        peak = next((v for (frag, prec), v in KNOWN_PEAKS.items()
                     if frag in name and prec == args.precision), None)

    def timed(x: torch.Tensor, compile: bool) -> float:
        kw = dict(lr=method["inversion_lr"], mse_weight=method["mse_weight"], perceptual_weight=pw,
                  precision=args.precision, compile=compile)
        invert(G, x, loss_fn, steps=args.warmup, **kw)
        sync(dev)
        t0 = time.perf_counter()
        invert(G, x, loss_fn, steps=args.steps, **kw)
        sync(dev)
        return time.perf_counter() - t0

    # Warm-up outside every timed region: the first invert of a process pays one-off costs
    # (allocator growth, kernel selection, lazy module loading, compilation) that made the
    # first measurement (B = 1) look ~40x slower than "one at a time" at the same width.
    for mode in modes:
        for b in sorted(set(batch_sizes) | {1}):
            timed(images[:b], mode == "compile")
        if mode == "compile" and args.single_mode == "eager":
            timed(images[:1], False)

    results = []
    for mode in modes:
        for b in batch_sizes:
            x = images[:b]
            t_batch = timed(x, mode == "compile")
            k = min(args.single, b)
            single_compiled = mode == "compile" and args.single_mode == "same"
            t_single = sum(timed(x[i:i + 1], single_compiled) for i in range(k))
            rate = b * args.steps / t_batch
            rate1 = k * args.steps / t_single
            results.append({
                "mode": mode, "batch_size": b, "seconds": round(t_batch, 4),
                "img_steps_per_s": round(rate, 3),
                "one_at_a_time_img_steps_per_s": round(rate1, 3), "one_at_a_time_slices": k,
                "one_at_a_time_mode": "compile" if single_compiled else "eager",
                "batched_over_one_at_a_time": round(rate / rate1, 3),
                "achieved_tflops": round(rate * flops / 1e12, 4),
                "fraction_of_peak": round(rate * flops / peak, 5) if peak else "unknown",
            })
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)

    out = {
        "device": str(dev), "device_name": name, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "preset": args.preset, "precision": args.precision,
        "generator": {"channels": G.channels, "num_ws": G.num_ws, "w_dim": G.w_dim},
        "perceptual": ({"weight": pw, "mode": method["perceptual_mode"], "blocks": list(blocks)}
                       if loss_fn is not None else {"weight": 0.0, "blocks": []}),
        "images": args.dataset or "phantoms", "steps": args.steps, "warmup": args.warmup,
        "flops_per_image_step": flops, "gflops_per_image_step": round(flops / 1e9, 3),
        "peak_tflops": round(peak / 1e12, 1) if peak else "unknown",
        "results": results,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        from adbench.io import atomic_write
        atomic_write(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
