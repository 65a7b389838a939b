"""`dreamrelation benchmark run`: the paper's comparison as one resumable runner (docs/benchmark.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dreamrelation.cli.boundary import console, run_claimed
from dreamrelation.cli.boundary import run_command as _run
from dreamrelation.cli.options import (
    EPILOG,
    SET_OPT,
    config_from_cli,
    help_config_option,
)

benchmark_app = typer.Typer(no_args_is_help=True, add_completion=False)


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

    from dreamrelation.benchmark import BenchmarkConfig, run_benchmark

    cfg = _run(config_from_cli, ctx, BenchmarkConfig, config, sets)
    output = output or Path("runs/benchmark") / config.stem
    command = "dreamrelation " + " ".join(sys.argv[1:])
    if report_only:  # tables of what is there: beside a run still going, too
        _run(run_benchmark, cfg, output, command=command, report_only=True)
    else:
        run_claimed(output, "benchmark run", run_benchmark, cfg, output, command=command)
    console.print((output / "benchmark.md").read_text(), markup=False, highlight=False)
    console.print(f"table: {output / 'benchmark.md'}, {output / 'benchmark.csv'}, {output / 'benchmark.png'}")


def register(app: typer.Typer) -> None:
    """Add `benchmark run` to the main command line."""
    app.add_typer(benchmark_app, name="benchmark", help="Measured comparisons (methods, ablations).")
