"""Peak memory and seconds per step of DreamRelation training under each memory saver.

Every row trains the same transformer (the real diffusers class at a published size, random
weights) with the DreamRelation triplet at the paper's settings (rank 16, HMT, mask loss, RCL,
AdamW 2e-4, batch 1) through the project's own ``Trainer``, on a synthetic cache of the target
geometry (random latents, masks and text embeddings: only the transformer runs in training).
Each row runs in its own subprocess, so peaks never mix; a row that runs out of memory is recorded
as OOM and the run goes on. Results (JSON + Markdown) are rewritten after every row, so a run cut
short keeps what it measured.

    # CPU: the real-size Wan2.1-1.3B transformer at a small geometry
    python benchmarks/memory.py --device cpu --model wan-1.3b --output bench-memory
    # GPU: the full Mochi-1 transformer (10B) at the paper's 61x480x848, bf16
    python benchmarks/memory.py --device cuda --model mochi-full --output bench-memory
    # a quick check that everything works (tiny Mochi, seconds)
    python benchmarks/memory.py --device cpu --model mochi-tiny --output /tmp/bench

Ratios are to the ``plain`` row (no saver); when ``plain`` does not fit, to the first row that ran.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

#: model name -> backbone, transformer config (diffusers kwargs), latent shape (C, f, h, w),
#: text tokens, dtype per device, what it is
MODELS: dict[str, dict] = {
    "mochi-full": {
        "backbone": "mochi",
        # genmo/mochi-1-preview transformer/config.json (= MochiTransformer3DModel's defaults)
        "config": {
            "patch_size": 2,
            "num_attention_heads": 24,
            "attention_head_dim": 128,
            "num_layers": 48,
            "pooled_projection_dim": 1536,
            "in_channels": 12,
            "out_channels": None,
            "qk_norm": "rms_norm",
            "text_embed_dim": 4096,
            "time_embed_dim": 256,
            "activation_fn": "swiglu",
            "max_sequence_length": 256,
        },
        # 61 x 480 x 848 frames -> (61 - 1) / 6 + 1 = 11 latent frames of 60 x 106, 12 channels
        "latent_shape": (12, 11, 60, 106),
        "text_tokens": 256,
        "about": "Mochi-1 transformer (genmo/mochi-1-preview config, 10B), 61x480x848, 256 T5 tokens",
    },
    "mochi-slice": {
        "backbone": "mochi",
        # mochi-full's exact layers at 2 of its 48 blocks: checks the full-width code path cheaply
        "config": None,  # filled below from mochi-full
        "latent_shape": (12, 2, 16, 16),
        "text_tokens": 256,
        "about": "Mochi-1 transformer at full width, 2 of 48 blocks, 7x128x128, 256 T5 tokens",
    },
    "wan-1.3b": {
        "backbone": "wan",
        # Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json
        "config": {
            "patch_size": (1, 2, 2),
            "num_attention_heads": 12,
            "attention_head_dim": 128,
            "in_channels": 16,
            "out_channels": 16,
            "text_dim": 4096,
            "freq_dim": 256,
            "ffn_dim": 8960,
            "num_layers": 30,
            "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads",
            "eps": 1e-6,
            "rope_max_seq_len": 1024,
        },
        # 1 frame x 128 x 128 -> 1 latent frame of 16 x 16 (64 tokens): a small geometry for a CPU
        "latent_shape": (16, 1, 16, 16),
        "text_tokens": 32,
        "about": "Wan2.1-T2V-1.3B transformer (published config), 1x128x128, 32 UMT5 tokens, no RCL",
        # RCL contrasts frame-to-frame dynamics, which one latent frame does not have (the trainer
        # refuses it); its tensors are a few (F-1) x C vectors per sample, nothing next to the activations
        "train": {"loss.contrastive_weight": 0.0},
    },
    "wan-1.3b-256": {
        "backbone": "wan",
        "config": None,  # filled below from wan-1.3b
        # 1 frame x 256 x 256 -> 1 latent frame of 32 x 32 (256 tokens): activations big enough
        # next to the weights for selective checkpointing to show, still minutes per step on a CPU
        "latent_shape": (16, 1, 32, 32),
        "text_tokens": 32,
        "about": "Wan2.1-T2V-1.3B transformer (published config), 1x256x256, 32 UMT5 tokens, no RCL",
        # RCL contrasts frame-to-frame dynamics, which one latent frame does not have (the trainer
        # refuses it); its tensors are a few (F-1) x C vectors per sample, nothing next to the activations
        "train": {"loss.contrastive_weight": 0.0},
    },
    "wan22-5b": {
        "backbone": "wan22_5b",
        # Wan-AI/Wan2.2-TI2V-5B-Diffusers transformer/config.json (48-channel latents of its 16x VAE)
        "config": {
            "patch_size": (1, 2, 2),
            "num_attention_heads": 24,
            "attention_head_dim": 128,
            "in_channels": 48,
            "out_channels": 48,
            "text_dim": 4096,
            "freq_dim": 256,
            "ffn_dim": 14336,
            "num_layers": 30,
            "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads",
            "eps": 1e-6,
            "rope_max_seq_len": 1024,
        },
        # 9 frames x 256 x 256 -> 3 latent frames of 16 x 16 (3 x 8 x 8 = 192 tokens)
        "latent_shape": (48, 3, 16, 16),
        "text_tokens": 32,
        "about": "Wan2.2-TI2V-5B transformer (published config), 9x256x256, 32 UMT5 tokens",
    },
    "wan22-5b-slice": {
        "backbone": "wan22_5b",
        "config": None,  # filled below from wan22-5b: 2 of its 30 blocks, to check the path cheaply
        "latent_shape": (48, 3, 16, 16),
        "text_tokens": 32,
        "about": "Wan2.2-TI2V-5B transformer at full width, 2 of 30 blocks, 9x256x256, 32 UMT5 tokens",
    },
    "mochi-tiny": {
        "backbone": "mochi",
        "config": None,  # MochiBackbone's tiny test config
        "latent_shape": (12, 3, 8, 8),
        "text_tokens": 16,
        "about": "tiny Mochi (test config), for checking the benchmark itself",
    },
}

MODELS["mochi-slice"]["config"] = {**MODELS["mochi-full"]["config"], "num_layers": 2}
MODELS["wan-1.3b-256"]["config"] = MODELS["wan-1.3b"]["config"]
MODELS["wan22-5b-slice"]["config"] = {**MODELS["wan22-5b"]["config"], "num_layers": 2}

#: row -> TrainConfig overrides. Every row sets gradient_checkpointing explicitly (no "auto").
ROWS: dict[str, dict] = {
    "plain": {"gradient_checkpointing": False},
    "checkpointing": {"gradient_checkpointing": True},
    # selective checkpointing: a fraction of the blocks (spread evenly) recompute, the rest keep
    # their activations
    "checkpointing@0.75": {"gradient_checkpointing": True, "checkpoint_blocks": 0.75},
    "checkpointing@0.5": {"gradient_checkpointing": True, "checkpoint_blocks": 0.5},
    "checkpointing@0.25": {"gradient_checkpointing": True, "checkpoint_blocks": 0.25},
    "checkpointing@0.5+fp8": {"gradient_checkpointing": True, "checkpoint_blocks": 0.5, "fp8_base": True},
    "checkpointing+fp16": {"gradient_checkpointing": True, "mixed_precision": "fp16"},
    "fp8": {"gradient_checkpointing": False, "fp8_base": True},
    "offload": {"gradient_checkpointing": False, "block_offload": True},
    "adamw8bit": {"gradient_checkpointing": False, "optimizer": "adamw8bit"},
    "accumulate2": {"gradient_checkpointing": False, "gradient_accumulation_steps": 2},
    "checkpointing+fp8": {"gradient_checkpointing": True, "fp8_base": True},
    "checkpointing+offload": {"gradient_checkpointing": True, "block_offload": True},
    "checkpointing+fp8+offload": {"gradient_checkpointing": True, "fp8_base": True, "block_offload": True},
    "checkpointing+fp8+adamw8bit": {
        "gradient_checkpointing": True,
        "fp8_base": True,
        "optimizer": "adamw8bit",
    },
}


# ----------------------------------------------------------------------------- the model


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Make torch.nn.init's initialisers no-ops while a model is built (weights are filled after)."""
    import torch

    names = [
        "kaiming_uniform_", "kaiming_normal_", "uniform_", "normal_", "trunc_normal_",
        "xavier_uniform_", "xavier_normal_", "zeros_", "ones_", "constant_", "orthogonal_",
    ]  # fmt: skip
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)


