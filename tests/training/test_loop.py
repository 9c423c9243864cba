"""adbench.training.loop on tiny tasks: bitwise resume, lazy phases, requires_grad switching,
EMA closed forms, checkpoint checks, the JSONL log, settings validation, config digests."""
from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch
from payloads import assert_same_payload
from torch import nn

from adbench.training import (
    EMA,
    CheckpointError,
    LoopSettings,
    Phase,
    TrainingTask,
    config_digest,
    train,
)
from adbench.training.distributed import sync_grads
from adbench.training.loop import _local_batch

pytestmark = pytest.mark.usefixtures("one_thread")

CKPT = "checkpoint.pt"
TIMING = ("sec_per_iter", "images_per_s")      # wall-clock fields: never reproducible
BATCH = 4


def images(n: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 2, 3, generator=torch.Generator().manual_seed(seed))


def _init(module: nn.Module, g: torch.Generator, scale: float = 0.3) -> nn.Module:
    """Initialise from a private generator (no global random state)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


class Interrupted(RuntimeError):
    """Stands for a killed process."""


class AutoencoderTask(TrainingTask):
    """One network, one phase: a linear denoising autoencoder on (1, 2, 3) images, Adam, an
    EMA copy, and a task random stream (the input noise)."""

    streams = ("noise",)

    def __init__(self, seed: int = 0, crash_at: int | None = None, half_life_kimg: float = 0.004,
                 rampup: float | None = None):
        g = torch.Generator().manual_seed(seed)
        self.net = _init(nn.Sequential(nn.Flatten(), nn.Linear(6, 2), nn.Linear(2, 6)), g)
        self.net_ema = copy.deepcopy(self.net).requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=0.01, betas=(0.5, 0.9))
        self.crash_at, self.half_life_kimg, self.rampup = crash_at, half_life_kimg, rampup
        self.losses: list[tuple[int, float]] = []      # (iteration, loss) as tracked
        self.before: list[torch.Tensor] = []          # flat weights at the start of each iteration

    def modules(self):
        return {"net": self.net, "net_ema": self.net_ema}

    def optimizers(self):
        return {"net": self.opt}

    def ema(self):
        return [EMA(self.net_ema, self.net, self.half_life_kimg, self.rampup)]

    def phases(self):
        return [Phase("rec", (self.net,), "net", self._loss)]

    def _loss(self, step):
        if step.iteration == self.crash_at:
            raise Interrupted(f"killed at iteration {step.iteration}")
        self.before.append(nn.utils.parameters_to_vector(self.net.parameters()).detach().clone())
        noise = 0.1 * torch.randn(step.real.shape, generator=step.streams["noise"])
        loss = (self.net(step.real + noise).view_as(step.real) - step.real).square().mean()
        step.track("loss", loss)
        self.losses.append((step.iteration, loss.item()))
        return loss


class TwoPhaseTask(TrainingTask):
    """Two networks a and b: ``main`` trains a every iteration on a loss that also runs b,
    ``reg`` trains b lazily (interval 3) from its own optimiser."""

    streams = ("z",)

    def __init__(self, seed: int = 0, crash_at: int | None = None, interval: int = 3):
        g = torch.Generator().manual_seed(seed)
        self.a = _init(nn.Linear(6, 1), g)
        self.b = _init(nn.Linear(6, 1), g)
        self.opt_a = torch.optim.Adam(self.a.parameters(), lr=0.02)
        self.opt_b = torch.optim.SGD(self.b.parameters(), lr=0.05, momentum=0.9)
        self.crash_at, self.interval = crash_at, interval
        self.calls: dict[str, list[int]] = {"main": [], "reg": []}
        self.grad_flags: list[tuple[str, bool, bool]] = []   # (phase, a trainable, b trainable)

    def modules(self):
        return {"a": self.a, "b": self.b}

    def optimizers(self):
        return {"a": self.opt_a, "b": self.opt_b}

    def phases(self):
        return [Phase("main", (self.a,), "a", self._main),
                Phase("reg", (self.b,), "b", self._reg, interval=self.interval)]

    def _flags(self, name):
        self.grad_flags.append((name, all(p.requires_grad for p in self.a.parameters()),
                                all(p.requires_grad for p in self.b.parameters())))
        assert all(p.requires_grad == self.grad_flags[-1][1] for p in self.a.parameters())
        assert all(p.requires_grad == self.grad_flags[-1][2] for p in self.b.parameters())

    def _main(self, step):
        if step.iteration == self.crash_at:
            raise Interrupted(f"killed at iteration {step.iteration}")
        self._flags("main")
        self.calls["main"].append(step.iteration)
        x = step.real.flatten(1)
        z = torch.randn(x.shape, generator=step.streams["z"])
        loss = (self.a(x) - self.b(z)).square().mean()
        step.track("loss_main", loss)
        return loss

    def _reg(self, step):
        self._flags("reg")
        self.calls["reg"].append(step.iteration)
        loss = self.b(step.real.flatten(1)).square().mean()
        step.track("reg", loss)
        return loss * self.interval


TASKS = {"autoencoder": AutoencoderTask, "two_phase": TwoPhaseTask}


def _settings(iterations, ckpt=2, log=2, **kw):
    return LoopSettings(iterations=iterations, batch_size=BATCH, checkpoint_interval=ckpt,
                        log_interval=log, sample_interval=1000, **kw)


def _config(iterations, **kw):
    return {"lr": 0.01, "width": 2, "iterations": iterations, **kw}


def _train(task, workdir, iterations, seed=3, **kw):
    return train(task, images(), _settings(iterations, **kw), workdir,
                 config=_config(iterations), mutable=("iterations",), seed=seed)


def _log(workdir):
    return [json.loads(line) for line in (workdir / "train_log.jsonl").read_text().splitlines()]


def _untimed(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def _load(workdir):
    return torch.load(workdir / CKPT, weights_only=True)


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_n_plus_resume_plus_n_equals_2n_bit_for_bit(tmp_path, kind):
    full, split = tmp_path / "full", tmp_path / "split"
    out = _train(TASKS[kind](), full, 8)
    assert out == {"iteration": 8, "trained": 8, "resumed_from": None}
    assert _train(TASKS[kind](), split, 4)["trained"] == 4
    half = _load(split)
    out = _train(TASKS[kind](), split, 8)
    assert out == {"iteration": 8, "trained": 4, "resumed_from": 4}
    a, b = _load(full), _load(split)
    assert_same_payload(a, b)              # weights, optimiser states, RNG states, config, iteration
    assert int(a["iteration"]) == 8 and {k for k in a if k.startswith("rng_")} == {
        "rng_data", "rng_" + TASKS[kind].streams[0]}
    # training moved the weights and the random streams after the first half
    first = next(iter(TASKS[kind]().modules()))
    assert any(not torch.equal(a[first][k], half[first][k]) for k in a[first])
    assert not torch.equal(a["rng_data"], half["rng_data"])
    assert _untimed(_log(full)) == _untimed(_log(split))
    assert [r["iteration"] for r in _log(split)] == [2, 4, 6, 8]


@pytest.mark.parametrize("kind", sorted(TASKS))
@pytest.mark.parametrize("crash_at", [4, 5, 7])
def test_interrupted_run_resumes_from_last_checkpoint_bit_for_bit(tmp_path, kind, crash_at):
    # checkpoints every 3 iterations, log records every 2: the crash leaves records written
    # after the last checkpoint, and the checkpoint falls inside a log interval
    kw = {"ckpt": 3, "log": 2}
    full, split = tmp_path / "full", tmp_path / "split"
    ref = TASKS[kind]()
    _train(ref, full, 9, **kw)
    with pytest.raises(Interrupted):
        _train(TASKS[kind](crash_at=crash_at), split, 9, **kw)
    last = crash_at // 3 * 3
    assert int(_load(split)["iteration"]) == last
    assert [r["iteration"] for r in _log(split)] == list(range(2, crash_at + 1, 2))
    resumed = TASKS[kind]()
    out = _train(resumed, split, 9, **kw)
    assert out == {"iteration": 9, "trained": 9 - last, "resumed_from": last}
    assert_same_payload(_load(full), _load(split))
    log = _log(split)
    assert [r["iteration"] for r in log] == [2, 4, 6, 8, 9]       # no duplicates, none lost
    assert _untimed(log) == _untimed(_log(full))
    if kind == "two_phase":   # the lazy phase keeps its schedule across the resume
        assert resumed.calls["reg"] == [i for i in (0, 3, 6) if i >= last]
        assert resumed.calls["main"] == list(range(last, 9))


def test_checkpoint_without_pending_log_values_still_resumes(tmp_path):
    # checkpoints written before ``log_pending`` existed: the weights resume bit for bit, only
    # the first log record after the resume averages fewer iterations
    full, split = tmp_path / "full", tmp_path / "split"
    _train(AutoencoderTask(), full, 6, ckpt=3, log=2)
    with pytest.raises(Interrupted):
        _train(AutoencoderTask(crash_at=4), split, 6, ckpt=3, log=2)
    state = _load(split)
    assert set(state["log_pending"]) == {"loss"} and state["log_pending"]["loss"].shape == (1,)
    del state["log_pending"]
    torch.save(state, split / CKPT)
    _train(AutoencoderTask(), split, 6, ckpt=3, log=2)
    a, b = _load(full), _load(split)
    for key in ("net", "net_ema", "net_opt", "rng_data", "rng_noise"):
        assert_same_payload(a[key], b[key], key)
    assert [r["iteration"] for r in _log(split)] == [2, 4, 6]


def test_lazy_phase_runs_at_multiples_of_its_interval(tmp_path):
    task = TwoPhaseTask(interval=3)
    _train(task, tmp_path / "run", 10, ckpt=4)
    assert task.calls["main"] == list(range(10))
    assert task.calls["reg"] == [0, 3, 6, 9]
    # resuming at 4 (a checkpoint, not a multiple of 3) keeps the schedule of the iteration index
    task = TwoPhaseTask(interval=3)
    _train(task, tmp_path / "part", 4, ckpt=4)
    assert task.calls["reg"] == [0, 3]
    task = TwoPhaseTask(interval=3)
    _train(task, tmp_path / "part", 10, ckpt=4)
    assert task.calls["reg"] == [6, 9] and task.calls["main"] == list(range(4, 10))
    # an interval beyond the run: the phase runs once, at iteration 0
    task = TwoPhaseTask(interval=100)
    _train(task, tmp_path / "once", 5)
    assert task.calls["reg"] == [0]


def test_only_the_running_phase_modules_require_grad(tmp_path):
    task = TwoPhaseTask(interval=2)
    _train(task, tmp_path / "run", 4)
    assert task.grad_flags == [("main", True, False), ("reg", False, True),
                               ("main", True, False),
                               ("main", True, False), ("reg", False, True),
                               ("main", True, False)]
    # a module outside every phase (the EMA copy) is never switched on
    ae = AutoencoderTask()
    _train(ae, tmp_path / "ae", 2)
    assert not any(p.requires_grad for p in ae.net_ema.parameters())


def test_ema_follows_the_closed_form_recursion(tmp_path):
    # half-life 4 images with batch 4: beta = 0.5 ** (4 / 4) = 0.5 after every iteration;
    # ema_T = beta^T p_0 + (1 - beta) sum_t beta^(T - t) p_t, p_t the weights after t iterations
    task = AutoencoderTask(half_life_kimg=0.004)
    _train(task, tmp_path / "run", 6)
    vec = nn.utils.parameters_to_vector
    p = task.before + [vec(task.net.parameters()).detach()]       # p_0 .. p_6
    T, beta = 6, 0.5
    want = beta ** T * p[0] + (1 - beta) * sum(beta ** (T - t) * p[t] for t in range(1, T + 1))
    torch.testing.assert_close(vec(task.net_ema.parameters()), want, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(want, p[T])           # the EMA really lags behind
    # and the EMA weights are what the checkpoint holds
    ckpt = _load(tmp_path / "run")
    for k, v in task.net_ema.state_dict().items():
        assert torch.equal(ckpt["net_ema"][k], v)


def test_ema_update_beta_rampup_and_buffers():
    src, tgt = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        src.weight.fill_(2.0), src.bias.fill_(-1.0), src.running_mean.fill_(5.0)
        tgt.weight.fill_(0.0), tgt.bias.fill_(0.0)
    # no ramp-up: half-life 1 kimg, batch 250 -> beta = 0.5 ** 0.25
    ema = EMA(tgt, src, half_life_kimg=1.0)
    ema.update(done_nimg=250, batch=250)
    beta = 0.5 ** 0.25
    torch.testing.assert_close(tgt.weight, torch.full((3,), 2.0 * (1 - beta)))
    torch.testing.assert_close(tgt.bias, torch.full((3,), -1.0 * (1 - beta)))
    assert torch.equal(tgt.running_mean, src.running_mean)          # buffers copied
    assert torch.equal(tgt.num_batches_tracked, src.num_batches_tracked)
    # ramp-up r caps the half-life at r * images seen: 0.5 * 8 = 4 images, batch 4 -> beta 0.5
    # (the 1000 kimg half-life would give beta ~ 1)
    tgt.weight.data.fill_(0.0)
    EMA(tgt, src, half_life_kimg=1000.0, rampup=0.5).update(done_nimg=8, batch=4)
    torch.testing.assert_close(tgt.weight, torch.full((3,), 1.0))
    # once r * images seen exceeds it, the half-life itself rules: 1 kimg, batch 1000 -> 0.5
    tgt.weight.data.fill_(0.0)
    EMA(tgt, src, half_life_kimg=1.0, rampup=0.5).update(done_nimg=10 ** 6, batch=1000)
    torch.testing.assert_close(tgt.weight, torch.full((3,), 1.0))
    # half-life 0: the target is the source
    tgt.weight.data.fill_(0.0)
    EMA(tgt, src, half_life_kimg=0.0).update(done_nimg=4, batch=4)
    assert torch.equal(tgt.weight, src.weight)


def test_ema_rampup_in_the_loop(tmp_path):
    # rampup 0.5, batch 4: after iteration t the half-life is 0.5 * 4 t = 2 t images and
    # beta_t = 0.5 ** (4 / (2 t)) = 0.5 ** (2 / t)
    task = AutoencoderTask(half_life_kimg=1000.0, rampup=0.5)
    _train(task, tmp_path / "run", 5)
    vec = nn.utils.parameters_to_vector
    p = task.before + [vec(task.net.parameters()).detach()]
    ema = p[0]
    for t in range(1, 6):
        beta = 0.5 ** (2 / t)
        ema = p[t] + beta * (ema - p[t])
    torch.testing.assert_close(vec(task.net_ema.parameters()), ema, rtol=1e-6, atol=1e-7)


def test_checkpoint_settings_check_mutable_keys_and_complete_runs(tmp_path):
    work = tmp_path / "run"
    task = AutoencoderTask()
    _train(task, work, 4)
    path = work / CKPT
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*'lr': \\(0.01, 0.5\\)"):
        train(AutoencoderTask(), images(), _settings(6), work, config=_config(6, lr=0.5),
              mutable=("iterations",), seed=3)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*'extra'"):
        train(AutoencoderTask(), images(), _settings(6), work, config=_config(6, extra=1),
              mutable=("iterations",), seed=3)
    with pytest.raises(CheckpointError, match="'seed': \\(3, 4\\)"):
        _train(AutoencoderTask(), work, 6, seed=4)
    # iterations is not mutable here: a longer run is refused too
    with pytest.raises(CheckpointError, match="'iterations': \\(4, 6\\)"):
        train(AutoencoderTask(), images(), _settings(6), work, config=_config(6), seed=3)
    assert int(_load(work)["iteration"]) == 4        # nothing was overwritten by the refusals
    # complete: returns at once, loads the weights, writes nothing
    before = path.stat().st_mtime_ns, (work / "train_log.jsonl").read_bytes()
    again = AutoencoderTask()
    assert _train(again, work, 4) == {"iteration": 4, "trained": 0, "resumed_from": None}
    assert _train(AutoencoderTask(), work, 3)["trained"] == 0    # fewer iterations: complete too
    assert (path.stat().st_mtime_ns, (work / "train_log.jsonl").read_bytes()) == before
    assert again.losses == []
    for name, m in task.modules().items():
        assert_same_payload(m.state_dict(), again.modules()[name].state_dict(), name)
    # a changed mutable key (iterations) resumes
    assert _train(AutoencoderTask(), work, 6) == {"iteration": 6, "trained": 2, "resumed_from": 4}
    assert int(_load(work)["iteration"]) == 6


def test_log_has_one_record_per_interval_with_tracked_means(tmp_path):
    task = TwoPhaseTask(interval=2)
    _train(task, tmp_path / "run", 7, log=3, ckpt=10)
    log = _log(tmp_path / "run")
    assert [r["iteration"] for r in log] == [3, 6, 7]        # and the final iteration
    assert [r["kimg"] for r in log] == [3 * BATCH / 1000, 6 * BATCH / 1000, 7 * BATCH / 1000]
    assert set(log[0]) == {"iteration", "kimg", "loss_main", "reg", *TIMING}
    assert all(r["sec_per_iter"] > 0 and r["images_per_s"] > 0 for r in log)
    ae = AutoencoderTask()
    _train(ae, tmp_path / "ae", 7, log=3, ckpt=10)
    log = _log(tmp_path / "ae")
    tracked = dict(ae.losses)
    for rec, its in zip(log, ([0, 1, 2], [3, 4, 5], [6])):
        want = sum(tracked[i] for i in its) / len(its)
        assert rec["loss"] == pytest.approx(want, rel=1e-6)
    # a phase that did not run in an interval leaves its key out of that record
    lazy = TwoPhaseTask(interval=4)
    _train(lazy, tmp_path / "lazy", 6, log=2, ckpt=10)
    assert ["reg" in r for r in _log(tmp_path / "lazy")] == [True, False, True]


def test_samples_are_written_at_the_sample_interval(tmp_path):
    from PIL import Image

    class WithSamples(AutoencoderTask):
        def samples(self):
            return torch.tensor([-1.0, 1.0, 0.5]).view(3, 1, 1, 1).expand(3, 1, 2, 3)

    settings = LoopSettings(iterations=5, batch_size=BATCH, sample_interval=2)
    train(WithSamples(), images(), settings, tmp_path, config={}, seed=0)
    assert sorted(p.name for p in tmp_path.glob("samples_*.png")) == [
        "samples_000002.png", "samples_000004.png", "samples_000005.png"]
    grid = torch.from_numpy(np.array(Image.open(tmp_path / "samples_000005.png")))
    # 3 tiles of 2x3 in a 2x2 grid, row-major, the empty tile black; [-1, 1] -> [0, 255]
    want = torch.zeros(4, 6, dtype=torch.uint8)
    want[:2, :3], want[:2, 3:], want[2:, :3] = 0, 255, 191
    assert torch.equal(grid, want)


def test_precision_reaches_the_task_and_autocast(tmp_path):
    seen = []

    class Probe(AutoencoderTask):
        def setup(self, env):
            seen.append((env.use_bf16, env.device.type, env.world, env.rank))

        def _loss(self, step):
            seen.append(torch.is_autocast_enabled("cpu"))
            return super()._loss(step)

    for precision, bf16 in (("auto", False), ("fp32", False), ("bf16", True)):
        seen.clear()
        train(Probe(), images(), _settings(1, precision=precision), tmp_path / precision,
              config={}, seed=0)
        assert seen == [(bf16, "cpu", 1, 0), bf16], precision


def test_loop_settings_and_inputs_are_validated(tmp_path):
    with pytest.raises(ValueError, match="precision 'fp16'.*auto"):
        LoopSettings(iterations=1, batch_size=2, precision="fp16")
    with pytest.raises(ValueError, match="batch_size=0"):
        LoopSettings(iterations=1, batch_size=0)
    for key in ("checkpoint_interval", "log_interval", "sample_interval"):
        with pytest.raises(ValueError, match=f"training {key}=0"):
            LoopSettings(iterations=1, batch_size=2, **{key: 0})
    with pytest.raises(ValueError, match="iterations=-1"):
        LoopSettings(iterations=-1, batch_size=2)
    assert LoopSettings(iterations=0, batch_size=1).iterations == 0    # zero iterations is fine
    with pytest.raises(ValueError, match=r"training images: got torch.Size\(\[4, 6\]\)"):
        train(AutoencoderTask(), torch.zeros(4, 6), _settings(1), tmp_path, config={})
    with pytest.raises(ValueError, match="training images"):
        train(AutoencoderTask(), torch.zeros(0, 1, 2, 3), _settings(1), tmp_path, config={})
    assert not list(tmp_path.iterdir())


def test_local_batch_splits_evenly_across_ranks():
    assert _local_batch(8, 1) == 8 and _local_batch(8, 4) == 2 and _local_batch(6, 3) == 2
    with pytest.raises(ValueError, match="batch_size 6 is not divisible by the world size 4"):
        _local_batch(6, 4)


def test_sync_grads_cleans_non_finite_gradients():
    m = nn.Linear(3, 1, bias=False)
    m.weight.grad = torch.tensor([[float("nan"), float("inf"), -float("inf")]])
    sync_grads([m])
    assert torch.equal(m.weight.grad, torch.tensor([[0.0, 1e5, -1e5]]))
    sync_grads([nn.Linear(2, 2)])            # no gradients at all: nothing to do


def test_config_digest_ignores_only_mutable_keys():
    cfg = {"lr": 0.01, "iterations": 100, "betas": [0.0, 0.99], "log_interval": 10}
    mutable = ("iterations", "log_interval")
    d = config_digest(cfg, mutable)
    assert isinstance(d, str) and len(d) == 12
    assert config_digest({**cfg, "iterations": 5, "log_interval": 1}, mutable) == d
    assert config_digest(dict(reversed(list(cfg.items()))), mutable) == d      # key order
    assert config_digest({**cfg, "betas": (0.0, 0.99)}, mutable) == d          # JSON view
    assert config_digest({**cfg, "lr": 0.02}, mutable) != d
    assert config_digest({**cfg, "betas": [0.0, 0.9]}, mutable) != d
    assert config_digest({**cfg, "new": None}, mutable) != d
    assert config_digest({k: v for k, v in cfg.items() if k != "lr"}, mutable) != d
    assert config_digest(cfg) != d                                    # iterations now counts
    assert config_digest(cfg) != config_digest({**cfg, "iterations": 5})
