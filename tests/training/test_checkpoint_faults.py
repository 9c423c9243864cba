"""A damaged training checkpoint never stops a training: it is moved aside with a warning
naming it, and the training starts again; the result equals an undisturbed training."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from adbench.io import checksum_path
from adbench.training import LoopSettings, Phase, TrainingTask, load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")

CKPT = "checkpoint.pt"
CONFIG = {"lr": 0.05, "iterations": 6}


class Regression(TrainingTask):
    """A linear map fitted by SGD on random targets; its initial weights come from a seed."""

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.net = nn.Linear(6, 1)
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=CONFIG["lr"])

    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"net": self.opt}

    def phases(self):
        return [Phase("fit", (self.net,), "net", self._loss)]

    def _loss(self, step):
        return (self.net(step.real.flatten(1)) - step.real.mean()).square().mean()


def _run(workdir, iterations=6):
    task = Regression()
    images = torch.randn(8, 1, 2, 3, generator=torch.Generator().manual_seed(0))
    out = train(task, images, LoopSettings(iterations=iterations, batch_size=2, checkpoint_interval=2,
                                           log_interval=2, sample_interval=100),
                workdir, config=dict(CONFIG, iterations=iterations), mutable=("iterations",), seed=0)
    return out, {k: v.clone() for k, v in task.net.state_dict().items()}


def _damage(path, how):
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(raw[: len(raw) // 3]))
    elif how == "one byte flipped":   # still a loadable zip: only the sidecar can tell
        raw[len(raw) // 2] ^= 0x01
        path.write_bytes(bytes(raw))
    else:   # an old checkpoint without sidecar, truncated
        checksum_path(path).unlink()
        path.write_bytes(bytes(raw[:50]))


@pytest.mark.parametrize("how", ["truncated", "one byte flipped", "no sidecar, truncated"])
def test_a_damaged_checkpoint_is_moved_aside_and_training_restarts(tmp_path, caplog, how):
    _, expected = _run(tmp_path / "ref")
    work = tmp_path / "work"
    _run(work, iterations=4)                      # an interrupted training: checkpoint at 4
    ckpt = work / CKPT
    assert checksum_path(ckpt).is_file()
    _damage(ckpt, how)
    with caplog.at_level(logging.WARNING, logger="adbench"):
        out, got = _run(work)                     # the same command again
    assert out == {"iteration": 6, "trained": 6, "resumed_from": None}
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(ckpt) in warning and "starts again from iteration 0" in warning
    aside = sorted(p.name.split(".corrupt-")[0] for p in work.glob("*.corrupt-*"))
    assert aside == (["checkpoint.pt"] if how.startswith("no sidecar")
                     else ["checkpoint.pt", "checkpoint.pt.sha256"])   # kept, for a look
    assert int(load_checkpoint(ckpt, dict(CONFIG), 0, ("iterations",))["iteration"]) == 6


def test_an_intact_checkpoint_resumes_with_no_warning(tmp_path, caplog):
    _, expected = _run(tmp_path / "ref")
    _run(tmp_path / "work", iterations=4)
    with caplog.at_level(logging.WARNING, logger="adbench"):
        out, got = _run(tmp_path / "work")
    assert out["resumed_from"] == 4 and not caplog.records
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_load_checkpoint_of_a_missing_file_is_none(tmp_path):
    assert load_checkpoint(tmp_path / CKPT, CONFIG, 0) is None


def test_a_damaged_loss_log_is_moved_aside_and_restarted(tmp_path, caplog):
    from adbench.training.records import LossLog

    log = tmp_path / "train_log.jsonl"
    log.write_text('{"iteration": 1, "loss": 0.5}\n{"iteration": 2, "lo')   # cut mid-record
    with caplog.at_level("WARNING"):
        resumed = LossLog(log, resume_at=2)
    assert resumed.records == []
    assert not log.exists() and list(tmp_path.glob("train_log.jsonl.corrupt-*"))
    assert "train_log.jsonl" in caplog.text
    resumed.append({"iteration": 3, "loss": 0.25})
    assert log.read_text() == '{"iteration": 3, "loss": 0.25}\n'