def fast_init(module, seed: int = 0) -> None:  # noqa: ANN001
    """Random weights fast, in place: N(0, min(0.02, 1/sqrt(fan_in))) for matrices, 0 for biases,
    1 for the other vectors (norm scales). Deterministic per seed, on the module's own device."""
    import torch

    generator = None
    with torch.no_grad():
        for name, p in module.named_parameters():
            if generator is None or generator.device != p.device:
                generator = torch.Generator(p.device).manual_seed(seed)
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.normal_(0.0, min(0.02, 1.0 / math.sqrt(fan_in)), generator=generator)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)


def build_backbone(model: str, device: str, dtype: str):  # noqa: ANN201
    """The model's transformer alone (TransformerOnly), random weights, built on ``device``."""
    import torch

    from dreamrelation.backbones import DTYPES, TransformerOnly, backbone_class

    spec = MODELS[model]
    cls = backbone_class(spec["backbone"])
    if spec["config"] is None:
        backbone = cls.tiny_transformer(seed=0)
        backbone.transformer.to(device=device, dtype=DTYPES[dtype])
        return backbone
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(DTYPES[dtype])
        with skip_init(), torch.device(device):
            transformer = cls.transformer_class(**spec["config"])
    finally:
        torch.set_default_dtype(previous)
    fast_init(transformer)
    transformer.eval()
    return cls(TransformerOnly(transformer), max_sequence_length=spec["text_tokens"])


