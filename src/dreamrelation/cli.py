"""The `dreamrelation` command line: one command per stage of the data flow.

data -> `cache` -> `train` -> LoRA file -> `generate`; `analyze` sits beside. Every command
takes an optional YAML config (validated before any work starts) and flags that override it.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer
from rich.console import Console
from rich.table import Table

from dreamrelation.checks import preflight_cache, preflight_generate, preflight_train

if TYPE_CHECKING:
    from dreamrelation.config import TrainConfig
from dreamrelation.errors import DreamRelationError
from dreamrelation.lazy_cli import LazyGroup
from dreamrelation.prepare.cli import register as register_prepare

app = typer.Typer(
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    help="DreamRelation: learn a relation between two subjects from a few videos, render it for new ones.",
)
register_prepare(app)  # `prepare ntu|videos`, `masks`: raw videos -> dataset folders
console = Console(stderr=True)

CONFIG_HELP = "YAML file with the command's settings (see docs/); flags given here override it."


_DEBUG = {"on": False}


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
) -> None:
    _DEBUG["on"] = debug


def _run(fn, *args, **kwargs):  # noqa: ANN001, ANN202 - thin error boundary for every command
    from dreamrelation.checks import disk_full_message

    _quiet_loading_bars()
    try:
        return fn(*args, **kwargs)
    except DreamRelationError as exc:
        if _DEBUG["on"]:
            raise
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        message = disk_full_message(exc)
        if message is None or _DEBUG["on"]:
            raise
        console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _quiet_loading_bars() -> None:
    """diffusers' "Loading pipeline components" bars would tear our progress bars apart; diffusers is
    imported lazily (inside the commands), so its switch is flipped here, once it is loaded.
    transformers' and huggingface_hub's bars follow HF_HUB_DISABLE_PROGRESS_BARS (set in main)."""
    diffusers = sys.modules.get("diffusers")
    if diffusers is not None and not _DEBUG["on"]:
        diffusers.utils.logging.disable_progress_bar()


def _model_overrides(backbone: str | None, model: str | None, dtype: str | None) -> dict[str, object]:
    return {"model.backbone": backbone, "model.model": model, "model.dtype": dtype}


#: what --help shows; the values live in config.py's models (tests/core/test_cli_help.py keeps them equal)
BackboneChoice = Literal["mochi", "wan", "hunyuan", "toy"] | None
DtypeChoice = Literal["float32", "bfloat16", "float16"] | None
BACKBONE_OPT = typer.Option(None, "--backbone", help="Video backbone.", show_default="mochi")
MODEL_OPT = typer.Option(
    None, "--model", help="Hub id or local diffusers folder.", show_default="genmo/mochi-1-preview"
)
DTYPE_OPT = typer.Option(None, "--dtype", help="Weights dtype.", show_default="bfloat16")


@app.command()
def cache(
    data: list[Path] = typer.Option(None, "--data", help="Dataset folder (repeat for several relations)."),
    output: Path = typer.Option(None, "--output", "-o", help="Cache folder to write."),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    backbone: BackboneChoice = BACKBONE_OPT,
    model: str = MODEL_OPT,
    dtype: DtypeChoice = DTYPE_OPT,
    num_frames: int = typer.Option(
        None, "--num-frames", help="Frames per clip (Mochi: 6k+1, Wan/Hunyuan: 4k+1).", show_default="61"
    ),
    height: int = typer.Option(None, "--height", show_default="480"),
    width: int = typer.Option(None, "--width", show_default="848"),
    relation_mask: Literal["bbox", "sum"] | None = typer.Option(
        None, "--relation-mask", help="bbox (paper) or sum (official code).", show_default="bbox"
    ),
) -> None:
    """Precompute latents, text embeddings and latent masks once; resumable (skips what is done)."""
    from dreamrelation.cache import build_cache
    from dreamrelation.config import CacheConfig, load_config

    overrides = {
        **_model_overrides(backbone, model, dtype),
        "data": [{"path": str(p)} for p in data] if data else None,
        "output": str(output) if output else None,
        "video.num_frames": num_frames,
        "video.height": height,
        "video.width": width,
        "relation_mask": relation_mask,
    }
    cfg = _run(load_config, CacheConfig, config, **overrides)
    _run(preflight_cache, cfg)
    summary = _run(build_cache, cfg)
    console.print(f"cached {len(summary.encoded)} new, {len(summary.skipped)} up to date -> {summary.output}")


@app.command()
def train(
    cache_dirs: list[Path] = typer.Option(
        None, "--cache", help="Cache folder(s) from `dreamrelation cache`."
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Run folder: checkpoints, LoRA files, logs."),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    backbone: BackboneChoice = BACKBONE_OPT,
    model: str = MODEL_OPT,
    dtype: DtypeChoice = DTYPE_OPT,
    max_steps: int = typer.Option(None, "--max-steps", help="Iterations (paper).", show_default="2400"),
    batch_size: int = typer.Option(None, "--batch-size", show_default="1"),
    seed: int = typer.Option(None, "--seed", show_default="0"),
    tensorboard: bool = typer.Option(None, "--tensorboard/--no-tensorboard", help="Log to <output>/ for TB."),
    gradient_checkpointing: bool = typer.Option(
        None,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute activations in backward (default auto: on at large geometry).",
    ),
    fp8_base: bool = typer.Option(None, "--fp8-base/--no-fp8-base", help="Store the frozen base in FP8."),
    block_offload: bool = typer.Option(
        None, "--block-offload/--no-block-offload", help="Keep frozen block weights on the CPU."
    ),
    optimizer: str = typer.Option(None, "--optimizer", help="adamw or adamw8bit (bitsandbytes, CUDA)."),
    accumulate: int = typer.Option(None, "--gradient-accumulation-steps", help="Micro-batches per step."),
    lr_schedule: str = typer.Option(None, "--lr-schedule", help="constant (paper) or cosine, after warmup."),
    latent_sampling: str = typer.Option(
        None, "--latent-sampling", help="mean (paper) or sample: a fresh VAE posterior draw per step."
    ),
    fsdp: bool = typer.Option(None, "--fsdp/--no-fsdp", help="Shard the frozen base across processes."),
    method: str = typer.Option(
        None,
        "--method",
        help="dreamrelation (default), direct_lora, reversion, motion_inversion or motion_inversion_rcl"
        " (docs/baselines.md); each sets its own defaults for settings you leave unset.",
    ),
    relation_template: str = typer.Option(
        None,
        "--relation-template",
        help="reversion: where the relation is in the captions, e.g. '{a} is shaking hands with {b}'"
        " (default: the NTU template of the relation label).",
    ),
) -> None:
    """Train the Relation LoRA triplet with Hybrid Mask Training and the contrastive loss
    (or, with --method, one of the paper's baselines on the same harness).

    Resumes automatically from the newest checkpoint in --output. Multi-GPU: `accelerate launch
    -m dreamrelation.cli train ...`.
    """
    from dreamrelation.checks import output_lock
    from dreamrelation.config import TrainConfig, load_config

    overrides = {
        **_model_overrides(backbone, model, dtype),
        "cache": [str(p) for p in cache_dirs] if cache_dirs else None,
        "output": str(output) if output else None,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "seed": seed,
        "tensorboard": tensorboard,
        # memory savers (docs/memory.md)
        "gradient_checkpointing": gradient_checkpointing,
        "fp8_base": fp8_base,
        "block_offload": block_offload,
        "optimizer": optimizer,
        "gradient_accumulation_steps": accumulate,
        "lr_schedule": lr_schedule,
        "latent_sampling": latent_sampling,
        "fsdp": fsdp,
        "method": method,
        "reversion.relation_template": relation_template,
    }
    cfg = _run(load_config, TrainConfig, config, **overrides)
    _run(preflight_train, cfg)
    lock = output_lock(cfg.output)
    _run(lock.__enter__)
    try:
        result = _train_until_done_or_interrupted(cfg)
    finally:
        lock.__exit__(None, None, None)
    table = Table(title="training")
    for col in ("method", "steps", "final loss", "file for generate --lora", "triplet"):
        table.add_column(col)
    final = result.history[-1]["loss"] if result.history else float("nan")
    triplet = str(result.triplet_path or "-")
    table.add_row(cfg.method, str(len(result.history)), f"{final:.4f}", str(result.lora_path), triplet)
    Console().print(table)


class _StopRequested(Exception):
    """Ctrl-C arrived; raised between two steps, where the trainer's state is consistent."""


def _train_until_done_or_interrupted(cfg: TrainConfig):  # noqa: ANN202 - a TrainResult
    """Run training; the first Ctrl-C finishes the current step, saves a checkpoint and says how to
    resume (a second Ctrl-C stops at once, losing only the steps since the last checkpoint)."""
    import signal

    from dreamrelation.train import Trainer

    trainer = _run(Trainer, cfg)
    stop = {"requested": False}

    def on_sigint(signum: int, frame: object) -> None:
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        console.print("\nCtrl-C: saving a checkpoint after this step (press again to stop at once)")

    def on_step(record: dict) -> None:
        if stop["requested"]:
            raise _StopRequested

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: Ctrl-C keeps its default behaviour
        previous = None
    try:
        return _run(trainer.run, on_step=on_step)
    except _StopRequested:
        trainer.save()
        console.print(
            f"stopped at step {trainer.step}; checkpoint saved in {trainer.checkpoint_root}. "
            "Resume: run the same `dreamrelation train` command again."
        )
        raise typer.Exit(130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


@app.command()
def generate(
    prompt: list[str] = typer.Option(None, "--prompt", "-p", help="Prompt (repeatable)."),
    prompts: str = typer.Option(
        None,
        "--prompts",
        help="Prompt set to render, each with its own seed, plus a manifest for `evaluate`: a JSON/JSONL "
        "file, or 'paper' (the shipped 26 x 40 evaluation set). Resumable.",
    ),
    relations: str = typer.Option(
        None, "--relations", help="With --prompts: only these relations (e.g. shaking_hands,A055)."
    ),
    lora: Path = typer.Option(
        None,
        "--lora",
        help="The file training wrote (relation_lora / relation_token / motion_embeddings .safetensors);"
        " omit for the base model.",
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Folder for the MP4s and GIF previews."),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    backbone: BackboneChoice = BACKBONE_OPT,
    model: str = MODEL_OPT,
    dtype: DtypeChoice = DTYPE_OPT,
    steps: int = typer.Option(None, "--steps", help="Sampling steps (paper).", show_default="64"),
    guidance: float = typer.Option(
        None, "--guidance", help="Classifier-free guidance (paper).", show_default="6.0"
    ),
    num_frames: int = typer.Option(None, "--num-frames", show_default="61"),
    height: int = typer.Option(None, "--height", show_default="480"),
    width: int = typer.Option(None, "--width", show_default="848"),
    seed: int = typer.Option(None, "--seed", show_default="0"),
    fuse: bool = typer.Option(None, "--fuse/--no-fuse", help="Fuse the LoRA into the weights first."),
    cpu_offload: bool = typer.Option(
        None, "--cpu-offload/--no-cpu-offload", help="Each model on the GPU only while it runs."
    ),
    vae_tiling: bool = typer.Option(None, "--vae-tiling/--no-vae-tiling", help="Decode in spatial tiles."),
    vae_slicing: bool = typer.Option(
        None, "--vae-slicing/--no-vae-slicing", help="Decode one video at a time."
    ),
) -> None:
    """Render the learned relation for new subjects with what training saved: the relation + FFN
    LoRAs (or a baseline's LoRA, relation token or motion embeddings, detected from the file).
    A ReVersion token must appear in the prompts, e.g. "A dog <R> a cat."."""
    from dreamrelation.config import GenerateConfig, load_config
    from dreamrelation.generate import generate as run_generate
    from dreamrelation.generate import generate_prompt_set

    overrides = {
        **_model_overrides(backbone, model, dtype),
        "prompts": list(prompt) if prompt else None,
        "prompt_file": prompts,
        "relations": relations,
        "lora": str(lora) if lora else None,
        "output": str(output) if output else None,
        "num_inference_steps": steps,
        "guidance_scale": guidance,
        "num_frames": num_frames,
        "height": height,
        "width": width,
        "seed": seed,
        "fuse": fuse,
        "cpu_offload": cpu_offload,
        "vae_tiling": vae_tiling,
        "vae_slicing": vae_slicing,
    }
    cfg = _run(load_config, GenerateConfig, config, **overrides)
    _run(preflight_generate, cfg)
    if cfg.prompt_file:
        summary = _run(generate_prompt_set, cfg)
        console.print(
            f"rendered {len(summary.rendered)}, {len(summary.skipped)} already there -> {summary.manifest}"
        )
        return
    for path in _run(run_generate, cfg):
        console.print(f"wrote {path} (+ .gif)")


@app.command()
def evaluate(
    videos: Path = typer.Argument(..., help="Folder from `generate --prompts` (has manifest.json)."),
    reference: Path = typer.Option(None, "--reference", help="Folder of real videos for FVD."),
    metrics: str = typer.Option(
        None, "--metrics", help="Comma-separated: relation_accuracy, clip, fvd (default: all that apply)."
    ),
    output: Path = typer.Option(
        None, "--output", "-o", help="Where results go (default: VIDEOS/evaluation)."
    ),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    judge: str = typer.Option(
        None, "--judge", help="openai (any compatible endpoint) or local (transformers)."
    ),
    judge_url: str = typer.Option(None, "--judge-url", help="Endpoint base URL (default: DashScope's)."),
    judge_model: str = typer.Option(
        None, "--judge-model", help="Endpoint model name, or hub id/folder for --judge local."
    ),
    judge_key_env: str = typer.Option(
        None, "--judge-key-env", help="NAME of the env variable holding the key."
    ),
    judge_frames: int = typer.Option(None, "--judge-frames", help="Frames shown to the judge (default 8)."),
    judge_cache: Path = typer.Option(None, "--judge-cache", help="Answer cache folder."),
    clip_model: str = typer.Option(None, "--clip-model", help="CLIP hub id or folder."),
    fvd: str = typer.Option(
        None, "--fvd", help="FVD features: i3d (standard; needs --i3d-weights) or videomae."
    ),
    i3d_weights: Path = typer.Option(None, "--i3d-weights", help="Local I3D weights (.safetensors / .pt)."),
    videomae_model: str = typer.Option(None, "--videomae-model", help="VideoMAE hub id or folder."),
    device: str = typer.Option(None, "--device", help="cuda, cpu, ... (default: cuda when available)."),
) -> None:
    """Relation accuracy (VLM judge), CLIP-T, temporal consistency and FVD of generated videos:
    per video and aggregate results as JSON + CSV, and a table here. See docs/evaluation.md."""
    from dreamrelation.config import load_config
    from dreamrelation.evaluation.evaluate import (
        EvaluateConfig,
        evaluate_folder,
        summary_table,
        write_results,
    )

    overrides = {
        "metrics": [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
        "reference": str(reference) if reference else None,
        "output": str(output) if output else None,
        "judge.backend": judge,
        "judge.url": judge_url,
        "judge.model": judge_model,
        "judge.api_key_env": judge_key_env,
        "judge.num_frames": judge_frames,
        "judge.cache": str(judge_cache) if judge_cache else None,
        "clip_model": clip_model,
        "fvd.extractor": fvd,
        "fvd.i3d_weights": str(i3d_weights) if i3d_weights else None,
        "fvd.videomae_model": videomae_model,
        "device": device,
    }
    cfg = _run(load_config, EvaluateConfig, config, **overrides)
    results = _run(evaluate_folder, videos, cfg)
    paths = write_results(results, cfg.output or videos / "evaluation")
    Console(width=80).print(summary_table(results))
    if results.overall.get("n_unparsed"):
        console.print(
            f"[yellow]warning:[/] {results.overall['n_unparsed']} judge replies were neither yes nor no "
            "(counted as not shown; see judge_reply in per_video.csv)"
        )
    console.print(f"wrote {', '.join(str(p) for p in paths)}")


@app.command()
def demo(
    relation: str = typer.Option("shaking_hands", "--relation", "-r", help="Toy relation to learn."),
    output: Path = typer.Option(Path("dreamrelation-demo"), "--output", "-o", help="Where everything goes."),
    steps: int = typer.Option(None, "--steps", help="Training steps (default: the demo's setting)."),
    exemplars: int = typer.Option(None, "--exemplars", help="Number of exemplar videos (default 20)."),
    eval_prompts: int = typer.Option(None, "--eval-prompts", help="Prompts with new subjects to evaluate."),
    sampling_steps: int = typer.Option(None, "--sampling-steps", help="Sampling steps per video."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The whole method on the toy world, on CPU: exemplars -> masks -> cache -> train -> generate ->
    oracle evaluation -> report.html (base model vs DreamRelation on new subjects)."""
    from dreamrelation.toyworld.demo import run_demo
    from dreamrelation.toyworld.experiment import ExperimentConfig

    cfg = _run(
        _experiment_config,
        ExperimentConfig,
        relation=relation,
        train_steps=steps,
        exemplars=exemplars,
        eval_prompts=eval_prompts,
        sampling_steps=sampling_steps,
        seed=seed,
    )
    from dreamrelation.checks import check_output_dir

    _run(check_output_dir, output, "demo output")
    _run(run_demo, cfg, output)


def _experiment_config(cls, **values: object):  # noqa: ANN001, ANN202
    from pydantic import ValidationError

    from dreamrelation.errors import ConfigError
    from dreamrelation.toyworld.world import RELATIONS

    relation = values.get("relation")
    if relation is not None and relation not in RELATIONS:
        raise ConfigError(f"unknown relation {relation!r}; the toy world has: {', '.join(RELATIONS)}")
    try:
        return cls(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(str(exc)) from exc


benchmark_app = typer.Typer(no_args_is_help=True, add_completion=False)
app.add_typer(benchmark_app, name="benchmark", help="Measured comparisons (methods, ablations).")


@benchmark_app.command("run")
def benchmark_run(
    config: Path = typer.Argument(..., help="Benchmark YAML (docs/benchmark.md)."),
    output: Path = typer.Option(
        None, "--output", "-o", help="Results folder, resumable (default: runs/benchmark/<config name>)."
    ),
    report_only: bool = typer.Option(
        False, "--report-only", help="Write the tables of the results already in --output; run nothing."
    ),
) -> None:
    """Cache, train every method x seed, render the evaluation prompts, evaluate and write the table
    (Markdown, CSV, PNG); a rerun skips whatever is done."""
    import sys

    from dreamrelation.benchmark import load_benchmark_config, run_benchmark

    cfg = _run(load_benchmark_config, config)
    output = output or Path("runs/benchmark") / config.stem
    command = "dreamrelation " + " ".join(sys.argv[1:])
    _run(run_benchmark, cfg, output, command=command, report_only=report_only)
    console.print((output / "benchmark.md").read_text(), markup=False, highlight=False)
    console.print(f"table: {output / 'benchmark.md'}, {output / 'benchmark.csv'}, {output / 'benchmark.png'}")


@benchmark_app.command("toy")
def benchmark_toy(
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds (>= 3 for mean ± std)."),
    methods: str = typer.Option(None, "--methods", help="Comma-separated subset (default: all)."),
    relation: str = typer.Option(
        "shaking_hands", "--relation", "-r", help="A relation, a comma-separated list, or 'all' (all eight)."
    ),
    steps: int = typer.Option(None, "--steps", help="Training steps per method."),
    eval_prompts: int = typer.Option(None, "--eval-prompts"),
    model: str = typer.Option(None, "--model", help="Toy base model: 'shipped' or a pretrained folder."),
    output: Path = typer.Option(Path("runs/toy-benchmark"), "--output", "-o", help="Results (resumable)."),
    docs: Path = typer.Option(
        None, "--docs", help="Markdown table to write (default: OUTPUT/toy_benchmark.md).", show_default=False
    ),
    report_only: bool = typer.Option(
        False, "--report-only", help="Write the tables of the results already in --output; run nothing."
    ),
    print_config: bool = typer.Option(
        False,
        "--print-config",
        help="Write the exemplar folders into --output and print the same benchmark as a `benchmark run` "
        "YAML; run nothing else.",
    ),
) -> None:
    """Base model, direct LoRA, DreamRelation, ablations and LoRA placements in the toy world, per
    relation and averaged over relations: a preset of `benchmark run` (docs/toyworld.md)."""
    import sys

    from dreamrelation.toyworld import benchmark as toy
    from dreamrelation.toyworld.experiment import ExperimentConfig
    from dreamrelation.toyworld.world import RELATIONS

    chosen = methods.split(",") if methods else list(toy.METHODS)
    relations = list(RELATIONS) if relation == "all" else relation.split(",")
    cfg = _run(
        _experiment_config, ExperimentConfig, train_steps=steps, eval_prompts=eval_prompts, model=model
    )
    seed_list = _run(_int_list, seeds, "--seeds")
    if print_config:
        typer.echo(_run(toy.preset_yaml, cfg, relations, seed_list, chosen, output), nl=False)
        return
    command = "dreamrelation " + " ".join(sys.argv[1:])
    # beside the results by default: a run never overwrites a committed report unless asked to
    report = _run(
        toy.run_toy_benchmark, cfg, relations, seed_list, chosen, output,
        command=command, docs=docs, report_only=report_only,
    )  # fmt: skip
    console.print(report, markup=False, highlight=False)


def _int_list(text: str, flag: str) -> list[int]:
    from dreamrelation.errors import ConfigError

    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a comma-separated list of integers") from None


export_app = typer.Typer(no_args_is_help=True, add_completion=False)
app.add_typer(export_app, name="export", help="Convert a trained LoRA for other tools (ComfyUI).")


@export_app.command("comfyui")
def export_comfyui(
    lora: Path = typer.Argument(..., help="relation_lora.safetensors written by `dreamrelation train`."),
    output: Path = typer.Option(None, "--output", "-o", help="File or folder (default: beside LORA)."),
    model: str = typer.Option(
        None, "--model", help="Hub id or folder for the layer sizes (default: the LoRA's model)."
    ),
) -> None:
    """Write the LoRA under the original checkpoint's key names (fused Q/K/V), which ComfyUI loads
    with its LoraLoaderModelOnly node. `train` already writes this file beside the LoRA."""
    from dreamrelation.comfyui import write_comfyui_lora

    path = _run(write_comfyui_lora, lora, output=output, model=model)
    console.print(f"wrote {path}")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Library noise (deprecation notices, loading bars) would tear our progress bars apart.
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for library in ("diffusers", "transformers", "peft", "accelerate", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=library)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=library)
    # diffusers' Mochi RoPE asks for a float32 autocast that torch refuses, harmlessly, on every call
    warnings.filterwarnings("ignore", message="In CPU autocast", category=UserWarning)
    app()


if __name__ == "__main__":
    main()
