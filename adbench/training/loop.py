"""The one training loop of adbench, driven by phases (in the spirit of NVlabs'
``training_loop.py``).

A method says *what* to optimise with a :class:`TrainingTask`: its modules, its optimisers
and a list of :class:`Phase` (a name, the modules it trains, an optimiser, an interval and a
loss function). The loop owns everything else, once:

* the data draw (uniform with replacement, from the ``data`` random stream) and named,
  checkpointed random streams for everything else the task draws;
* per-phase ``requires_grad`` switching, autocast (``precision``), gradient all-reduce over
  ranks and NaN clean-up, the optimiser step;
* EMA copies of modules (half-life in thousands of images, optional ramp-up);
* atomic checkpoints every ``checkpoint_interval`` iterations; resume checked by config and
  seed; ``N`` + resume + ``N`` iterations equal ``2N`` bit for bit on the CPU;
* the JSONL loss log, sample grids, a progress bar; under ``torchrun`` rank 0 alone writes;
* every ``eval_interval`` iterations (0: never), the task's own metrics
  (:meth:`TrainingTask.evaluate`, e.g. a generator's KID/FID) as extra fields of that
  iteration's log record, and their curves over the whole log in ``quality.png``.

Lazy regularisation is a phase with ``interval > 1`` (its loss multiplies by the interval),
a GAN is two networks with two or four phases, a two-stage training (f-AnoGAN's encoder
after its GAN) is two tasks trained one after the other, an autoencoder one phase.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import barrier, broadcast_buffers, broadcast_modules, dist_info, sync_grads
from .records import LossLog, save_curves, save_grid
from .streams import RandomStreams

__all__ = ["Phase", "Step", "EMA", "TrainingTask", "LoopSettings", "train", "work_folder",
           "PRECISIONS", "epoch_iterations"]

PRECISIONS = ("auto", "fp32", "bf16")


def epoch_iterations(iterations: int | None, epochs: int, n_train: int, batch_size: int) -> int:
    """The loop's length for a method that states it in epochs, as papers do: ``iterations``
    when given, else ``epochs`` x floor(N / batch_size) (at least one iteration per epoch)."""
    if iterations is not None:
        return int(iterations)
    return int(epochs) * max(int(n_train) // int(batch_size), 1)


@dataclass
class Step:
    """What a phase's loss function sees of the current iteration."""

    iteration: int                      # 0-based index of this iteration
    nimg: int                           # training images seen before it, over all ranks
    real: torch.Tensor                  # this rank's batch of training images, on the device
    streams: RandomStreams              # named generators (``data`` belongs to the loop)
    track: Callable[[str, torch.Tensor], None]   # record a scalar for the loss log
    shared: dict = field(default_factory=dict)   # scratch shared by the phases of one iteration


@dataclass
class Phase:
    """One kind of optimisation step (NVlabs: Gmain, Greg, Dmain, Dreg).

    name        label, also the key of its loss in the log when ``loss`` returns one.
    modules     what this phase trains: ``requires_grad`` on for them, off for every other
                trained module while its loss is built.
    optimizer   key into :meth:`TrainingTask.optimizers`; phases may share one (Dmain, Dreg).
    loss        Step -> scalar to minimise, already weighted (a lazy regulariser multiplies
                by its interval).
    interval    the phase runs when ``iteration % interval == 0`` (1: every iteration).
    """

    name: str
    modules: tuple[nn.Module, ...]
    optimizer: str
    loss: Callable[[Step], torch.Tensor]
    interval: int = 1


@dataclass
class EMA:
    """``target`` follows ``source``: target <- source + beta (target - source) after every
    iteration, beta = 0.5 ** (batch / half-life images); buffers are copied."""

    target: nn.Module
    source: nn.Module
    half_life_kimg: float
    rampup: float | None = None         # None, or r: half-life <= r * images seen so far

    @torch.no_grad()
    def update(self, done_nimg: int, batch: int) -> None:
        nimg = self.half_life_kimg * 1000
        if self.rampup is not None:
            nimg = min(nimg, done_nimg * self.rampup)
        beta = 0.5 ** (batch / max(nimg, 1e-8))
        for p_ema, p in zip(self.target.parameters(), self.source.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.target.buffers(), self.source.buffers()):
            b_ema.copy_(b)


