"""`dreamrelation analyze ...`: interpretability commands (mounted by the main CLI)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from dreamrelation.analysis.subspace import DEFAULT_RANKS, analyze_checkpoint, open_checkpoint, save_report
from dreamrelation.cli.boundary import run_command

analyze_app = typer.Typer(no_args_is_help=True, add_completion=False)
console = Console()


@analyze_app.callback()
def analyze() -> None:
    """Look inside a video transformer: how its Q, K and V projections relate."""


def _parse_ranks(text: str) -> list[int]:
    try:
        ranks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers like 4,8,16,32, got {text!r}") from None
    if not ranks or min(ranks) < 1:
        raise typer.BadParameter(f"expected positive integers like 4,8,16,32, got {text!r}")
    return ranks


@analyze_app.command()
def subspace(
    model: str = typer.Argument(
        ...,
        help="Diffusers pipeline folder, its transformer/ folder, a .safetensors file, or a hub id "
        "(e.g. genmo/mochi-1-preview; only transformer/ is fetched, or read from the HF cache).",
    ),
    ranks: str = typer.Option(
        ",".join(map(str, DEFAULT_RANKS)),
        "--ranks",
        help="Comma-separated subspace sizes r: similarity compares the top-r left singular vectors.",
    ),
    lora: Path | None = typer.Option(
        None,
        "--lora",
        help="LoRA .safetensors (diffusers keys transformer.<module>.lora_A/B.weight): "
        "analyse the effective weights W + ΔW instead of W.",
    ),
    lora_scale: float = typer.Option(1.0, "--lora-scale", help="Multiplier on the LoRA delta ΔW."),
    family: str | None = typer.Option(
        None,
        "--family",
        help="mochi, wan, hunyuan or cogvideox; default: from config.json, else from the tensor names.",
    ),
    output: Path = typer.Option(
        Path("subspace_report"),
        "--output",
        "-o",
        help="Folder for subspace.json and one heatmap PNG per token stream.",
    ),
) -> None:
    """Q/K/V subspace similarity per layer (paper §4): Q–K high, Q–V and K–V low.

    Weights are read one tensor at a time from the safetensors files; the model is never built,
    so a 10B-parameter checkpoint needs about as much memory as a few of its projections.
    """
    rank_list = _parse_ranks(ranks)

    def work() -> tuple[dict, list]:
        reader = open_checkpoint(model)
        with Progress(
            TextColumn("[bold]{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("discovering layers", total=None)

            def on_layer(done: int, total: int, layer: str) -> None:
                progress.update(task, completed=done, total=total, description=layer)

            result = analyze_checkpoint(
                reader, ranks=rank_list, lora=lora, lora_scale=lora_scale, family=family, progress=on_layer
            )
        files = save_report(result, output)
        return result, files

    result, files = run_command(work)  # one line and exit code 2 for any user error (disk full too)

    table = Table(title=f"{result['family']} · {result['num_layers']} layers · mean subspace similarity")
    table.add_column("stream")
    table.add_column("rank", justify="right")
    for label in ("Q–K", "Q–V", "K–V"):
        table.add_column(label, justify="right")
    for stream, pairs in result["average"].items():
        for rank in result["ranks"]:
            table.add_row(stream, str(rank), *(f"{pairs[pair][str(rank)]:.3f}" for pair in result["pairs"]))
    console.print(table)
    if result["lora"] is not None:
        console.print(f"LoRA applied to {result['lora_modules_applied']} projection(s) of {result['lora']}")
    console.print("wrote " + ", ".join(str(f) for f in files))


if __name__ == "__main__":
    analyze_app()
