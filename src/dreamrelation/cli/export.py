"""`dreamrelation export comfyui`: a trained LoRA under the original checkpoint's key names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    pass
from dreamrelation.cli.boundary import console
from dreamrelation.cli.boundary import run_command as _run

export_app = typer.Typer(no_args_is_help=True, add_completion=False)


@export_app.command("comfyui")
def export_comfyui(
    lora: Path = typer.Argument(..., help="relation_lora.safetensors written by `dreamrelation train`."),
    output: Path = typer.Option(None, "--output", "-o", help="File or folder (default: beside LORA)."),
    model: str = typer.Option(
        None, "--model", help="Hub id or folder for the layer sizes (default: the LoRA's model)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file at --output."),
) -> None:
    """Write the LoRA under the original checkpoint's key names (fused Q/K/V), which ComfyUI loads
    with its LoraLoaderModelOnly node. `train` already writes this file beside the LoRA."""
    from dreamrelation.generation.comfyui import write_comfyui_lora

    path = _run(write_comfyui_lora, lora, output=output, model=model, overwrite=overwrite)
    console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add `export comfyui` to the main command line."""
    app.add_typer(export_app, name="export", help="Convert a trained LoRA for other tools (ComfyUI).")