class TrainingTask:
    """What one training optimises. Subclasses build their modules and optimisers on the
    device in ``__init__`` (from a seed alone) and implement :meth:`phases`."""

    #: random streams the task draws from, besides the loop's ``data`` stream
    streams: tuple[str, ...] = ()

    def modules(self) -> dict[str, nn.Module]:
        """Every module saved in the checkpoint, by name (the names are checkpoint keys)."""
        raise NotImplementedError(f"{type(self).__name__} must implement modules()")

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimisers by name, saved as ``<name>_opt``."""
        raise NotImplementedError(f"{type(self).__name__} must implement optimizers()")

    def phases(self) -> list[Phase]:
        raise NotImplementedError(f"{type(self).__name__} must implement phases()")

    def ema(self) -> list[EMA]:
        return []

    def setup(self, env: "Env") -> None:
        """Called once before the first iteration (compile what should be compiled here)."""

    def augment(self, real: torch.Tensor, step: Step) -> torch.Tensor:
        """The batch as the phases see it (default: unchanged)."""
        return real

    def samples(self) -> torch.Tensor | None:
        """Images (N, C, H, W) in [-1, 1] for the sample grid, or None."""
        return None

    def evaluate(self) -> dict[str, float] | None:
        """Metrics of the current model (rank 0, under ``no_grad``, every ``eval_interval``
        iterations), merged into that iteration's log record and drawn in ``quality.png``.
        Must not draw from the loop's random streams (a resume would not be exact)."""
        return None

    def extra_state(self) -> dict:
        """More tensors or JSON strings to checkpoint (running means, configs)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


@dataclass(frozen=True)
class LoopSettings:
    iterations: int
    batch_size: int                     # global batch, split evenly across ranks
    checkpoint_interval: int = 1000
    log_interval: int = 100
    sample_interval: int = 1000
    precision: str = "auto"             # "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16"
    compile: bool = False               # lets the task torch.compile its forward passes
    checkpoint_name: str = "checkpoint.pt"
    eval_interval: int = 0              # TrainingTask.evaluate() every this many iterations (0: never)
    desc: str = "train"                 # progress-bar label

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"training precision {self.precision!r}: expected one of {PRECISIONS}")
        for k in ("iterations", "batch_size", "checkpoint_interval", "log_interval",
                  "sample_interval"):
            if int(getattr(self, k)) < (0 if k == "iterations" else 1):
                raise ValueError(f"training {k}={getattr(self, k)!r}: expected a positive integer")
        if int(self.eval_interval) < 0:
            raise ValueError(f"training eval_interval={self.eval_interval!r}: expected 0 (off) "
                             "or a positive number of iterations")


@dataclass
class Env:
    """The loop's switches as a task sees them in :meth:`TrainingTask.setup`."""

    device: torch.device
    rank: int
    world: int
    use_bf16: bool
    compile_enabled: bool

    def compile(self, fn):
        return torch.compile(fn) if self.compile_enabled else fn

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)


