"""Sharding the frozen base (FSDP2) across 2 CPU processes (gloo) trains exactly what one process
trains on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dreamrelation.config import TrainConfig, load_config
from dreamrelation.training.loop import Trainer

STEPS = 3

WORKER = """
import json, sys, torch
from safetensors.torch import save_file
from dreamrelation.config import TrainConfig, load_config
from dreamrelation.training.loop import Trainer
settings, out = json.loads(sys.argv[1]), sys.argv[2]
torch.set_num_threads(1)
trainer = Trainer(load_config(TrainConfig, **settings, output=out, fsdp=True))
losses = [trainer.training_step(s)["loss"] for s in range(int(sys.argv[3]))]
named = dict(trainer.transformer.named_parameters())
total = sum(p.numel() for n, p in named.items() if "lora_" not in n)  # global shapes
local = sum(p.to_local().numel() for n, p in named.items() if "lora_" not in n)
rank = trainer.accelerator.process_index
adapters = {n: p.detach().contiguous() for n, p in named.items() if "lora_" in n}
save_file(adapters, f"{out}/rank{rank}.safetensors")
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump({"losses": losses, "local": local, "total": total}, f)
trainer.close()
"""


def _settings(cache: Path, batch_size: int) -> dict:
    return {
        "model.backbone": "mochi",
        "model.model": "tiny",
        "model.dtype": "float32",
        "cache": [str(cache)],
        "lora.rank": 4,
        "lora.alpha": 4,
        "warmup_steps": 0,
        "max_steps": STEPS,
        "checkpoint_every": 100,
        "batch_size": batch_size,
        # each process keeps its own memory bank (as in data parallel), so the relational contrastive
        # term of two processes draws from other banks than one process would: compared without it
        "loss.contrastive_weight": 0.0,
    }


@pytest.mark.slow
def test_fsdp_two_processes_train_what_one_process_trains_on_the_global_batch(
    mochi_cache: Path, tmp_path: Path
) -> None:
    script, out = tmp_path / "worker.py", tmp_path / "fsdp"
    script.write_text(WORKER)
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)]
    cmd += [json.dumps(_settings(mochi_cache, batch_size=1)), str(out), str(STEPS)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    adapters = [load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1)]

    # one process, batch 2: the same two samples per step (global places 2s and 2s + 1)
    one = Trainer(
        load_config(TrainConfig, **_settings(mochi_cache, batch_size=2), output=str(tmp_path / "one"))
    )
    losses = [one.training_step(s)["loss"] for s in range(STEPS)]

    for rank in ranks:  # each process holds about half of the frozen base
        assert rank["local"] <= rank["total"] // 2 + 64
    # the global batch's loss is the mean of the two processes' losses
    global_losses = [(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"], strict=True)]
    assert global_losses == pytest.approx(losses, rel=1e-5)
    assert ranks[0]["losses"] != pytest.approx(ranks[1]["losses"])  # the processes saw different samples
    expected = {n: p.detach() for n, p in one.transformer.named_parameters() if "lora_" in n}
    assert set(adapters[0]) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(adapters[0][name], value, rtol=1e-5, atol=1e-7)
        assert torch.equal(adapters[0][name], adapters[1][name])  # identical on both processes
