"""Sharding the frozen base (FSDP2) across 2 CPU processes (gloo) changes no loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = """
import json, sys, torch
from dreamrelation.config import TrainConfig, load_config
from dreamrelation.train import Trainer
cache, out, fsdp = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
torch.set_num_threads(1)
cfg = load_config(TrainConfig, **{"model.backbone": "mochi", "model.model": "tiny", "model.dtype": "float32",
    "cache": [cache], "output": out, "lora.rank": 4, "lora.alpha": 4, "warmup_steps": 0, "max_steps": 3,
    "checkpoint_every": 100, "fsdp": fsdp})
trainer = Trainer(cfg)
losses = [trainer.training_step(s)["loss"] for s in range(3)]
total = sum(p.numel() for n, p in trainer.transformer.named_parameters() if "lora_" not in n)  # global
adapters = {n: p.detach().sum().item() for n, p in trainer.transformer.named_parameters() if "lora_" in n}
rank = trainer.accelerator.process_index
with open(f"{out}/rank{rank}.json", "w") as f:
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel()
                for n, p in trainer.transformer.named_parameters() if "lora_" not in n)
    record = {"losses": losses, "local": local, "total": total}
    json.dump({**record, "adapters": adapters}, f)
"""


def _launch(script: Path, cache: Path, out: Path, fsdp: bool) -> list[dict]:
    out.mkdir(parents=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)]
    cmd += [str(cache), str(out), "1" if fsdp else "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_fsdp_shards_the_base_and_keeps_the_data_parallel_losses(mochi_cache: Path, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    sharded = _launch(script, mochi_cache, tmp_path / "fsdp", fsdp=True)
    replicated = _launch(script, mochi_cache, tmp_path / "ddp", fsdp=False)
    for rank in (0, 1):
        # each process holds about half of the frozen base
        assert sharded[rank]["local"] <= sharded[rank]["total"] // 2 + 64
        assert sharded[rank]["losses"] == pytest.approx(replicated[rank]["losses"], rel=1e-5)
        for name, value in replicated[rank]["adapters"].items():
            assert sharded[rank]["adapters"][name] == pytest.approx(value, rel=1e-4, abs=1e-6)
    # the adapters stay identical across processes (gradients averaged)
    assert sharded[0]["adapters"] == pytest.approx(sharded[1]["adapters"], rel=1e-6, abs=1e-9)