@contextlib.contextmanager
def work_folder(workdir: Path | str | None, name: str) -> Iterator[Path]:
    """Where a detector's training keeps its checkpoint: ``<workdir>/<name>`` (kept, so an
    interrupted fit resumes), or a temporary folder removed afterwards when ``workdir`` is
    None (``Context.workdir`` None means nothing may be written)."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix=f"adbench-{name}-") as tmp:
            yield Path(tmp)
    else:
        path = Path(workdir) / name
        path.mkdir(parents=True, exist_ok=True)
        yield path


def _local_batch(batch: int, world: int) -> int:
    if batch % world:
        raise ValueError(f"training batch_size {batch} is not divisible by the world size "
                         f"{world}; choose a multiple of the number of processes")
    return batch // world


def train(task: TrainingTask, images: torch.Tensor, settings: LoopSettings, workdir: Path | str,
          *, config: dict, mutable: tuple[str, ...] = (), seed: int = 0,
          device: str | torch.device = "cpu", progress: bool = False,
          log: Callable[[str], None] | None = None) -> dict:
    """Run (or resume, or skip when complete) ``task`` on ``images`` (N, C, H, W).

    config   the whole training config, stored in the checkpoint; a resume with other
             values than those of the ``mutable`` keys is an error.
    workdir  holds ``settings.checkpoint_name``, ``train_log.jsonl`` and
             ``samples_<iteration>.png`` (and ``quality.png`` when ``eval_interval > 0``).
    Returns {"iteration": reached, "trained": iterations run now, "resumed_from": int | None}.
    """
    workdir = Path(workdir)
    dev = torch.device(device)
    rank, world = dist_info()
    say = getattr(log, "info", log) if log is not None and rank == 0 else (lambda msg: None)
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"training images: got {getattr(images, 'shape', type(images))}, "
                         "expected a tensor (N, C, H, W) with N >= 1")
    n = images.shape[0]
    batch = int(settings.batch_size)
    local_batch = _local_batch(batch, world)
    modules, optimizers = task.modules(), task.optimizers()
    ckpt_path = workdir / settings.checkpoint_name
    state = load_checkpoint(ckpt_path, config, seed, mutable) if ckpt_path.exists() else None
    if state is not None and int(state["iteration"]) >= settings.iterations:
        for name, m in modules.items():
            m.load_state_dict(state[name])
        task.load_extra_state(state)
        say(f"{ckpt_path}: complete at iteration {int(state['iteration'])}, not training")
        return {"iteration": int(state["iteration"]), "trained": 0, "resumed_from": None}

    names = ("data",) + tuple(task.streams)
    streams = RandomStreams(names, seed, rank, dev)
    start = 0
    lossed = LossLog(workdir / "train_log.jsonl")
    if state is not None:
        for name, m in modules.items():
            m.load_state_dict(state[name])
        for name, opt in optimizers.items():
            opt.load_state_dict(state[f"{name}_opt"])
        task.load_extra_state(state)
        start = int(state["iteration"])
        if world == 1 and int(state["world_size"]) == 1:
            streams.load_state(state)
        else:  # other ranks' streams are not saved: reseed every rank from (seed, rank, iteration)
            streams = RandomStreams(names, seed, rank, dev, iteration=start)
        lossed = LossLog(workdir / "train_log.jsonl", resume_at=start)
        say(f"{ckpt_path}: resuming at iteration {start}")
    broadcast_modules(list(modules.values()))

    data = images.float()
    data = data.to(dev) if dev.type == "cuda" and data.numel() * 4 < 2 ** 31 else data
    env = Env(device=dev, rank=rank, world=world, compile_enabled=bool(settings.compile),
              use_bf16=settings.precision == "bf16" or (settings.precision == "auto"
                                                         and dev.type == "cuda"))
    task.setup(env)
    phases, emas = task.phases(), task.ema()
    trained = {id(m): m for p in phases for m in p.modules}
    # values tracked since the last log record; a checkpoint inside a log interval saves them
    # so that the first record after a resume averages the whole interval
    stats: dict[str, list[torch.Tensor]] = {
        k: list(v.to(dev).unbind()) for k, v in (state or {}).get("log_pending", {}).items()}

    def track(name: str, value: torch.Tensor) -> None:
        stats.setdefault(name, []).append(value.detach().float().to(dev))

    from tqdm.auto import tqdm

    bar = tqdm(total=settings.iterations, initial=start, disable=not progress or rank != 0,
               desc=settings.desc, unit="it")
    t_last, it_last = time.perf_counter(), start
    for it in range(start, settings.iterations):
        idx = torch.randint(n, (local_batch,), generator=streams["data"])
        real = data[idx.to(data.device)].to(dev, non_blocking=True)
        step = Step(iteration=it, nimg=it * batch, real=real, streams=streams, track=track)
        step.real = task.augment(real, step)
        for phase in phases:
            if it % phase.interval:
                continue
            for m in trained.values():
                m.requires_grad_(any(m is p for p in phase.modules))
            with env.autocast() if env.use_bf16 else nullcontext():
                loss = phase.loss(step)
            opt = optimizers[phase.optimizer]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sync_grads(list(phase.modules))
            opt.step()
        broadcast_buffers(list(modules.values()))
        done = it + 1
        for e in emas:
            e.update(done * batch, batch)
        bar.update(1)

        evaluating = settings.eval_interval > 0 and done % settings.eval_interval == 0
        if done % settings.log_interval == 0 or done == settings.iterations or evaluating:
            now = time.perf_counter()
            rec = {"iteration": done, "kimg": done * batch / 1000,
                   **{k: float(torch.stack(v).mean()) for k, v in sorted(stats.items())},
                   "sec_per_iter": (now - t_last) / max(done - it_last, 1),
                   "images_per_s": batch * (done - it_last) / max(now - t_last, 1e-9)}
            stats.clear()
            metrics = {}
            if evaluating and rank == 0:
                with torch.no_grad():
                    metrics = task.evaluate() or {}
                rec.update({k: float(v) for k, v in metrics.items()})
            lossed.append(rec, write=rank == 0)
            if metrics:
                save_curves(lossed.records, sorted(metrics), workdir / "quality.png")
                now = time.perf_counter()  # the evaluation's time is not training time
            t_last, it_last = now, done
            if rank == 0:
                say(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in rec.items()))
                bar.set_postfix({k: f"{v:.3f}" for k, v in rec.items() if k.startswith("loss")})
        if rank == 0 and (done % settings.sample_interval == 0 or done == settings.iterations):
            with torch.no_grad():
                img = task.samples()
            if img is not None:
                save_grid(img, workdir / f"samples_{done:06d}.png")
        if done % settings.checkpoint_interval == 0 or done == settings.iterations:
            if rank == 0:
                payload = {**{k: m.state_dict() for k, m in modules.items()},
                           **{f"{k}_opt": o.state_dict() for k, o in optimizers.items()},
                           "iteration": done, "config": json.dumps(config), "seed": int(seed),
                           "world_size": world, **streams.state(),
                           "log_pending": {k: torch.stack(v).cpu() for k, v in stats.items()},
                           **task.extra_state()}
                save_checkpoint(ckpt_path, payload)
            barrier()
    bar.close()
    return {"iteration": settings.iterations, "trained": settings.iterations - start,
            "resumed_from": start if state is not None else None}
