"""f-AnoGAN, GANomaly and MemAE under torchrun: two gloo ranks on the CPU train, through the
shared loop, to identical weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent('''
    import hashlib, json, os, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from adbench import Context
    from adbench.plugins import get_registry
    from adbench.testing import synthetic_slices
    from adbench.training import init_distributed
    method, out = sys.argv[1], sys.argv[2]
    rank, world, device = init_distributed("cpu")
    spec = get_registry().method(method)
    cfg = {**spec.default_config, **spec.presets["smoke"]}
    det = spec.factory(**cfg)

    def digest(state):
        h = hashlib.sha256()
        for k, v in sorted(state.items()):
            h.update(k.encode())
            h.update(np.ascontiguousarray(v.detach().cpu().float().numpy()).tobytes())
        return h.hexdigest()

    train = synthetic_slices(16, seed=3)
    ctx = Context(device=device, seed=7, progress=False)
    from pathlib import Path
    ctx.workdir = Path(out) / "work"              # one folder: rank 0 writes, all read
    det.fit(train, ctx)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"world": world, "state": digest(det.state_dict())}, f)
    torch.distributed.destroy_process_group()
''')


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fanogan", "ganomaly", "memae"])
def test_two_gloo_ranks_train_identical_weights(method, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(script), method, str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["state"] == ranks[1]["state"]
    logs = sorted((tmp_path / "work").rglob("*.jsonl"))   # the loop logged real iterations
    assert logs and all(json.loads(p.read_text().splitlines()[-1])["iteration"] > 0 for p in logs)
