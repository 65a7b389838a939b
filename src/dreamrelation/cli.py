"""The `dreamrelation` command line: one command per stage of the data flow.

data -> `cache` -> `train` -> LoRA file -> `generate`; `analyze` sits beside. Every config-driven
command takes an optional YAML config (validated before any work starts), `--set key.path=value`
for any of its settings and a few named flags, all through ``dreamrelation.cli_config``.
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
from dreamrelation.cli_config import (
    EPILOG,
    config_from_cli,
    config_option,
    help_config_option,
    set_option,
    setting,
)

if TYPE_CHECKING:
    from dreamrelation.config import TrainConfig
from dreamrelation.cli_toy import register as register_toy
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


#: what --help shows; the values live in config.py's models (tests/core/test_cli_help.py keeps them equal)
BackboneChoice = Literal["mochi", "wan", "hunyuan", "toy"] | None
DtypeChoice = Literal["float32", "bfloat16", "float16"] | None
BACKBONE_OPT = setting("model.backbone", "--backbone", help="Video backbone.")
MODEL_OPT = setting("model.model", "--model", help="Hub id or local diffusers folder.")
DTYPE_OPT = setting("model.dtype", "--dtype", help="Weights dtype.")
SET_OPT = set_option()
CONFIG_OPT = config_option()


@app.command(epilog=EPILOG)
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
    relation_mask: Literal["bbox", "sum"] | None = setting("relation_mask", "--relation-mask"),
    help_config: bool = help_config_option("dreamrelation.config:CacheConfig"),
) -> None:
    """Precompute latents, text embeddings and latent masks once; resumable (skips what is done)."""
    from dreamrelation.cache import build_cache
    from dreamrelation.config import CacheConfig

    sources = [{"path": str(p)} for p in data] if data else None
    cfg = _run(config_from_cli, ctx, CacheConfig, config, sets, data=sources)
    _run(preflight_cache, cfg)
    summary = _run(build_cache, cfg)
    console.print(f"cached {len(summary.encoded)} new, {len(summary.skipped)} up to date -> {summary.output}")


@app.command(epilog=EPILOG)
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
    # shorthands kept for existing command lines; each is exactly --set KEY=VALUE
    max_steps: int = setting("max_steps", "--max-steps"),
    batch_size: int = setting("batch_size", "--batch-size"),
    seed: int = setting("seed", "--seed"),
    tensorboard: bool = setting("tensorboard", "--tensorboard/--no-tensorboard"),
    gradient_checkpointing: bool = setting(
        "gradient_checkpointing", "--gradient-checkpointing/--no-gradient-checkpointing"
    ),
    fp8_base: bool = setting("fp8_base", "--fp8-base/--no-fp8-base"),
    block_offload: bool = setting("block_offload", "--block-offload/--no-block-offload"),
    optimizer: str = setting("optimizer", "--optimizer"),
    accumulate: int = setting("gradient_accumulation_steps", "--gradient-accumulation-steps"),
    lr_schedule: str = setting("lr_schedule", "--lr-schedule"),
    latent_sampling: str = setting("latent_sampling", "--latent-sampling"),
    fsdp: bool = setting("fsdp", "--fsdp/--no-fsdp"),
    relation_template: str = setting("reversion.relation_template", "--relation-template"),
    help_config: bool = help_config_option("dreamrelation.config:TrainConfig"),
) -> None:
    """Train the Relation LoRA triplet with Hybrid Mask Training and the contrastive loss
    (or, with --method, one of the paper's baselines on the same harness).

    Resumes automatically from the newest checkpoint in --output. Multi-GPU: `accelerate launch
    -m dreamrelation.cli train ...`.
    """
    from dreamrelation.checks import output_lock
    from dreamrelation.config import TrainConfig

    cfg = _run(config_from_cli, ctx, TrainConfig, config, sets)
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


@app.command(epilog=EPILOG)
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
    # shorthands kept for existing command lines; each is exactly --set KEY=VALUE
    steps: int = setting("num_inference_steps", "--steps"),
    guidance: float = setting("guidance_scale", "--guidance"),
    num_frames: int = setting("num_frames", "--num-frames"),
    height: int = setting("height", "--height"),
    width: int = setting("width", "--width"),
    seed: int = setting("seed", "--seed"),
    fuse: bool = setting("fuse", "--fuse/--no-fuse"),
    cpu_offload: bool = setting("cpu_offload", "--cpu-offload/--no-cpu-offload"),
    vae_tiling: bool = setting("vae_tiling", "--vae-tiling/--no-vae-tiling"),
    vae_slicing: bool = setting("vae_slicing", "--vae-slicing/--no-vae-slicing"),
    help_config: bool = help_config_option("dreamrelation.config:GenerateConfig"),
) -> None:
    """Render the learned relation for new subjects with what training saved: the relation + FFN
    LoRAs (or a baseline's LoRA, relation token or motion embeddings, detected from the file).
    A ReVersion token must appear in the prompts, e.g. "A dog <R> a cat."."""
    from dreamrelation.config import GenerateConfig
    from dreamrelation.generate import generate as run_generate
    from dreamrelation.generate import generate_prompt_set

    cfg = _run(config_from_cli, ctx, GenerateConfig, config, sets)
    _run(preflight_generate, cfg)
    if cfg.prompt_file:
        summary = _run(generate_prompt_set, cfg)
        console.print(
            f"rendered {len(summary.rendered)}, {len(summary.skipped)} already there -> {summary.manifest}"
        )
        return
    for path in _run(run_generate, cfg):
        console.print(f"wrote {path} (+ .gif)")


@app.command(epilog=EPILOG)
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
    # shorthands kept for existing command lines; each is exactly --set KEY=VALUE
    judge: str = setting("judge.backend", "--judge"),
    judge_url: str = setting("judge.url", "--judge-url"),
    judge_model: str = setting("judge.model", "--judge-model"),
    judge_key_env: str = setting("judge.api_key_env", "--judge-key-env"),
    judge_frames: int = setting("judge.num_frames", "--judge-frames"),
    judge_cache: Path = setting("judge.cache", "--judge-cache"),
    clip_model: str = setting("clip_model", "--clip-model"),
    fvd: str = setting("fvd.extractor", "--fvd"),
    i3d_weights: Path = setting("fvd.i3d_weights", "--i3d-weights"),
    videomae_model: str = setting("fvd.videomae_model", "--videomae-model"),
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


@app.command(epilog=EPILOG)
def demo(
    ctx: typer.Context,
    output: Path = typer.Option(Path("dreamrelation-demo"), "--output", "-o", help="Where everything goes."),
    config: Path = CONFIG_OPT,
    sets: list[str] = SET_OPT,
    # shorthands kept for existing command lines; each is exactly --set KEY=VALUE
    relation: str = setting("relation", "--relation", "-r"),
    steps: int = setting("train_steps", "--steps"),
    exemplars: int = setting("exemplars", "--exemplars"),
    eval_prompts: int = setting("eval_prompts", "--eval-prompts"),
    sampling_steps: int = setting("sampling_steps", "--sampling-steps"),
    seed: int = setting("seed", "--seed"),
    print_config: bool = typer.Option(
        False,
        "--print-config",
        help="Write the exemplar folder into --output and print the demo's runs as a `benchmark run` "
        "YAML; run nothing else.",
    ),
    help_config: bool = help_config_option("dreamrelation.toyworld.experiment:ExperimentConfig"),
) -> None:
    """The whole method on the toy world, on CPU: exemplars -> masks -> cache -> train -> generate ->
    oracle evaluation (a preset of `benchmark run`: base model, DreamRelation and direct LoRA) -> Q/K/V
    and attention analysis -> report.html. Rerun into the same --output to resume."""
    import sys

    from dreamrelation.toyworld.demo import demo_yaml, run_demo
    from dreamrelation.toyworld.experiment import ExperimentConfig

    cfg = _run(config_from_cli, ctx, ExperimentConfig, config, sets)
    _run(_experiment_config, ExperimentConfig, relation=cfg.relation)  # a relation the toy world has
    from dreamrelation.checks import check_output_dir

    _run(check_output_dir, output, "demo output")
    if print_config:
        typer.echo(_run(demo_yaml, cfg, output), nl=False)
        return
    _run(run_demo, cfg, output, command="dreamrelation " + " ".join(sys.argv[1:]))


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


@benchmark_app.command("run", epilog=EPILOG)
def benchmark_run(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="Benchmark YAML (docs/benchmark.md)."),
    output: Path = typer.Option(
        None, "--output", "-o", help="Results folder, resumable (default: runs/benchmark/<config name>)."
    ),
    sets: list[str] = SET_OPT,
    report_only: bool = typer.Option(
        False, "--report-only", help="Write the tables of the results already in --output; run nothing."
    ),
    help_config: bool = help_config_option("dreamrelation.benchmark:BenchmarkConfig"),
) -> None:
    """Cache, train every method x seed, render the evaluation prompts, evaluate and write the table
    (Markdown, CSV, PNG); a rerun skips whatever is done."""
    import sys

    from dreamrelation.benchmark import BenchmarkConfig, run_benchmark

    cfg = _run(config_from_cli, ctx, BenchmarkConfig, config, sets)
    output = output or Path("runs/benchmark") / config.stem
    command = "dreamrelation " + " ".join(sys.argv[1:])
    _run(run_benchmark, cfg, output, command=command, report_only=report_only)
    console.print((output / "benchmark.md").read_text(), markup=False, highlight=False)
    console.print(f"table: {output / 'benchmark.md'}, {output / 'benchmark.csv'}, {output / 'benchmark.png'}")


@benchmark_app.command("toy")
def benchmark_toy(
    ctx: typer.Context,
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds (>= 3 for mean ± std)."),
    methods: str = typer.Option(None, "--methods", help="Comma-separated subset (default: all)."),
    relation: str = typer.Option(
        "shaking_hands", "--relation", "-r", help="A relation, a comma-separated list, or 'all' (all eight)."
    ),
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
    config: Path = CONFIG_OPT,
    sets: list[str] = SET_OPT,
    # shorthands of the toy experiment's settings; each is exactly --set KEY=VALUE
    steps: int = setting("train_steps", "--steps"),
    eval_prompts: int = setting("eval_prompts", "--eval-prompts"),
    model: str = setting("model", "--model"),
    help_config: bool = help_config_option("dreamrelation.toyworld.experiment:ExperimentConfig"),
) -> None:
    """Base model, direct LoRA, DreamRelation, ablations and LoRA placements in the toy world, per
    relation and averaged over relations: a preset of `benchmark run` (docs/toyworld.md). --config and
    --set reach the toy experiment's settings (every key: --help-config)."""
    import sys

    from dreamrelation.toyworld import benchmark as toy
    from dreamrelation.toyworld.experiment import ExperimentConfig
    from dreamrelation.toyworld.world import RELATIONS

    chosen = methods.split(",") if methods else list(toy.METHODS)
    relations = list(RELATIONS) if relation == "all" else relation.split(",")
    cfg = _run(config_from_cli, ctx, ExperimentConfig, config, sets)
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


register_toy(app)  # `toy pretrain`, `toy codec train|evaluate`: the toy world's base model and codec


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
