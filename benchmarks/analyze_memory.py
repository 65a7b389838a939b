"""Peak memory of `dreamrelation analyze subspace` on a full-size-shaped Mochi checkpoint.

Writes (in a temporary folder, deleted afterwards) a checkpoint with Mochi-1's attention shapes
(hidden 3072; text-stream add_q/k/v_proj (3072, 1536) and to_add_out (1536, 3072); random bf16;
~2 GB shards), runs the analysis in a subprocess and reports that subprocess's peak RSS
(Linux VmHWM) next to the checkpoint size. The analysis streams one tensor at a time, so the
peak should stay far below the checkpoint size (target: <= 2 GB whatever the checkpoint size).

    python benchmarks/analyze_memory.py --layers 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import save_file

HIDDEN = 3072  # Mochi-1: 24 heads x 128
TEXT_HIDDEN = 1536  # Mochi-1's text stream width (pooled_projection_dim)
GB = 10**9  # decimal, as in diffusers' max_shard_size="2GB"


def attention_shapes(num_layers: int) -> dict[str, tuple[int, int]]:
    """Name -> (out, in) of every attention projection of a Mochi-1-shaped transformer."""
    shapes = {}
    for i in range(num_layers):
        prefix = f"transformer_blocks.{i}.attn1"
        for name in ("to_q", "to_k", "to_v", "to_out.0"):
            shapes[f"{prefix}.{name}.weight"] = (HIDDEN, HIDDEN)
        for name in ("add_q_proj", "add_k_proj", "add_v_proj"):
            shapes[f"{prefix}.{name}.weight"] = (HIDDEN, TEXT_HIDDEN)
        if i < num_layers - 1:  # the last block is context_pre_only: no text output projection
            shapes[f"{prefix}.to_add_out.weight"] = (TEXT_HIDDEN, HIDDEN)
    return shapes


def write_checkpoint(folder: Path, num_layers: int, shard_bytes: int, seed: int = 0) -> int:
    """Write a sharded diffusers-style transformer/ folder; return its size on disk in bytes."""
    transformer = folder / "transformer"
    transformer.mkdir(parents=True)
    shapes = attention_shapes(num_layers)
    shards: list[list[str]] = [[]]
    filled = 0
    for name, (rows, cols) in shapes.items():
        size = rows * cols * 2  # bf16
        if shards[-1] and filled + size > shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += size

    generator = torch.Generator().manual_seed(seed)
    weight_map = {}
    for index, names in enumerate(shards, start=1):
        file_name = f"diffusion_pytorch_model-{index:05d}-of-{len(shards):05d}.safetensors"
        # One shard in memory at a time (this is the benchmark's parent, not the measured process).
        tensors = {
            name: (torch.randn(*shapes[name], generator=generator) / shapes[name][1] ** 0.5).to(
                torch.bfloat16
            )
            for name in names
        }
        save_file(tensors, transformer / file_name, metadata={"format": "pt"})
        del tensors
        weight_map.update(dict.fromkeys(names, file_name))
    total = sum((transformer / f).stat().st_size for f in set(weight_map.values()))
    (transformer / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    config = {
        "_class_name": "MochiTransformer3DModel",
        "num_layers": num_layers,
        "num_attention_heads": 24,
        "attention_head_dim": 128,
        "pooled_projection_dim": TEXT_HIDDEN,
        "note": "attention projections only, random bf16 weights (memory benchmark)",
    }
    (transformer / "config.json").write_text(json.dumps(config, indent=2))
    return total


# Runs a module as __main__ and, at exit, writes the process's own peak RSS (VmHWM, in KiB).
# Not ru_maxrss: Linux carries the forking parent's RSS into a child's ru_maxrss across exec, so a
# child of a parent that just wrote a 2 GB shard would "peak" at the parent's size.
_PEAK_WRAPPER = """
import atexit, pathlib, runpy, sys
peak_file = pathlib.Path(sys.argv.pop(1))
def write_peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            peak_file.write_text(line.split()[1])
atexit.register(write_peak)
module = sys.argv.pop(1)
sys.argv[0] = module
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run_measured(module_and_args: list[str], log: Path) -> tuple[int, float, int]:
    """Run ``python -m module args``; return (exit code, wall seconds, its peak RSS in bytes).

    The peak is the kernel's high-water mark of the process's resident memory (VmHWM), which a
    sampling poll (psutil, kept as a fallback off Linux) could miss.
    """
    peak_file = log.with_suffix(".peak")
    command = [sys.executable, "-c", _PEAK_WRAPPER, str(peak_file), *module_and_args]
    start = time.perf_counter()
    sampled = 0
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "100"}
        )
        watched = psutil.Process(process.pid)
        while process.poll() is None:
            with contextlib.suppress(psutil.Error):
                sampled = max(sampled, watched.memory_info().rss)
            time.sleep(0.2)
    seconds = time.perf_counter() - start
    peak = int(peak_file.read_text()) * 1024 if peak_file.is_file() else sampled
    return process.returncode, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=20, help="transformer blocks (Mochi-1 has 48; >= 12)")
    parser.add_argument("--shard-gb", type=float, default=2.0, help="shard size in GB (10^9 bytes)")
    parser.add_argument("--ranks", default="4,8,16,32")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary checkpoint goes")
    args = parser.parse_args()
    console = Console()

    with tempfile.TemporaryDirectory(prefix="dreamrelation_bench_", dir=args.workdir) as tmp:
        tmp_path = Path(tmp)
        console.print(f"writing a Mochi-shaped checkpoint ({args.layers} layers) to {tmp_path} ...")
        t0 = time.perf_counter()
        checkpoint_bytes = write_checkpoint(tmp_path / "mochi", args.layers, int(args.shard_gb * GB))
        shards = len(list((tmp_path / "mochi" / "transformer").glob("*.safetensors")))
        console.print(
            f"  {checkpoint_bytes / GB:.2f} GB in {shards} shard(s), {time.perf_counter() - t0:.0f} s"
        )

        # Same process minus the work: interpreter + torch + typer/rich imports.
        _, _, baseline_rss = run_measured(
            ["dreamrelation.cli.analyze", "subspace", "--help"], tmp_path / "base.log"
        )

        command = [
            "dreamrelation.cli.analyze",
            "subspace",
            str(tmp_path / "mochi"),
            "--ranks",
            args.ranks,
            "--output",
            str(tmp_path / "report"),
        ]
        console.print("running: dreamrelation analyze subspace <checkpoint> --ranks " + args.ranks)
        code, seconds, peak_rss = run_measured(command, tmp_path / "analysis.log")
        log = (tmp_path / "analysis.log").read_text()
        if code != 0:
            console.print(log)
            raise SystemExit(f"analysis failed with exit code {code}")
        console.print(log)

    table = Table(title="dreamrelation analyze subspace: memory on a Mochi-shaped checkpoint")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("layers / shards", f"{args.layers} / {shards}")
    table.add_row("checkpoint on disk", f"{checkpoint_bytes / GB:.2f} GB")
    table.add_row("peak RSS, analysis process", f"{peak_rss / GB:.2f} GB")
    table.add_row("peak RSS, same command with --help", f"{baseline_rss / GB:.2f} GB")
    table.add_row("peak RSS / checkpoint size", f"{peak_rss / checkpoint_bytes:.2f}")
    table.add_row("wall time (analysis)", f"{seconds:.0f} s ({seconds / args.layers:.1f} s/layer)")
    table.add_row("target peak <= 2 GB", "met" if peak_rss <= 2 * GB else "MISSED")
    console.print(table)


if __name__ == "__main__":
    main()