# ----------------------------------------------------------------------------- the data


def write_synthetic_cache(root: Path, model: str, n_items: int = 4, seed: int = 0) -> Path:
    """A cache folder in the project's format with random latents, subject masks and text
    conditioning of ``model``'s geometry (what `dreamrelation cache` would write, minus the encoders)."""
    import torch

    from dreamrelation.cache import MANIFEST, MASK_ORDER
    from dreamrelation.files import atomic_save, write_text_atomic

    spec = MODELS[model]
    channels, frames, height, width = spec["latent_shape"]
    tokens = spec["text_tokens"]
    config = spec["config"] or {}
    g = torch.Generator().manual_seed(seed)
    if spec["backbone"] == "mochi":
        text_dim = config.get("text_embed_dim", 32)

        def text() -> dict[str, torch.Tensor]:
            return {
                "text.prompt_embeds": torch.randn(tokens, text_dim, generator=g),
                "text.prompt_attention_mask": torch.ones(tokens, dtype=torch.long),
            }
    else:
        text_dim = config.get("text_dim", 32)

        def text() -> dict[str, torch.Tensor]:
            return {"text.prompt_embeds": torch.randn(tokens, text_dim, generator=g)}

    items = []
    for i in range(n_items):
        masks = torch.zeros(len(MASK_ORDER), frames, height, width)
        masks[0, :, : height // 2, : width // 3] = 1  # subject 1
        masks[1, :, height // 2 :, width // 2 :] = 1  # subject 2
        masks[2] = masks[:2].amax(0)  # relation
        key = f"relation__clip{i}"
        tensors = {
            "latents": torch.randn(channels, frames, height, width, generator=g),
            "latents_std": torch.full((channels, frames, height, width), 0.05),
            "masks": masks,
            **text(),
        }
        atomic_save(tensors, root / "items" / f"{key}.safetensors")
        items.append(
            {
                "key": key,
                "name": f"clip{i}",
                "relation": "relation",
                "caption": "",
                "file": f"items/{key}.safetensors",
            }
        )
    atomic_save({k: torch.zeros_like(v) for k, v in text().items()}, root / "null_prompt.safetensors")
    manifest = {"backbone": spec["backbone"], "model": model, "items": items}
    write_text_atomic(root / MANIFEST, json.dumps(manifest))
    return root


# ----------------------------------------------------------------------------- one row (child)


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not in /proc/self/status (Linux only)")


def run_row(row: str, model: str, device: str, dtype: str, cache: Path, warmup: int, steps: int) -> dict:
    """Build, train ``warmup + steps`` steps, measure; returns the row's record."""
    import torch

    from dreamrelation.config import TrainConfig, load_config
    from dreamrelation.devices import machine_description
    from dreamrelation.errors import DreamRelationError, TrainingError
    from dreamrelation.training.loop import Trainer

    cuda = device == "cuda"
    record: dict = {"row": row, "savers": ROWS[row], "machine": machine_description(torch.device(device))}
    try:
        started = time.perf_counter()
        backbone = build_backbone(model, device, dtype)
        with tempfile.TemporaryDirectory() as out:
            cfg = load_config(
                TrainConfig,
                **{
                    "model.backbone": MODELS[model]["backbone"],
                    "model.model": model,
                    "model.dtype": dtype,
                    "cache": [str(cache)],
                    "output": out,
                    "max_steps": 10**6,
                    "checkpoint_every": 10**6,
                    "mixed_precision": "bf16" if dtype == "bfloat16" else "no",
                    **MODELS[model].get("train", {}),
                    **ROWS[row],
                },
            )
            trainer = Trainer(cfg, backbone=backbone)
            record["setup_s"] = round(time.perf_counter() - started, 1)
            record["lora_parameters"] = sum(p.numel() for p in trainer.lora_params)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            else:
                _peak_rss_reset()
            times, losses = [], []
            for step in range(warmup + steps):
                t0 = time.perf_counter()
                result = trainer.training_step(step)
                if cuda:
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - t0
                losses.append(result["loss"])
                if step >= warmup:
                    times.append(elapsed)
                print(
                    f"  [{row}] step {step + 1}/{warmup + steps}: {elapsed:.2f} s, loss {result['loss']:.4f}",
                    file=sys.stderr,
                    flush=True,
                )
            record["peak_bytes"] = torch.cuda.max_memory_allocated() if cuda else _peak_rss()
            record["optimizer_state_bytes"] = sum(
                v.numel() * v.element_size()
                for state in trainer.optimizer.state.values()
                for v in state.values()
                if torch.is_tensor(v)
            )
            record["seconds_per_step"] = statistics.median(times)
            record["step_times"] = [round(t, 3) for t in times]
            record["losses"] = losses
            record["status"] = "ok"
    except torch.OutOfMemoryError as exc:
        record["status"] = "oom"
        record["error"] = str(exc).splitlines()[0][:300]
    except TrainingError as exc:
        record["status"] = "error"
        record["error"] = str(exc)[:500]
    except DreamRelationError as exc:
        record["status"] = "refused"
        record["error"] = str(exc)[:500]
    except Exception as exc:  # recorded, not raised: one broken row must not end the run
        record["status"] = "error"
        record["error"] = f"{type(exc).__name__}: {exc}"[:500]
        traceback.print_exc()
    return record


# ----------------------------------------------------------------------------- the table (parent)


def reference_row(records: list[dict]) -> dict | None:
    ok = [r for r in records if r.get("status") == "ok"]
    plain = [r for r in ok if r["row"] == "plain"]
    return (plain or ok or [None])[0]


def markdown(report: dict) -> str:
    records = report["rows"]
    ref = reference_row(records)
    lines = [
        f"# Memory savers: {report['about']}",
        "",
        f"Device: {report['machine']} · dtype {report['dtype']} · "
        f"{report['warmup']} warm-up + {report['steps']} timed steps per row",
        f"Ratios are to `{ref['row'] if ref else '-'}`"
        + ("" if ref is None or ref["row"] == "plain" else " (`plain` did not run)")
        + ".",
        "",
        "| row | status | peak GiB | × ref | s/step | × ref | optimizer state MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        if r.get("status") == "ok":
            peak = r["peak_bytes"] / 2**30
            mem_ratio = r["peak_bytes"] / ref["peak_bytes"]
            time_ratio = r["seconds_per_step"] / ref["seconds_per_step"]
            seconds = r["seconds_per_step"]
            state = r.get("optimizer_state_bytes")
            state = "–" if state is None else f"{state / 2**20:.1f}"
            ratios = f"{peak:.2f} | {mem_ratio:.2f} | {seconds:.3f} | {time_ratio:.2f}"
            lines.append(f"| {r['row']} | ok | {ratios} | {state} |")
        else:
            note = r.get("error", "").replace("|", "/").replace("\n", " ")[:120]
            lines.append(f"| {r['row']} | {r.get('status')}: {note} | – | – | – | – | – |")
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def write_report(report: dict, output: Path) -> None:
    from dreamrelation.files import write_text_atomic

    for name, text in (("memory.json", json.dumps(report, indent=1)), ("memory.md", markdown(report))):
        write_text_atomic(output / name, text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", choices=tuple(MODELS), default="wan-1.3b")
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma-separated subset of: {', '.join(ROWS)}"
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="base weights (and autocast) dtype; auto: bfloat16 on cuda, float32 on cpu",
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--row-timeout", type=float, default=300.0, help="seconds before a row is stopped")
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds for the whole run; later rows are skipped"
    )
    parser.add_argument("--output", type=Path, default=Path("bench-memory"))
    parser.add_argument("--_row", help=argparse.SUPPRESS)
    parser.add_argument("--_cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.dtype == "auto":
        args.dtype = "bfloat16" if args.device == "cuda" else "float32"
    if args._row:  # child: one row, result as JSON in a file
        record = run_row(args._row, args.model, args.device, args.dtype, args._cache, args.warmup, args.steps)
        args._result.write_text(json.dumps(record))
        return

    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    import torch

    # (the parent never touches the GPU: a CUDA context here would take memory from the rows)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA GPU")
    report = {
        "about": MODELS[args.model]["about"],
        "model": args.model,
        "latent_shape": MODELS[args.model]["latent_shape"],
        "text_tokens": MODELS[args.model]["text_tokens"],
        "machine": "?",
        "device": args.device,
        "dtype": "bfloat16 (bf16 autocast)" if args.dtype == "bfloat16" else "float32",
        "warmup": args.warmup,
        "steps": args.steps,
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "torch": torch.__version__,
        "rows": [],
    }
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    with tempfile.TemporaryDirectory() as tmp:
        cache = write_synthetic_cache(Path(tmp) / "cache", args.model)
        for i, row in enumerate(rows, 1):
            spent = time.perf_counter() - start
            if args.budget is not None and spent > args.budget:
                report["rows"].append(
                    {
                        "row": row,
                        "savers": ROWS[row],
                        "status": "skipped",
                        "error": f"time budget {args.budget:.0f} s spent",
                    }
                )
                write_report(report, args.output)
                continue
            print(f"[{i}/{len(rows)}] {row} (elapsed {spent:.0f} s)", flush=True)
            result = Path(tmp) / f"{row}.json"
            command = [sys.executable, __file__, "--device", args.device, "--model", args.model,
                       "--dtype", args.dtype, "--warmup", str(args.warmup), "--steps", str(args.steps),
                       "--_row", row, "--_cache", str(cache), "--_result", str(result)]  # fmt: skip
            t0 = time.perf_counter()
            try:
                done = subprocess.run(
                    command, env=env, timeout=args.row_timeout, stdout=sys.stdout, stderr=sys.stderr
                )
                if result.is_file():
                    record = json.loads(result.read_text())
                else:
                    killed = done.returncode in (-9, 137)
                    reason = "killed (host memory?)" if killed else f"crashed with exit {done.returncode}"
                    record = {"row": row, "savers": ROWS[row], "status": "error", "error": reason}
            except subprocess.TimeoutExpired:
                record = {
                    "row": row,
                    "savers": ROWS[row],
                    "status": "timeout",
                    "error": f"over {args.row_timeout:.0f} s",
                }
            record["wall_s"] = round(time.perf_counter() - t0, 1)
            report["machine"] = record.pop("machine", report["machine"])
            report["rows"].append(record)
            write_report(report, args.output)
            if record["status"] == "ok":
                print(
                    f"    -> peak {record['peak_bytes'] / 2**30:.2f} GiB, "
                    f"{record['seconds_per_step']:.3f} s/step",
                    flush=True,
                )
            else:
                print(f"    -> {record['status']}: {record.get('error', '')[:200]}", flush=True)
    report["total_s"] = round(time.perf_counter() - start, 1)
    write_report(report, args.output)
    print(markdown(report))


if __name__ == "__main__":
    main()
