"""SCRPS inversion: mean-W start against the encoder's start, on the same test slices.

Prints one JSON object with

* ``curves``: the mean per-step Eq. 1 loss of the test slices (and its 10/50/90th
  percentiles every few steps) for both starts, over ``--budget`` steps (the paper's 2,000,
  or the largest budget that fits; the JSON says which);
* ``steps_to_match`` (losses are those *before* each step, so "final" is the loss after
  ``budget - 1`` updates): per slice, the first step at which the encoder start reaches the final
  loss of the mean start after ``--budget`` steps (mean, median, and the fraction of slices
  that reach it within the budget);
* ``maps``: the pseudo-healthy reconstructions of both protocols (each with its own
  repository, built by its own procedure, as ``fit`` does) scored with the runner's A_per
  (VGG16 blocks 3-5): the per-slice Pearson correlation of the two A_per maps inside the
  brain, and the pixel AUROC and ⌈Dice⌉ of each on the same slices (pooled brain pixels).

The detector is fitted once with ``inversion_init="encoder"`` in ``--workdir`` (StyleGAN2 and
encoder checkpoints are resumed or skipped when complete, so pointing it at a folder that
already holds them trains nothing); the mean-start detector reuses that generator. Test
slices are the lesion slices of the test split (evenly spaced, ``--n-slices``), equalised
and normalised without the training histogram reference (the same input for both starts).

    python benchmarks/perf/inversion_init.py --dataset synth --preset smoke --n-slices 4 \\
        --budget 6 --workdir /tmp/inv-init
    python benchmarks/perf/inversion_init.py --dataset synth --preset cpu-quick --n-slices 64 \\
        --budget 400 --workdir runs/inversion-init --out inversion_init.json \\
        --figure runs/inversion-init/evidence
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="synth")
    p.add_argument("--preset", default="cpu-quick", help="SCRPS, dataset and preprocessing preset")
    p.add_argument("--n-slices", type=int, default=64, help="lesion test slices (evenly spaced)")
    p.add_argument("--budget", type=int, default=2000,
                   help="steps of the loss curves (the paper: 2,000); the mean start's final "
                        "loss at this budget is the target of steps_to_match")
    p.add_argument("--mean-steps", type=int, default=None,
                   help="inversion_steps of the mean-start protocol for the maps (default: the preset's)")
    p.add_argument("--encoder-steps", type=int, default=None,
                   help="inversion_steps of the encoder-start protocol (default: the preset's)")
    p.add_argument("--workdir", required=True, type=Path,
                   help="model folder: StyleGAN2, encoder and repositories (resumed)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an SCRPS key (JSON value), e.g. --set weights=\\\"random\\\"")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--every", type=int, default=None, help="curve sampling interval (default: budget/50)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--figure", default=None, type=Path,
                   help="also save the evidence as PNGs: <figure>-curves.png (loss against "
                        "step, both starts) and <figure>-maps.png (slices, lesion, both "
                        "reconstructions and their A_per maps)")
    p.add_argument("--figure-slices", type=int, default=6, help="rows of the maps figure")
    return p.parse_args(argv)


def method_config(preset: str, sets: list[str]) -> dict:
    from adbench.methods.scrps.plugin import PRESETS
    from adbench.plugins import get_registry
    cfg = {**get_registry().method("scrps").default_config, **PRESETS[preset]}
    for s in sets:
        k, _, v = s.partition("=")
        try:
            cfg[k] = json.loads(v)
        except json.JSONDecodeError:
            cfg[k] = v
    return cfg


def lesion_slices(test, n: int):
    """Evenly spaced test slices that hold lesion pixels (all of them if fewer than n)."""
    has = np.flatnonzero(test.lesion.flatten(1).any(1).numpy())
    if len(has) == 0:
        raise SystemExit("inversion_init.py: the test split has no lesion slices")
    pick = has[np.unique(np.linspace(0, len(has) - 1, min(n, len(has))).round().astype(int))]
    return torch.as_tensor(pick)


def steps_to_match(enc: torch.Tensor, target: torch.Tensor) -> dict:
    """First step where the encoder curve (steps, N) reaches ``target`` (N,), per slice."""
    hit = enc <= target[None]
    reached = hit.any(0)
    first = torch.where(reached, hit.float().argmax(0), torch.full_like(target, -1, dtype=torch.long))
    got = first[reached].double()
    return {"fraction_reached": float(reached.double().mean()),
            "mean": float(got.mean()) if len(got) else None,
            "median": float(got.median()) if len(got) else None,
            "max": int(got.max()) if len(got) else None, "per_slice": first.tolist()}


def curve(losses: torch.Tensor, every: int) -> dict:
    idx = sorted(set(range(0, losses.shape[0], every)) | {losses.shape[0] - 1})
    q = torch.quantile(losses[idx].double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.double), dim=1)
    return {"step": idx, "mean": losses[idx].double().mean(1).tolist(),
            "p10": q[0].tolist(), "p50": q[1].tolist(), "p90": q[2].tolist()}


def pearson_in_brain(a: torch.Tensor, b: torch.Tensor, brain: torch.Tensor) -> list[float]:
    out = []
    for x, y, m in zip(a, b, brain):
        x, y = x[m].double(), y[m].double()
        x, y = x - x.mean(), y - y.mean()
        den = float(x.norm() * y.norm())
        out.append(float((x * y).sum()) / den if den > 0 else float("nan"))
    return out


def pooled_metrics(m: torch.Tensor, lesion: torch.Tensor, brain: torch.Tensor) -> dict:
    """Pixel AUROC and ⌈Dice⌉ of maps ``m`` (N, H, W) over the pooled brain pixels."""
    from adbench.evaluation.metrics import auroc, dice_max
    br = brain.numpy()
    s, y = m.numpy()[br], lesion.numpy()[br]
    return {"auroc": float(auroc(s, y)), "dice_max": float(dice_max(s, y))}


def draw_row(axes, r: int, panels, titles, fontsize: int = 8) -> None:
    """Row ``r`` of a panel figure: (image, cmap, vmin, vmax) per column; titles on row 0."""
    for c, (img, cmap, lo, top) in enumerate(panels):
        a = axes[r, c]
        a.imshow(np.asarray(img, dtype=float), cmap=cmap, vmin=lo, vmax=top)
        a.set_xticks([]), a.set_yticks([])
        if r == 0:
            a.set_title(titles[c], fontsize=fontsize)


def emit(out: dict, path: str | None) -> None:
    """Print the JSON object, and write it to ``path`` too (atomically) when given."""
    text = json.dumps(out, indent=2)
    print(text)
    if path:
        from adbench.io import atomic_write
        atomic_write(path, text + "\n")


def save_figures(stem: Path, curves: dict, x, lesion, recs: dict, maps: dict, n_rows: int) -> list[str]:
    """The loss curves of both starts, and for ``n_rows`` evenly spaced slices: input, lesion,
    each start's pseudo-healthy reconstruction and A_per map (one colour scale per slice)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, c in curves.items():
        ax.plot(c["step"], c["mean"], label=f"{name} start (mean)")
        ax.fill_between(c["step"], c["p10"], c["p90"], alpha=0.2, label=f"{name} start (10-90%)")
    ax.set(xlabel="inversion step", ylabel="inversion loss (Eq. 1)", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [str(stem) + "-curves.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    rows = np.unique(np.linspace(0, len(x) - 1, min(n_rows, len(x))).round().astype(int))
    cols = ["slice", "lesion", "rec. (mean start)", "rec. (encoder start)",
            "A_per (mean start)", "A_per (encoder start)"]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.7 * len(cols), 2.0 * len(rows)),
                             squeeze=False)
    for r, i in enumerate(rows):
        hi = float(max(maps["mean"][i].max(), maps["encoder"][i].max()))
        panels = [(x[i, 0], "gray", -1, 1), (lesion[i].float(), "gray", 0, 1),   # images in [-1, 1]
                  (recs["mean"][i, 0], "gray", -1, 1), (recs["encoder"][i, 0], "gray", -1, 1),
                  (maps["mean"][i], "magma", 0, hi), (maps["encoder"][i], "magma", 0, hi)]
        draw_row(axes, r, panels, cols)
    fig.tight_layout()
    paths.append(str(stem) + "-maps.png")
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from adbench import Context
    from adbench.methods.scrps.detector import SCRPS
    from adbench.methods.scrps.encoder import encode
    from adbench.methods.scrps.inversion import invert
    from adbench.methods.scrps.stylegan2 import save_generator
    from adbench.nn.perceptual import PerceptualScore
    from adbench.runner import load_split

    cfg = method_config(args.preset, args.set)
    dev = torch.device(args.device)
    train = load_split(args.dataset, "train", preset=args.preset)
    test = load_split(args.dataset, "test", preset=args.preset)
    sel = lesion_slices(test, args.n_slices)
    x, lesion, brain = test.images[sel], test.lesion[sel], test.brain[sel]
    args.workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(device=args.device, seed=0, workdir=args.workdir)

    t0 = time.perf_counter()
    enc_det = SCRPS(**{**cfg, "inversion_init": "encoder",
                       "inversion_steps": args.encoder_steps or cfg["inversion_steps"]}).fit(train, ctx)
    t_fit_enc = time.perf_counter() - t0
    gen_path = args.workdir / "generator.pt"
    save_generator(gen_path, enc_det.generator_)
    t0 = time.perf_counter()
    mean_det = SCRPS(**{**cfg, "inversion_init": "mean", "generator": str(gen_path),
                        "inversion_steps": args.mean_steps or cfg["inversion_steps"]}).fit(
        train, Context(device=args.device, seed=0, workdir=args.workdir / "mean"))
    t_fit_mean = time.perf_counter() - t0

    # loss curves over the budget, both starts, the same loss as the preset's inversion
    G, w = enc_det.generator_, float(cfg["perceptual_weight"])
    loss_fn = enc_det._module("loss", dev) if w > 0 else None
    kw = dict(steps=args.budget, lr=float(cfg["inversion_lr"]), mse_weight=float(cfg["mse_weight"]),
              perceptual_weight=w, batch_size=int(cfg["inversion_batch_size"]),
              precision=cfg["precision"], return_losses=True)
    t0 = time.perf_counter()
    _, mean_loss = invert(G, x, loss_fn, **kw)
    t_mean = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, enc_loss = invert(G, x, loss_fn, init=encode(enc_det.encoder_, x), **kw)
    t_enc = time.perf_counter() - t0
    every = args.every or max(1, args.budget // 50)

    # A_per maps of the two protocols' reconstructions
    score = PerceptualScore(weights=cfg["weights"]).to(dev)
    maps, recs = {}, {}
    for name, det in (("mean", mean_det), ("encoder", enc_det)):
        rec = torch.cat([det.reconstruct(x[i:i + 32], ctx) for i in range(0, len(x), 32)])
        recs[name] = rec
        with torch.no_grad():
            maps[name] = torch.cat([score(x[i:i + 32].to(dev), rec[i:i + 32].to(dev)).cpu()
                                    for i in range(0, len(x), 32)])
    agree = pearson_in_brain(maps["mean"], maps["encoder"], brain)

    out = {
        "dataset": args.dataset, "preset": args.preset, "n_slices": len(sel),
        "budget_steps": args.budget, "paper_budget": 2000,
        "budget_note": "the paper's 2,000 steps" if args.budget >= 2000 else
                       f"{args.budget} steps: the largest budget run here, not the paper's 2,000",
        "generator": {"num_ws": G.num_ws, "w_dim": G.w_dim},
        "loss": {"mse_weight": float(cfg["mse_weight"]), "perceptual_weight": w,
                 "lr": float(cfg["inversion_lr"])},
        "curves": {"mean": curve(mean_loss, every), "encoder": curve(enc_loss, every)},
        "final_loss": {"mean": float(mean_loss[-1].mean()), "encoder": float(enc_loss[-1].mean())},
        "start_loss": {"mean": float(mean_loss[0].mean()), "encoder": float(enc_loss[0].mean())},
        "steps_to_match": steps_to_match(enc_loss, mean_loss[-1]),
        "maps": {"protocol_steps": {"mean": int(mean_det.inversion_steps),
                                    "encoder": int(enc_det.inversion_steps)},
                 "pearson_per_slice": {"mean": float(np.nanmean(agree)),
                                       "median": float(np.nanmedian(agree)),
                                       "min": float(np.nanmin(agree)), "values": agree},
                 "mean_init": pooled_metrics(maps["mean"], lesion, brain),
                 "encoder_init": pooled_metrics(maps["encoder"], lesion, brain)},
        "seconds": {"fit_encoder_detector": round(t_fit_enc, 2), "fit_mean_detector": round(t_fit_mean, 2),
                    "curve_mean": round(t_mean, 2), "curve_encoder": round(t_enc, 2)},
        "inversion_info": {"mean": mean_det.inversion_info_, "encoder": enc_det.inversion_info_},
    }
    if args.figure:
        out["figures"] = save_figures(args.figure, out["curves"], x, lesion, recs, maps,
                                      args.figure_slices)
    emit(out, args.out)
    print(f"encoder start reaches the mean start's {args.budget}-step loss in "
          f"{out['steps_to_match']['median']} steps (median)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
