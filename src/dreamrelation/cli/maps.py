"""`dreamrelation analyze features|attention`: maps of a generation, optionally beside a relation LoRA.

The commands are plain functions; :func:`register` adds them to a Typer app (the ``analyze`` sub-app).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from dreamrelation.errors import DreamRelationError

console = Console()

MODEL_ARG = typer.Argument(..., help="Hub id, local diffusers folder, or 'tiny' (random test model).")
BACKBONE_OPT = typer.Option("mochi", "--backbone", help="Backbone: mochi, wan or hunyuan.")
PROMPT_OPT = typer.Option(..., "--prompt", help="The prompt to generate and analyse.")
LORA_OPT = typer.Option(
    None,
    "--lora",
    help="relation_lora.safetensors from training: also analyse the model with it, side by side.",
)
LORA_SCALE_OPT = typer.Option(1.0, "--lora-scale", help="Strength of the relation LoRA.")
STEP_OPT = typer.Option(60, "--step", help="Denoising step to capture (0-based loop index; paper: 60 of 64).")
STEPS_OPT = typer.Option(64, "--steps", help="Denoising steps of the whole run.")
FRAMES_OPT = typer.Option(61, "--num-frames", help="Video frames (Mochi: 6k+1; Wan, HunyuanVideo: 4k+1).")
HEIGHT_OPT = typer.Option(480, "--height", help="Frame height in pixels.")
WIDTH_OPT = typer.Option(848, "--width", help="Frame width in pixels.")
GUIDANCE_OPT = typer.Option(6.0, "--guidance-scale", help="Classifier-free guidance scale (paper: 6.0).")
SEED_OPT = typer.Option(0, "--seed", help="Random seed of the generation (the same for base and LoRA).")
DTYPE_OPT = typer.Option("bfloat16", "--dtype", help="Weights dtype: float32, bfloat16, float16.")
DEVICE_OPT = typer.Option(None, "--device", help="Device (default: cuda if available, else cpu).")


def _load(backbone: str, model: str, dtype: str, device: str | None) -> Any:
    from dreamrelation.backbones import default_device, load_backbone

    return load_backbone(backbone, model, dtype, device=device or default_device())


def _render_kwargs(
    step: int, steps: int, num_frames: int, height: int, width: int, guidance_scale: float, seed: int
) -> dict[str, Any]:
    return {
        "step": step,
        "num_inference_steps": steps,
        "num_frames": num_frames,
        "height": height,
        "width": width,
        "guidance_scale": guidance_scale,
        "seed": seed,
        "show_progress": True,
    }


def features(
    model: str = MODEL_ARG,
    backbone: str = BACKBONE_OPT,
    prompt: str = PROMPT_OPT,
    lora: Path | None = LORA_OPT,
    lora_scale: float = LORA_SCALE_OPT,
    step: int = STEP_OPT,
    steps: int = STEPS_OPT,
    num_frames: int = FRAMES_OPT,
    height: int = HEIGHT_OPT,
    width: int = WIDTH_OPT,
    guidance_scale: float = GUIDANCE_OPT,
    seed: int = SEED_OPT,
    reduce: str = typer.Option("mean", "--reduce", help="Over channels: mean (paper) or norm (L2)."),
    dtype: str = DTYPE_OPT,
    device: str | None = DEVICE_OPT,
    output: Path = typer.Option(Path("feature_maps"), "--output", "-o", help="Folder for the PNG and .npz."),
) -> None:
    """Q/K/V feature maps of the vision tokens at one denoising step (paper Fig. 5(a)).

    Averaged over layers, heads and channels, then over frames: one h×w map per projection.
    Writes features.png and features.npz.
    """
    from dreamrelation.analysis.maps import (
        compare_feature_maps,
        feature_maps,
        save_feature_arrays,
        save_feature_figure,
    )

    kwargs = _render_kwargs(step, steps, num_frames, height, width, guidance_scale, seed)
    try:
        loaded = _load(backbone, model, dtype, device)
        if lora is None:
            base, tuned = feature_maps(loaded, prompt, reduce=reduce, **kwargs), None
        else:
            base, tuned = compare_feature_maps(loaded, lora, prompt, lora_scale, reduce=reduce, **kwargs)
    except DreamRelationError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    files = [
        save_feature_figure(base, None, output / "features.png", lora=tuned),
        save_feature_arrays(output / "features.npz", base, tuned),
    ]
    grid = base.grid
    table = Table(title=f"{backbone} · step {step}/{steps} · grid {grid.frames}×{grid.height}×{grid.width}")
    for column in ("model", "map", "layers", "min", "mean", "max"):
        table.add_column(column, justify="left" if column in ("model", "map") else "right")
    for result in (base, tuned):
        if result is None:
            continue
        for role, values in result.maps.items():
            table.add_row(
                result.label,
                f"{role.upper()} ({result.reduce})",
                str(len(result.layers[role])),
                f"{values.min():.4g}",
                f"{values.mean():.4g}",
                f"{values.max():.4g}",
            )
    console.print(table)
    console.print("wrote " + ", ".join(str(f) for f in files))


def attention(
    model: str = MODEL_ARG,
    backbone: str = BACKBONE_OPT,
    prompt: str = PROMPT_OPT,
    word: str = typer.Option(..., "--word", help="A word of the prompt, e.g. the relation: shaking."),
    lora: Path | None = LORA_OPT,
    lora_scale: float = LORA_SCALE_OPT,
    step: int = STEP_OPT,
    steps: int = STEPS_OPT,
    num_frames: int = FRAMES_OPT,
    height: int = HEIGHT_OPT,
    width: int = WIDTH_OPT,
    guidance_scale: float = GUIDANCE_OPT,
    seed: int = SEED_OPT,
    dtype: str = DTYPE_OPT,
    device: str | None = DEVICE_OPT,
    output: Path = typer.Option(
        Path("attention_maps"), "--output", "-o", help="Folder for the PNG and .npz."
    ),
) -> None:
    """Attention between a word of the prompt and the video tokens, per latent frame.

    Joint-attention models (Mochi, HunyuanVideo): the word's text tokens attending to the video.
    Cross-attention models (Wan): the video tokens attending to the word. Averaged over heads,
    layers and the word's tokens. Writes attention.png and attention.npz.
    """
    from dreamrelation.analysis.maps import (
        attention_maps,
        compare_attention,
        save_attention_arrays,
        save_attention_figure,
    )

    kwargs = _render_kwargs(step, steps, num_frames, height, width, guidance_scale, seed)
    try:
        loaded = _load(backbone, model, dtype, device)
        if lora is None:
            base, tuned = attention_maps(loaded, prompt, word, **kwargs), None
        else:
            base, tuned = compare_attention(loaded, lora, prompt, word, lora_scale, **kwargs)
    except DreamRelationError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    files = [
        save_attention_figure(base, None, output / "attention.png", lora=tuned),
        save_attention_arrays(output / "attention.npz", base, tuned),
    ]
    direction = "word → video" if base.direction == "text_to_video" else "video → word"
    table = Table(
        title=f"{backbone} · '{base.word}' = {' '.join(base.tokens)} · {direction} · step {step}/{steps}"
    )
    for column in ("model", "layers", "min", "mean", "max", "check |PV - out|"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for result in (base, tuned):
        if result is None:
            continue
        table.add_row(
            result.label,
            str(len(result.layers)),
            f"{result.maps.min():.4g}",
            f"{result.maps.mean():.4g}",
            f"{result.maps.max():.4g}",
            f"{result.max_output_error:.1e}",
        )
    console.print(table)
    console.print("wrote " + ", ".join(str(f) for f in files))


def register(app: typer.Typer) -> None:
    """Add the ``features`` and ``attention`` commands to ``app`` (e.g. the ``analyze`` sub-app)."""
    app.command("features")(features)
    app.command("attention")(attention)
