"""Calibrate toy base-model designs against each other at equal wall time on one machine.

Each candidate transformer size (``backbone.TRANSFORMER_SIZES``) is pretrained by
``dreamrelation toy pretrain`` with the same recipe and the same ``--time-budget``, all candidates
at once (so they share the machine alike), then judged by the fixed protocol: the denoising error of
the implied clean latent over a σ grid on a fixed validation batch (``pretrain.denoising_errors``)
and the oracle on the calibration prompts (``evaluate_base``: 5 prompts per relation, 40 videos).

    python benchmarks/toy_base_calibration.py run --output runs/calibration --time-budget 420
    python benchmarks/toy_base_calibration.py cpu-cost      # LoRA-training cost of each size on this CPU

``run`` writes one pipeline folder per candidate (and a ``.tar`` of it), their logs and
``calibration.md``. Results are in docs/toy_backbone.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

CANDIDATES = ("patch2_2x384", "patch2_3x384", "patch1_4x192", "patch1_6x192")
SIGMAS = ("0.05", "0.2", "0.5", "0.8", "0.95")


def run(args: argparse.Namespace) -> None:
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    processes = {}
    for size in args.candidates:
        command = [
            sys.executable, "-m", "dreamrelation", "toy", "pretrain",
            "--output", str(output / size), "--size", size,
            "--time-budget", str(args.time_budget), "--steps", "1000000",
            "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--min-lr", str(args.min_lr),
            "--warmup-steps", str(args.warmup_steps), "--ema-decay", str(args.ema_decay),
            "--workers", str(args.workers), "--device", args.device, "--seed", str(args.seed),
            "--eval-per-relation", "5",
        ]  # fmt: skip
        log = open(output / f"{size}.log", "w")  # noqa: SIM115 - closed when the process ends
        processes[size] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
    started = time.perf_counter()
    failed = []
    for size, (process, log) in processes.items():
        if process.wait() != 0:
            failed.append(size)
        log.close()
    print(f"all candidates done in {time.perf_counter() - started:.0f} s", flush=True)
    for size in args.candidates:
        if (output / size / "recipe.json").is_file():
            with tarfile.open(output / f"{size}.tar", "w") as tar:  # the pipeline, not its checkpoint/
                tar.add(output / size, arcname=size, filter=_without_checkpoint)
    table = markdown_table(output, args.candidates)
    (output / "calibration.md").write_text(table)
    print(table)
    if failed:
        raise SystemExit(f"candidates failed: {failed}; see their logs in {output}")


def _without_checkpoint(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "checkpoint" in Path(member.name).parts else member


def markdown_table(output: Path, candidates: list[str]) -> str:
    head = (
        "| candidate | params | steps × batch | wall (s) | loss (last 100) | "
        + " | ".join(f"x̂ MSE σ={s}" for s in SIGMAS)
        + " | fidelity | presence | generic fidelity | relation acc |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for size in candidates:
        path = output / size / "recipe.json"
        if not path.is_file():
            lines.append(f"| {size} | failed |")
            continue
        record = json.loads(path.read_text())
        ev, val = record["evaluation"], record["validation_denoising_mse"]
        lines.append(
            f"| {size} | {record.get('parameters', 0) / 1e6:.2f} M | {record['steps']} × "
            f"{record['config']['batch_size']} | {record['wall_time_s']:.0f} | "
            f"{record['loss_last_100']:.4f} | "
            + " | ".join(f"{val[s]:.4f}" for s in SIGMAS)
            + f" | {ev['subject_fidelity']:.3f} | {ev['subject_presence']:.3f} | "
            f"{ev['generic_subject_fidelity']:.3f} | {ev['relation_accuracy']:.3f} |"
        )
    record = json.loads((output / candidates[0] / "recipe.json").read_text())
    lines.append(f"\nMachine: {record['machine']}; bf16 autocast: {record['bf16_autocast']}.")
    return "\n".join(lines) + "\n"


def cpu_cost(args: argparse.Namespace) -> None:
    """Milliseconds per LoRA-training-like step (forward + backward, batch 2, float32) and per sampling
    call (batch 2: CFG) of each size on this CPU: what the demo and the benchmark pay."""
    import torch
    from diffusers import MochiTransformer3DModel

    from dreamrelation.toyworld.backbone import TRANSFORMER_SIZES
    from dreamrelation.toyworld.pretrain import machine_description

    torch.set_num_threads(args.threads)
    print(f"CPU: {machine_description(torch.device('cpu'))}")
    print("| candidate | params | fp16 MB | train step (ms) | sampling call (ms) |")
    for size in args.candidates:
        transformer = MochiTransformer3DModel(**TRANSFORMER_SIZES[size], text_embed_dim=64)
        params = sum(p.numel() for p in transformer.parameters())
        x = torch.randn(2, 96, 8, 8, 8)
        text, mask, t = torch.randn(2, 32, 64), torch.ones(2, 32, dtype=torch.bool), torch.tensor([500, 500])

        def step(transformer=transformer, x=x, text=text, t=t, mask=mask) -> None:
            transformer(x, text, t, mask, return_dict=False)[0].square().mean().backward()

        step()
        begin = time.perf_counter()
        for _ in range(args.repeats):
            step()
        train_ms = (time.perf_counter() - begin) / args.repeats * 1000
        with torch.no_grad():
            begin = time.perf_counter()
            for _ in range(args.repeats):
                transformer(x, text, t, mask, return_dict=False)
            infer_ms = (time.perf_counter() - begin) / args.repeats * 1000
        print(f"| {size} | {params / 1e6:.2f} M | {params * 2 / 1e6:.1f} | {train_ms:.0f} | {infer_ms:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("run", help="pretrain every candidate at equal wall time, then judge")
    runner.add_argument("--output", required=True)
    runner.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    runner.add_argument("--time-budget", type=float, default=420.0, help="seconds of training each")
    runner.add_argument("--batch-size", type=int, default=128)
    runner.add_argument("--lr", type=float, default=1e-3)
    runner.add_argument("--min-lr", type=float, default=5e-5)
    runner.add_argument("--warmup-steps", type=int, default=200)
    runner.add_argument("--ema-decay", type=float, default=0.998)
    runner.add_argument("--workers", type=int, default=3, help="rendering processes per candidate")
    runner.add_argument("--device", default="auto")
    runner.add_argument("--seed", type=int, default=0)
    cost = commands.add_parser("cpu-cost", help="per-step CPU cost of each candidate size")
    cost.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    cost.add_argument("--threads", type=int, default=2)
    cost.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    {"run": run, "cpu-cost": cpu_cost}[args.command](args)


if __name__ == "__main__":
    main()
