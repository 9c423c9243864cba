"""Two-process data-parallel StyleGAN2 training (gloo on CPU through torchrun)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from adbench.methods.scrps.stylegan2 import generator_from_config, tensor_hash
from adbench.methods.scrps.stylegan_train import CHECKPOINT_NAME

WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from adbench.methods.scrps.stylegan2 import tensor_hash
    from adbench.methods.scrps.stylegan_train import train_stylegan
    from adbench.training import init_distributed
    rank, world, device = init_distributed("cpu")
    out = sys.argv[1]
    g = torch.Generator().manual_seed(0)
    images = torch.rand(16, 1, 16, 8, generator=g) * 2 - 1
    cfg = dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=8, channel_max=4, batch_size=4,
               iterations=3, r1_interval=2, pl_weight=1.0, pl_interval=2, ema_kimg=0.002,
               train_noise_mode="random", checkpoint_interval=3, log_interval=3,
               sample_interval=3, num_samples=4)
    G_ema = train_stylegan(images, cfg, out, seed=5)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "world": world, "G_ema": tensor_hash(G_ema)}, f)
    torch.distributed.destroy_process_group()
''')


@pytest.mark.slow
def test_two_process_gloo_ranks_hold_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    work = tmp_path / "work"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(script), str(work)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((work / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["G_ema"] == ranks[1]["G_ema"]
    # rank 0's checkpoint holds the same weights (and they are not a fresh initialisation)
    ckpt = torch.load(work / CHECKPOINT_NAME, weights_only=True)
    assert int(ckpt["iteration"]) == 3 and int(ckpt["world_size"]) == 2
    G = generator_from_config(json.loads(ckpt["generator_config"]))
    init_hash = tensor_hash(G)
    G.load_state_dict(ckpt["G_ema"])
    assert tensor_hash(G) == ranks[0]["G_ema"] != init_hash
    assert not list(work.glob("*.tmp"))
