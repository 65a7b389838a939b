"""`dreamrelation toy ...`: the demo, the benchmark preset, pretraining the toy world's base model,
training and checking its learned codec.

The command line only: flags -> config (``dreamrelation.cli.options``), the record's command line, the
result tables. The work is in the library modules :mod:`dreamrelation.toyworld.pretrain` and
:mod:`dreamrelation.toyworld.codec`, which import torch at the top; they are imported inside the
command bodies, so `dreamrelation --help` answers without torch.
"""

from __future__ import annotations

import shlex
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from dreamrelation.cli.boundary import run_claimed, run_command
from dreamrelation.cli.options import (
    CONFIG_OPT,
    EPILOG,
    SET_OPT,
    config_from_cli,
    config_option,
    help_config_option,
    set_option,
    setting,
)
from dreamrelation.toyworld.protocol import ACCEPTANCE_SEED, CALIBRATION_PROMPT_SEED

if TYPE_CHECKING:
    import torch

    from dreamrelation.toyworld.learned_codec import LearnedToyCodec

toy_app = typer.Typer(no_args_is_help=True, add_completion=False)
codec_app = typer.Typer(no_args_is_help=True, add_completion=False)
console = Console()


def register(app: typer.Typer) -> None:
    """Add `toy demo|benchmark|pretrain` and `toy codec train|evaluate` to the main command line."""
    app.add_typer(
        toy_app,
        name="toy",
        short_help="The toy world: `toy demo`, `toy benchmark`, `toy pretrain`, `toy codec`.",
    )


@toy_app.callback()
def toy() -> None:
    """The toy world, where the method is measured on a CPU: the demo, the benchmark preset, and its own
    backbone (pretrained on generic motions, relations held out) and codec."""


toy_app.add_typer(codec_app, name="codec")


