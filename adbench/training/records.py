"""What a training writes beside its checkpoint: the JSONL loss log, sample grids and the
curves of the task's metrics."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from adbench.io import atomic_path, atomic_write, quarantine, strict_json

__all__ = ["LossLog", "save_grid", "save_curves"]


class LossLog:
    """``train_log.jsonl``: one JSON record per log interval, rewritten atomically.

    On resume the records after the checkpoint's iteration are dropped (they were written by
    the interrupted run after its last checkpoint and will be written again).
    """

    def __init__(self, path: Path, resume_at: int | None = None):
        self.path = Path(path)
        self.records: list[dict] = []
        if resume_at is not None and self.path.exists():
            try:
                self.records = [r for r in map(json.loads, self.path.read_text().splitlines())
                                if r["iteration"] <= resume_at]
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                # a damaged log must not stop a resume: the weights are in the checkpoint
                quarantine(self.path, f"unreadable loss log ({type(exc).__name__}: {exc})",
                           "the loss log restarts at the checkpoint's iteration")
                self.records = []

    def append(self, record: dict, write: bool = True) -> None:
        self.records.append(record)
        if write:
            atomic_write(self.path, "".join(strict_json(r) + "\n" for r in self.records))


def save_grid(img: torch.Tensor, path: Path) -> None:
    """Tile (N, 1, H, W) images in [-1, 1] into a near-square grid PNG (atomic)."""
    from PIL import Image

    n, _, h, w = img.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.zeros((rows * h, cols * w), dtype=np.uint8)
    arr = ((img[:, 0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    for k in range(n):
        r, c = divmod(k, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = arr[k]
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def save_curves(records: list[dict] | dict[str, list[dict]], keys: list[str], path: Path,
                x: str = "iteration") -> None:
    """One panel per key of ``keys``: its value against ``x`` (a record key, e.g.
    ``iteration`` or ``kimg``), over the log records that have both (matplotlib, Agg backend;
    atomic PNG). ``records`` is one run's log, or several runs' logs by label (one curve each,
    with a legend). Panels sit in one row up to four, then wrap; a value that is not finite is
    left out of its curve."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    runs = records if isinstance(records, dict) else {"": records}
    cols = min(len(keys), 4)
    rows = int(math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for label, recs in runs.items():
            pts = [(r[x], r[key]) for r in recs
                   if all(isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) for k in (x, key))]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3,
                    label=label or None)
        ax.set_title(key)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
