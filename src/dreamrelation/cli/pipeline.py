"""The pipeline's commands, one per stage of the data flow: `cache` -> `train` -> `generate` -> `evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from dreamrelation.cli.options import (
    BACKBONE_OPT,
    CONFIG_OPT,
    DTYPE_OPT,
    EPILOG,
    MODEL_OPT,
    SET_OPT,
    BackboneChoice,
    DtypeChoice,
    config_from_cli,
    help_config_option,
    setting,
)
from dreamrelation.preflight import preflight_cache, preflight_generate, preflight_train

if TYPE_CHECKING:
    from dreamrelation.config import TrainConfig
from dreamrelation.cli.boundary import console, run_claimed
from dreamrelation.cli.boundary import run_command as _run


def cache(
    ctx: typer.Context,
    data: list[Path] = typer.Option(
        None, "--data", help="Dataset folder (repeat for several relations; --set data=[{path: ...}])."
    ),
    output: Path = setting("output", "--output", "-o", help="Cache folder to write."),
    config: Path = CONFIG_OPT,
    sets: list[str] = SET_OPT,
    backbone: BackboneChoice = BACKBONE_OPT,
    model: str = MODEL_OPT,
    dtype: DtypeChoice = DTYPE_OPT,
    num_frames: int = setting("video.num_frames", "--num-frames"),
    height: int = setting("video.height", "--height"),
    width: int = setting("video.width", "--width"),
    help_config: bool = help_config_option("dreamrelation.config:CacheConfig"),
) -> None:
    """Precompute latents, text embeddings and latent masks once; resumable (skips what is done)."""
    from dreamrelation.cache import build_cache
    from dreamrelation.config import CacheConfig

    sources = [{"path": str(p)} for p in data] if data else None
    cfg = _run(config_from_cli, ctx, CacheConfig, config, sets, data=sources)
    _run(preflight_cache, cfg)
    summary = run_claimed(cfg.output, "cache", build_cache, cfg)
    console.print(f"cached {len(summary.encoded)} new, {len(summary.skipped)} up to date -> {summary.output}")


def train(
    ctx: typer.Context,
    cache_dirs: list[Path] = setting("cache", "--cache", help="Cache folder(s) from `dreamrelation cache`."),
    output: Path = setting("output", "--output", "-o", help="Run folder: checkpoints, LoRA files, logs."),
    config: Path = CONFIG_OPT,
    sets: list[str] = SET_OPT,
    backbone: BackboneChoice = BACKBONE_OPT,
    model: str = MODEL_OPT,
    dtype: DtypeChoice = DTYPE_OPT,
    method: str = setting(
        "method", "--method", help="dreamrelation, or a baseline of the paper (docs/baselines.md)."
    ),
    # named flags for what users reach for every day; each is exactly --set KEY=VALUE
    max_steps: int = setting("max_steps", "--max-steps"),
    batch_size: int = setting("batch_size", "--batch-size"),
    seed: int = setting("seed", "--seed"),
    gradient_checkpointing: bool = setting(
        "gradient_checkpointing", "--gradient-checkpointing/--no-gradient-checkpointing"
    ),
    fp8_base: bool = setting("fp8_base", "--fp8-base/--no-fp8-base"),
    block_offload: bool = setting("block_offload", "--block-offload/--no-block-offload"),
    optimizer: str = setting("optimizer", "--optimizer"),
    accumulate: int = setting("gradient_accumulation_steps", "--gradient-accumulation-steps"),
    fsdp: bool = setting("fsdp", "--fsdp/--no-fsdp"),
    first_frame: bool = setting(
        "first_frame",
        "--first-frame/--no-first-frame",
        help="Image-to-video: condition on each clip's first frame (backbones with an I2V form).",
    ),
    help_config: bool = help_config_option("dreamrelation.config:TrainConfig"),
) -> None:
    """Train the Relation LoRA triplet with Hybrid Mask Training and the contrastive loss
    (or, with --method, one of the paper's baselines on the same harness).

    Resumes automatically from the newest checkpoint in --output. Multi-GPU: `accelerate launch
    -m dreamrelation.cli.app train ...`.
    """
    from dreamrelation.config import TrainConfig

    cfg = _run(config_from_cli, ctx, TrainConfig, config, sets)
    _run(preflight_train, cfg)
    result = run_claimed(cfg.output, "train", _train_until_done_or_interrupted, cfg)
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

    from dreamrelation.training.loop import Trainer

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


def generate(
    ctx: typer.Context,
    prompt: list[str] = setting("prompts", "--prompt", "-p", help="Prompt (repeatable)."),
    prompts: str = setting(
        "prompt_file",
        "--prompts",
        help="Prompt set to render, each with its own seed, plus a manifest for `evaluate`: a JSON/JSONL "
        "file, or 'paper' (the shipped 26 x 40 evaluation set). Resumable.",
    ),
    relations: str = setting("relations", "--relations", help="With --prompts: only these relations."),
    lora: Path = setting(
        "lora",
        "--lora",
        help="The file training wrote (relation_lora / relation_token / motion_embeddings .safetensors);"
        " omit for the base model.",
    ),
    output: Path = setting(
        "output", "--output", "-o", help="Folder for the MP4s (and GIF previews, except with --prompts)."
    ),
    config: Path = CONFIG_OPT,
    sets: list[str] = SET_OPT,
    backbone: BackboneChoice = BACKBONE_OPT,
    model: str = MODEL_OPT,
    dtype: DtypeChoice = DTYPE_OPT,
    # named flags for what users reach for every day; each is exactly --set KEY=VALUE
    steps: int = setting("num_inference_steps", "--steps"),
    guidance: float = setting("guidance_scale", "--guidance"),
    num_frames: int = setting("num_frames", "--num-frames"),
    height: int = setting("height", "--height"),
    width: int = setting("width", "--width"),
    seed: int = setting("seed", "--seed"),
    cpu_offload: bool = setting("cpu_offload", "--cpu-offload/--no-cpu-offload"),
    image: Path = setting(
        "image",
        "--image",
        help="Image-to-video: a still image (same aspect ratio as the video) as the first frame.",
    ),
    help_config: bool = help_config_option("dreamrelation.config:GenerateConfig"),
) -> None:
    """Render the learned relation for new subjects with what training saved: the relation + FFN
    LoRAs (or a baseline's LoRA, relation token or motion embeddings, detected from the file).
    A ReVersion token must appear in the prompts, e.g. "A dog <R> a cat."."""
    from dreamrelation.config import GenerateConfig
    from dreamrelation.generation.render import generate as run_generate
    from dreamrelation.generation.render import generate_prompt_set

    cfg = _run(config_from_cli, ctx, GenerateConfig, config, sets)
    _run(preflight_generate, cfg)
    if cfg.prompt_file:
        summary = run_claimed(cfg.output, "generate", generate_prompt_set, cfg)
        console.print(
            f"rendered {len(summary.rendered)}, {len(summary.skipped)} already there -> {summary.manifest}"
        )
        return
    for path in run_claimed(cfg.output, "generate", run_generate, cfg):
        console.print(f"wrote {path} (+ .gif)")


def evaluate(
    ctx: typer.Context,
    videos: Path = typer.Argument(..., help="Folder from `generate --prompts` (has manifest.json)."),
    reference: Path = setting("reference", "--reference", help="Folder of real videos for FVD."),
    metrics: str = typer.Option(
        None, "--metrics", help="Comma-separated: relation_accuracy, clip, fvd (--set metrics=[...])."
    ),
    output: Path = setting("output", "--output", "-o", help="Where results go (default: VIDEOS/evaluation)."),
    config: Path = CONFIG_OPT,
    sets: list[str] = SET_OPT,
    # named flags for what users reach for every day; each is exactly --set KEY=VALUE
    judge: str = setting("judge.backend", "--judge"),
    judge_url: str = setting("judge.url", "--judge-url"),
    judge_model: str = setting("judge.model", "--judge-model"),
    judge_key_env: str = setting("judge.api_key_env", "--judge-key-env"),
    fvd: str = setting("fvd.extractor", "--fvd"),
    i3d_weights: Path = setting("fvd.i3d_weights", "--i3d-weights"),
    device: str = setting("device", "--device"),
    help_config: bool = help_config_option("dreamrelation.evaluation.evaluate:EvaluateConfig"),
) -> None:
    """Relation accuracy (VLM judge), CLIP-T, temporal consistency and FVD of generated videos:
    per video and aggregate results as JSON + CSV, and a table here. See docs/evaluation.md."""
    from dreamrelation.evaluation.evaluate import (
        EvaluateConfig,
        evaluate_folder,
        summary_table,
        write_results,
    )

    chosen = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    cfg = _run(config_from_cli, ctx, EvaluateConfig, config, sets, metrics=chosen)
    results = _run(evaluate_folder, videos, cfg)
    paths = write_results(results, cfg.output or videos / "evaluation")
    Console(width=80).print(summary_table(results))
    if results.overall.get("n_unparsed"):
        console.print(
            f"[yellow]warning:[/] {results.overall['n_unparsed']} judge replies were neither yes nor no "
            "(counted as not shown; see judge_reply in per_video.csv)"
        )
    console.print(f"wrote {', '.join(str(p) for p in paths)}")


def register(app: typer.Typer) -> None:
    """Add `cache`, `train`, `generate` and `evaluate` to the main command line."""
    for command in (cache, train, generate, evaluate):
        app.command(epilog=EPILOG)(command)