@toy_app.command("pretrain", epilog=EPILOG)
def pretrain_command(
    ctx: typer.Context,
    output: Path = setting(
        "output",
        "--output",
        "-o",
        help="Pipeline folder to write (the shipped one is src/dreamrelation/toyworld/weights/base); "
        "the same command run again resumes its checkpoint/.",
    ),
    config: Path = config_option(),
    sets: list[str] = set_option(),
    # named flags for what users reach for every day; each is exactly --set KEY=VALUE
    steps: int = setting("steps", "--steps"),
    time_budget: float = setting("time_budget_s", "--time-budget"),
    batch_size: int = setting("batch_size", "--batch-size"),
    learning_rate: float = setting("learning_rate", "--lr"),
    seed: int = setting("seed", "--seed"),
    size: str = setting("size", "--size"),
    init_from: Path = setting("init_from", "--init-from"),
    codec: Path = setting("codec", "--codec"),
    warmup_steps: int = setting("warmup_steps", "--warmup-steps"),
    min_learning_rate: float = setting("min_learning_rate", "--min-lr"),
    ema_decay: float = setting("ema_decay", "--ema-decay"),
    device: str = setting("device", "--device"),
    autocast: str = setting("autocast", "--autocast"),
    workers: int = setting("workers", "--workers"),
    threads: int = setting("threads", "--threads"),
    run_steps: int = setting("run_steps", "--run-steps"),
    run_time: float = setting("run_time_s", "--run-time"),
    checkpoint_every: float = setting("checkpoint_every_s", "--checkpoint-every"),
    eval_per_relation: int = typer.Option(
        5, "--eval-per-relation", help="Oracle check after training: prompts per relation/motion (0: skip)."
    ),
    eval_prompt_seed: int = typer.Option(
        CALIBRATION_PROMPT_SEED, "--eval-prompt-seed", help="Seed of the oracle check's prompts."
    ),
    help_config: bool = help_config_option("dreamrelation.toyworld.pretrain:PretrainConfig"),
) -> None:
    """Train the toy base model (all transformer weights) on rendered generic motions, relations held
    out, then check it with the oracle and write recipe.json next to the weights."""
    # diffusers' Mochi RoPE asks for a float32 autocast, which CPU autocast refuses (harmlessly).
    warnings.filterwarnings("ignore", message="In CPU autocast, but the target dtype is not supported")
    from dreamrelation.devices import resolve_device
    from dreamrelation.toyworld.backbone import ToyBackbone
    from dreamrelation.toyworld.pretrain import PretrainConfig, evaluate_base, pretrain
    from dreamrelation.toyworld.pretrain import preflight as preflight_toy_pretrain
    from dreamrelation.toyworld.run_state import update_recipe

    cfg = run_command(config_from_cli, ctx, PretrainConfig, config, sets)
    run_command(preflight_toy_pretrain, cfg.model_dump())
    output = cfg.output
    record = run_command(pretrain, config=cfg)
    if not record["finished"]:
        _print_unfinished(record, output)
        return
    arguments = sys.argv[sys.argv.index("pretrain") + 1 :] if "pretrain" in sys.argv else sys.argv[1:]
    record = update_recipe(output, command=shlex.join(["dreamrelation", "toy", "pretrain", *arguments]))
    if eval_per_relation > 0:
        evaluated = ToyBackbone.from_pretrained(output).to(resolve_device(cfg.device))
        evaluation = evaluate_base(evaluated, eval_per_relation, prompt_seed=eval_prompt_seed, batch_size=32)
        record = update_recipe(output, evaluation=evaluation)
    table = Table(title=f"toy base model -> {output}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("steps", str(record["steps"]))
    table.add_row("wall time (s)", f"{record['wall_time_s']:.0f}")
    table.add_row("loss (last 100 steps)", f"{record['loss_last_100']:.4f}")
    for sigma, error in record["validation_denoising_mse"].items():
        table.add_row(f"x̂ MSE at σ={sigma}", f"{error:.4f}")
    for key in ("subject_fidelity", "generic_subject_fidelity", "subject_presence", "relation_accuracy"):
        if key in record.get("evaluation", {}):
            table.add_row(key, f"{record['evaluation'][key]:.3f}")
    console.print(table)


@codec_app.callback()
def codec() -> None:
    """A compressing learned codec for the toy backbone: train it, check it with the oracle."""


def _acceptance_table(scores: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("round trip", justify="right")
    table.add_column("ground truth", justify="right")
    for key in (
        "subject_fidelity",
        "relation_accuracy",
        "generic_subject_fidelity",
        "generic_none_accuracy",
        "background_accuracy",
    ):
        if key in scores["round_trip"]:
            table.add_row(key, f"{scores['round_trip'][key]:.3f}", f"{scores['ground_truth'][key]:.3f}")
    table.add_row("mean abs error (0-255)", f"{scores['mean_abs_error']:.2f}", "0")
    table.add_row("acceptance (>= 0.98 both)", "passed" if scores["passed"] else "FAILED", "")
    return table


@codec_app.command("train", epilog=EPILOG)
def codec_train_command(
    ctx: typer.Context,
    output: Path = setting(
        "output", "--output", "-o", help="Codec folder to write (resumes its checkpoint/)."
    ),
    config: Path = config_option(),
    sets: list[str] = set_option(),
    # shorthands; each is exactly --set KEY=VALUE
    time_budget: float = setting("time_budget_s", "--time-budget"),
    steps: int = setting("steps", "--steps"),
    batch_size: int = setting("batch_size", "--batch-size"),
    learning_rate: float = setting("learning_rate", "--lr"),
    latent_channels: int = setting("latent_channels", "--latent-channels"),
    hidden_channels: int = setting("hidden_channels", "--hidden-channels"),
    sprite_weight: float = setting("sprite_weight", "--sprite-weight"),
    latent_noise: float = setting("latent_noise", "--latent-noise"),
    seed: int = setting("seed", "--seed"),
    init_from: Path = setting("init_from", "--init-from"),
    min_learning_rate: float = setting("min_learning_rate", "--min-lr"),
    warmup_steps: int = setting("warmup_steps", "--warmup-steps"),
    ema_decay: float = setting("ema_decay", "--ema-decay"),
    device: str = setting("device", "--device"),
    threads: int = setting("threads", "--threads"),
    workers: int = setting("workers", "--workers"),
    eval_per_relation: int = typer.Option(
        25,
        "--eval-per-relation",
        help="Acceptance check after training: clips per relation/motion (0: skip).",
    ),
    help_config: bool = help_config_option("dreamrelation.toyworld.codec:CodecConfig"),
) -> None:
    """Train the learned toy codec on clips rendered on the fly, then check its round trip with the
    oracle (acceptance: subject fidelity and relation accuracy >= 0.98) and write recipe.json."""
    from dreamrelation.toyworld.codec import CodecConfig, evaluate_codec, load_codec, train_codec
    from dreamrelation.toyworld.run_state import update_recipe

    config = run_command(config_from_cli, ctx, CodecConfig, config, sets)
    output = config.output
    resolved = run_command(_check_device, config.device)
    record = run_command(train_codec, config=config)
    if not record["finished"]:
        _print_unfinished(record, output)
        return
    arguments = sys.argv[sys.argv.index("train") + 1 :] if "train" in sys.argv else sys.argv[1:]
    command = shlex.join(["dreamrelation", "toy", "codec", "train", *arguments])
    record = update_recipe(output, command=command)
    if eval_per_relation > 0:
        scores = evaluate_codec(load_codec(output, resolved), eval_per_relation)
        record = update_recipe(output, acceptance=scores)
        console.print(_acceptance_table(scores, f"codec round trip -> {output}"))
    console.print(
        f"{record['steps']} steps, {record['wall_time_s']:.0f} s, last loss {record['loss_curve'][-1][1]:.4f}"
    )


def _print_unfinished(record: dict[str, Any], output: Path) -> None:
    checkpoint = Path(output) / "checkpoint"
    console.print(
        f"stopped at step {record['steps']} of {record['total_steps']} ({record['wall_time_s']:.0f} s "
        f"so far); checkpoint in {checkpoint}: run the same command again to continue"
    )


def _check_device(device: str) -> torch.device:
    import torch

    from dreamrelation.devices import resolve_device
    from dreamrelation.errors import ConfigError

    try:
        resolved = resolve_device(device)
    except RuntimeError as exc:
        raise ConfigError(f"--device: {exc}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    return resolved


@codec_app.command("evaluate")
def codec_evaluate_command(
    folder: Path = typer.Argument(..., help="A codec folder written by `dreamrelation toy codec train`."),
    per_relation: int = typer.Option(25, "--per-relation", help="Clips per relation and generic motion."),
    seed: int = typer.Option(ACCEPTANCE_SEED, "--seed", help="Scene seed of the clips."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda ..."),
    write: bool = typer.Option(False, "--write", help="Store the result in FOLDER/recipe.json (acceptance)."),
) -> None:
    """The codec's acceptance check: render fresh clips of every relation, round-trip them through the
    codec and let the frozen oracle judge (subject fidelity and relation accuracy >= 0.98)."""
    from dreamrelation.errors import InputError
    from dreamrelation.toyworld.codec import evaluate_codec, load_codec
    from dreamrelation.toyworld.run_state import update_recipe

    def load() -> LearnedToyCodec:
        if not (folder / "config.json").is_file():
            raise InputError(
                folder,
                "holds no codec (no config.json)",
                "pass a folder written by `dreamrelation toy codec train`",
            )
        return load_codec(folder, _check_device(device))

    codec_model = run_command(load)
    scores = evaluate_codec(codec_model, per_relation, seed)
    console.print(_acceptance_table(scores, f"codec round trip: {folder}"))
    if write:
        update_recipe(folder, acceptance=scores)
    if not scores["passed"]:
        raise typer.Exit(1)


@toy_app.command("demo", epilog=EPILOG)
def demo(
    ctx: typer.Context,
    output: Path = typer.Option(Path("dreamrelation-demo"), "--output", "-o", help="Where everything goes."),
    config: Path = CONFIG_OPT,
    sets: list[str] = SET_OPT,
    # named flags for what users reach for every day; each is exactly --set KEY=VALUE
    relation: str = setting("relation", "--relation", "-r"),
    steps: int = setting("train_steps", "--steps"),
    seed: int = setting("seed", "--seed"),
    print_config: bool = typer.Option(
        False,
        "--print-config",
        help="Write the exemplar folder into --output and print the demo's runs as a `benchmark run` "
        "YAML; run nothing else.",
    ),
    help_config: bool = help_config_option("dreamrelation.toyworld.presets.experiment:ExperimentConfig"),
) -> None:
    """The whole method on the toy world, on CPU: exemplars -> masks -> cache -> train -> generate ->
    oracle evaluation (a preset of `benchmark run`: base model, DreamRelation and direct LoRA) -> Q/K/V
    and attention analysis -> report.html. Rerun into the same --output to resume."""

    from dreamrelation.toyworld.presets.demo import demo_yaml, run_demo
    from dreamrelation.toyworld.presets.experiment import ExperimentConfig

    cfg = run_command(config_from_cli, ctx, ExperimentConfig, config, sets)
    run_command(_experiment_config, ExperimentConfig, relation=cfg.relation)  # a relation the toy world has
    from dreamrelation.files import check_output_dir

    run_command(check_output_dir, output, "demo output")
    if print_config:
        typer.echo(run_command(demo_yaml, cfg, output), nl=False)
        return
    run_claimed(output, "demo", run_demo, cfg, output, command="dreamrelation " + " ".join(sys.argv[1:]))


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


@toy_app.command("benchmark", epilog=EPILOG)
def benchmark(
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
    # named flags for what users reach for every day; each is exactly --set KEY=VALUE
    steps: int = setting("train_steps", "--steps"),
    model: str = setting("model", "--model"),
    help_config: bool = help_config_option("dreamrelation.toyworld.presets.experiment:ExperimentConfig"),
) -> None:
    """Base model, direct LoRA, DreamRelation, ablations and LoRA placements in the toy world, per
    relation and averaged over relations: a preset of `benchmark run` (docs/toyworld.md). --config and
    --set reach the toy experiment's settings (every key: --help-config)."""

    from dreamrelation.toyworld.presets import comparison as toy
    from dreamrelation.toyworld.presets.experiment import ExperimentConfig
    from dreamrelation.toyworld.world import RELATIONS

    chosen = methods.split(",") if methods else list(toy.METHODS)
    relations = list(RELATIONS) if relation == "all" else relation.split(",")
    cfg = run_command(config_from_cli, ctx, ExperimentConfig, config, sets)
    seed_list = run_command(_int_list, seeds, "--seeds")
    if print_config:
        typer.echo(run_command(toy.preset_yaml, cfg, relations, seed_list, chosen, output), nl=False)
        return
    command = "dreamrelation " + " ".join(sys.argv[1:])
    # beside the results by default: a run never overwrites a committed report unless asked to
    arguments = (toy.run_toy_benchmark, cfg, relations, seed_list, chosen, output)
    if report_only:  # tables of what is there: beside a run still going, too
        report = run_command(*arguments, command=command, docs=docs, report_only=True)
    else:
        report = run_claimed(output, "toy benchmark", *arguments, command=command, docs=docs)
    console.print(report, markup=False, highlight=False)


def _int_list(text: str, flag: str) -> list[int]:
    from dreamrelation.errors import ConfigError

    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a comma-separated list of integers") from None
