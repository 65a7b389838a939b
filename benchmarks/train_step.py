"""Time and peak memory per training step: DreamRelation vs plain LoRA, as ratios.

Both variants train the same Mochi-architecture transformer (real diffusers class, random weights,
mid-size config) on the same cached data with the same rank. "Plain LoRA" is one adapter on all
attention projections (q, k, v, out), no masks, no contrastive loss: the direct fine-tuning
baseline. DreamRelation is the full method: triplet, HMT selection, mask-weighted loss, RCL.

Each variant runs in its own fresh process (so peak memory is its own); variants alternate over
several rounds and the median is reported. Memory is reported twice: the peak RSS of the timed
steps (CPU; the kernel's peak mark is reset first) or ``torch.cuda.max_memory_allocated`` (GPU),
and the bytes autograd saves for backward per step (deterministic, not blurred by allocator pools).

    python benchmarks/train_step.py            # prints a table; --json FILE to save
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "plain_lora": {"method": "direct_lora"},  # the direct LoRA baseline (dreamrelation.training.methods)
    "dreamrelation": {},
}


def _mid_backbone():
    import torch
    from diffusers import MochiTransformer3DModel

    from dreamrelation.backbones.mochi import MochiBackbone

    tiny = MochiBackbone.tiny(seed=0)
    torch.manual_seed(0)
    # The tiny Mochi's config at a mid size: more heads, wider, deeper.
    mid = {"num_attention_heads": 8, "attention_head_dim": 32, "num_layers": 6}
    mid |= {"pooled_projection_dim": 64, "time_embed_dim": 64}
    tiny.pipeline.transformer = MochiTransformer3DModel.from_config({**tiny.transformer.config, **mid}).eval()
    return tiny


def make_cache(root: Path) -> Path:
    from dreamrelation.backbones.mochi import MochiBackbone
    from dreamrelation.testing import write_tiny_cache

    return write_tiny_cache(root, n_videos=4, num_frames=25, size=128, model=MochiBackbone.tiny(seed=0))


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (Linux clear_refs 5) and return the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def run_variant(name: str, cache: Path, steps: int, warmup: int, out: Path) -> dict[str, float]:
    import torch

    from dreamrelation.testing import tiny_train_config
    from dreamrelation.training.loop import Trainer

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    cfg = tiny_train_config(
        cache,
        out,
        **{
            "max_steps": steps + warmup + 1,
            "checkpoint_every": 10**6,
            "lora.rank": 16,
            "lora.alpha": 16,
            "mixed_precision": "no",
            **VARIANTS[name],
        },
    )
    trainer = Trainer(cfg, backbone=_mid_backbone())
    cuda = torch.cuda.is_available()
    for s in range(warmup):
        trainer.training_step(s)
    saved = _saved_activation_bytes(trainer, warmup)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_peak_rss()
    start = time.perf_counter()
    for s in range(warmup, warmup + steps):
        trainer.training_step(s)
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() if cuda else _status_bytes("VmHWM")
    params = sum(p.numel() for p in trainer.lora_params)
    return {
        "seconds_per_step": seconds,
        "peak_memory_bytes": float(peak),
        "saved_activation_bytes": float(saved),
        "lora_parameters": params,
    }


def _saved_activation_bytes(trainer, step: int) -> int:  # noqa: ANN001
    """Bytes autograd keeps for backward in one step (averaged over the three HMT selections)."""
    import torch

    totals = []
    for s in range(step, step + 3):
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            trainer.training_step(s)
        totals.append(total)
    return sum(totals) // len(totals)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--_variant", help=argparse.SUPPRESS)
    parser.add_argument("--_cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._variant:  # child process
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_variant(args._variant, args._cache, args.steps, args.warmup, Path(tmp))))
        return

    with tempfile.TemporaryDirectory() as tmp:
        cache = make_cache(Path(tmp))
        results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant in VARIANTS:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--_variant",
                        variant,
                        "--_cache",
                        str(cache),
                        "--steps",
                        str(args.steps),
                        "--warmup",
                        str(args.warmup),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                    env={**os.environ, "HF_HUB_OFFLINE": "1"},
                )
                results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary = {v: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for v, runs in results.items()}
    base, ours = summary["plain_lora"], summary["dreamrelation"]
    ratios = {
        "time_ratio": ours["seconds_per_step"] / base["seconds_per_step"],
        "peak_memory_ratio": ours["peak_memory_bytes"] / base["peak_memory_bytes"],
        "saved_activation_ratio": ours["saved_activation_bytes"] / base["saved_activation_bytes"],
    }
    print(f"{'variant':<14} {'s/step':>9} {'peak MB':>9} {'saved MB':>9} {'LoRA params':>12}")
    for v, r in summary.items():
        print(
            f"{v:<14} {r['seconds_per_step']:>9.4f} {r['peak_memory_bytes'] / 2**20:>9.1f}"
            f" {r['saved_activation_bytes'] / 2**20:>9.1f} {r['lora_parameters']:>12.0f}"
        )
    print(
        f"DreamRelation / plain LoRA: time {ratios['time_ratio']:.3f}x,"
        f" peak memory {ratios['peak_memory_ratio']:.3f}x,"
        f" saved activations {ratios['saved_activation_ratio']:.3f}x"
    )
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "ratios": ratios, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
