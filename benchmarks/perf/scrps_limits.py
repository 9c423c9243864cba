"""What limits SCRPS on ``synth``: the score, the generator, or the inversion and retrieval?

``synth`` knows every test volume's healthy counterpart (the same anatomy and noise without
the lesion's intensities; ``healthy_counterpart``), so the shared A_per score can be fed a
ladder of pseudo-healthy references on the same lesion slices, from the ideal one down to
what SCRPS makes. Prints one JSON object with, for each reference, the pooled pixel AUROC
and ⌈Dice⌉ of its A_per map inside the brain, and how far the reference is from the truth
(mean squared error over the brain, and over the brain without the lesion):

* ``healthy_truth``: the true healthy slice: the ceiling of A_per itself;
* ``generator_best``: G(w*), w* the inversion of the *healthy* slice for ``--budget`` steps
  from the encoder's start: the best this generator shows of the healthy anatomy;
* ``inversion_only``: G(w) of the lesioned slice's own inversion (the preset's steps, no
  retrieval or swap): a reconstruction that is free to copy the lesion;
* ``scrps``: the full pipeline (inversion, retrieval, partial swap), as a run computes it;
* ``zscore``: the sanity baseline's own map on the same slices.

The detector is fitted in ``--workdir`` as ``inversion_init.py`` does (StyleGAN2, encoder
and repository are resumed or skipped when complete). Slices are preprocessed as a run
does: the test volumes and their counterparts are matched to the training histogram.

    python benchmarks/perf/scrps_limits.py --preset smoke --n-slices 4 --budget 5 \\
        --workdir /tmp/limits
    python benchmarks/perf/scrps_limits.py --preset cpu-quick --n-slices 64 --budget 200 \\
        --workdir runs/inversion-init --out limits.json --figure runs/limits
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the sibling script's helpers (benchmarks/perf is not a package)
from inversion_init import draw_row, emit, lesion_slices, method_config, pooled_metrics

REFERENCES = ("healthy_truth", "generator_best", "inversion_only", "scrps")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cpu-quick", help="SCRPS, dataset and preprocessing preset")
    p.add_argument("--n-slices", type=int, default=64, help="lesion test slices (evenly spaced)")
    p.add_argument("--budget", type=int, default=200,
                   help="inversion steps of the healthy slices (generator_best)")
    p.add_argument("--workdir", required=True, type=Path,
                   help="model folder: StyleGAN2, encoder and repository (resumed)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an SCRPS key (JSON value), e.g. --set weights=\\\"random\\\"")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--figure", default=None, type=Path,
                   help="also save <figure>-limits.png: slice, lesion, and each reference "
                        "with its A_per map")
    p.add_argument("--figure-slices", type=int, default=6, help="rows of the figure")
    return p.parse_args(argv)


def paired_test_slices(preset: str):
    """The synth test slices a run evaluates, and the same slices of each volume's healthy
    counterpart, both preprocessed and matched to the training histogram like a run."""
    from adbench import Volume
    from adbench.config import merge_section, preprocess_config
    from adbench.data.cache import finalize_image, iter_preprocessed, to_slices
    from adbench.data.preprocess import preprocess_volume
    from adbench.data.selection import select_slices
    from adbench.data.volume import SliceSet
    from adbench.datasets.synth.generate import healthy_counterpart, parse_subject
    from adbench.plugins import get_registry
    from adbench.runner import _train_slices

    spec = get_registry().dataset("synth")
    ds = spec.factory(**merge_section("dataset 'synth'", spec.default_config, spec.presets, preset))
    pcfg = preprocess_config(preset, {})
    train, reference = _train_slices(ds, "synth", pcfg, strict=True, report=[], progress=False,
                                     limit=None)
    lesioned, healthy = [], []
    for pre in iter_preprocessed(ds, "synth", "test", pcfg, strict=True):
        z = select_slices(pre.brain, pre.lesion, pcfg.slices_test, pcfg.min_brain_fraction)
        if not len(z):
            continue
        lesioned.append(to_slices(pre, finalize_image(pre, reference, pcfg), z))
        gen = healthy_counterpart(ds._params, parse_subject(pre.subject_id)[1])
        twin = preprocess_volume(Volume(image=gen.image, brain_mask=gen.brain, lesion_mask=gen.lesion,
                                        affine=gen.affine, subject_id=pre.subject_id,
                                        meta=dict(gen.meta)), pcfg)
        if not np.array_equal(twin.brain, pre.brain):
            raise SystemExit(f"scrps_limits.py: {pre.subject_id}: the healthy counterpart's brain "
                             "mask differs from the test volume's (synth generator changed?)")
        healthy.append(to_slices(twin, finalize_image(twin, reference, pcfg), z))
    return train, SliceSet.concat(lesioned), SliceSet.concat(healthy)


def mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    d = (a[:, 0].double() - b[:, 0].double()).square()
    return float(d[mask].mean())


def save_figure(path: Path, x, lesion, refs: dict, maps: dict, zmap, n_rows: int) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.unique(np.linspace(0, len(x) - 1, min(n_rows, len(x))).round().astype(int))
    cols = ["slice", "lesion"] + [c for r in REFERENCES for c in (r, f"A_per {r}")] + ["zscore map"]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.45 * len(cols), 1.9 * len(rows)),
                             squeeze=False)
    for r, i in enumerate(rows):
        hi = float(max(maps[k][i].max() for k in REFERENCES))
        panels = [(x[i, 0], "gray", -1, 1), (lesion[i].float(), "gray", 0, 1)]
        for k in REFERENCES:
            panels += [(refs[k][i, 0], "gray", -1, 1), (maps[k][i], "magma", 0, hi)]
        panels.append((zmap[i], "magma", 0, float(zmap[i].max()) or 1.0))
        draw_row(axes, r, panels, cols, fontsize=7)
    fig.tight_layout()
    out = str(path) + "-limits.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from adbench import Context
    from adbench.evaluation.test_set import predict_maps
    from adbench.methods.scrps.detector import SCRPS
    from adbench.methods.scrps.encoder import encode
    from adbench.methods.scrps.inversion import invert
    from adbench.methods.zscore.detector import ZScore
    from adbench.nn.perceptual import PerceptualScore

    cfg = method_config(args.preset, args.set)
    dev = torch.device(args.device)
    t0 = time.perf_counter()
    train, test, twin = paired_test_slices(args.preset)
    sel = lesion_slices(test, args.n_slices)
    x, h, lesion, brain = test.images[sel], twin.images[sel], test.lesion[sel], test.brain[sel]
    t_data = time.perf_counter() - t0
    args.workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(device=args.device, seed=0, workdir=args.workdir)

    t0 = time.perf_counter()
    det = SCRPS(**{**cfg, "inversion_init": "encoder"}).fit(train, ctx)
    zs = ZScore().fit(train, Context(device=args.device, seed=0))
    t_fit = time.perf_counter() - t0
    G = det.generator_
    w = float(cfg["perceptual_weight"])
    loss_fn = det._module("loss", dev) if w > 0 else None
    kw = {"lr": float(cfg["inversion_lr"]), "mse_weight": float(cfg["mse_weight"]),
          "perceptual_weight": w, "batch_size": int(cfg["inversion_batch_size"]),
          "precision": cfg["precision"]}

    def synth(codes):
        with torch.no_grad():
            return torch.cat([G.synthesis(codes[i:i + 32].to(dev), noise_mode="none").clamp(-1, 1).cpu()
                              for i in range(0, len(codes), 32)])

    t0 = time.perf_counter()
    best = invert(G, h, loss_fn, steps=args.budget, init=encode(det.encoder_, h), **kw)
    t_best = time.perf_counter() - t0
    own, _ = det._invert(x.to(dev), ctx)
    refs = {"healthy_truth": h, "generator_best": synth(best), "inversion_only": synth(own)}
    batch = int(cfg["inversion_batch_size"])
    recs: list = []
    t0 = time.perf_counter()
    score = PerceptualScore(weights=cfg["weights"]).to(dev).eval()
    maps = {"scrps": predict_maps(det, x, ctx, score, batch, reconstructions=recs)[0]}
    t_scrps = time.perf_counter() - t0
    refs["scrps"] = torch.cat(recs)[:, None].cpu()     # predict_maps keeps (B, H, W)
    with torch.no_grad():
        for k in ("healthy_truth", "generator_best", "inversion_only"):
            maps[k] = torch.cat([score(x[i:i + 32].to(dev), refs[k][i:i + 32].to(dev)).cpu()
                                 for i in range(0, len(x), 32)])
    zmap = predict_maps(zs, x, Context(device=args.device, seed=0), None, batch)[0]

    outside = brain & ~lesion

    def metrics(m):
        return pooled_metrics(m, lesion, brain)

    out = {
        "dataset": "synth", "preset": args.preset, "n_slices": len(sel),
        "generator_best_steps": args.budget, "protocol_steps": int(cfg["inversion_steps"]),
        "loss": {"mse_weight": float(cfg["mse_weight"]), "perceptual_weight": w},
        "references": {k: {**metrics(maps[k]),
                           "mse_to_truth_brain": mse(refs[k], h, brain),
                           "mse_to_truth_outside_lesion": mse(refs[k], h, outside),
                           "mse_to_input_lesion": mse(refs[k], x, lesion)} for k in REFERENCES},
        "zscore": metrics(zmap),
        "input_vs_truth": {"mse_outside_lesion": mse(x, h, outside), "mse_lesion": mse(x, h, lesion)},
        "seconds": {"data": round(t_data, 2), "fit": round(t_fit, 2),
                    "generator_best_inversion": round(t_best, 2), "scrps_predict": round(t_scrps, 2)},
    }
    if args.figure:
        out["figure"] = save_figure(args.figure, x, lesion, refs, maps, zmap, args.figure_slices)
    emit(out, args.out)
    r = out["references"]
    print("AUROC: " + ", ".join(f"{k} {100 * r[k]['auroc']:.1f}" for k in REFERENCES)
          + f", zscore {100 * out['zscore']['auroc']:.1f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
