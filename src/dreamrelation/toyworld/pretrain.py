"""`dreamrelation toy pretrain`: train the toy base model on generic motions, relations held out.

The toy backbone (:mod:`dreamrelation.toyworld.backbone`) starts from random weights. This command
trains ALL its transformer weights (no LoRA) the way a video foundation model is trained, on clips
of the toy world rendered on the fly: every shape, colour and background, but only the generic
motions (standing still, drifting together, moving alone, wandering). The relations are never
shown, so the base model draws the prompted subjects yet cannot act out "shaking hands" - which is
what DreamRelation must then teach it from a few exemplars.

Training is flow matching in the backbone's own convention (``add_noise`` / ``flow_target`` /
``model_timestep`` of :class:`~dreamrelation.backbones.base.Backbone`), AdamW with warmup and cosine
decay, caption dropout (so classifier-free guidance works) and an EMA of the weights, which is what
gets saved. Every clip comes from a generator seeded by (seed, step): a run is reproducible.
:func:`evaluate_base` then samples the saved model with the oracle to check it.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import typer
from pydantic import BaseModel, ConfigDict, Field
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

from dreamrelation.generate import render_batch, to_uint8
from dreamrelation.toyworld.backbone import (
    GUIDANCE_SCALE,
    NUM_INFERENCE_STEPS,
    ToyBackbone,
    build_pipeline,
    zero_init_modulation,
)
from dreamrelation.toyworld.oracle import (
    MIN_PRESENT_FRACTION,
    NONE,
    classify_relation,
    subject_fidelity,
    track_subjects,
)
from dreamrelation.toyworld.world import (
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    GENERIC_MOTIONS,
    RELATIONS,
    Subject,
    render,
    sample_scenes,
)


class PretrainConfig(BaseModel):
    """Every knob of the pretraining run (defaults: the recipe of the shipped weights)."""

    model_config = ConfigDict(extra="forbid")

    output: Path  # the pipeline folder to write (the shipped one is backbone.SHIPPED_WEIGHTS)
    #: a saved toy pipeline folder to continue training from (a further stage); None: random weights
    init_from: Path | None = None
    size: str = "base"
    steps: int = Field(4500, gt=0)
    batch_size: int = Field(8, gt=0)
    learning_rate: float = Field(2e-3, gt=0)
    min_learning_rate: float = Field(1e-4, ge=0)  # end of the cosine decay
    warmup_steps: int = Field(200, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.99)
    max_grad_norm: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.995, ge=0, lt=1)  # 0 disables the EMA
    caption_dropout: float = Field(0.1, ge=0, lt=1)
    sigma_shift: float = Field(3.0, ge=1)  # 1: uniform noise levels
    motions: tuple[str, ...] = tuple(GENERIC_MOTIONS)  # relations are held out
    seed: int = 0
    bf16_autocast: bool = True
    #: dtype of the saved transformer weights: float16 keeps the shipped folder under 20 MB
    save_dtype: Literal["float32", "float16"] = "float16"
    #: torch CPU threads (None: torch's default). On a shared machine 1 is often fastest.
    threads: int | None = None


# ----------------------------------------------------------------------------- data


def training_clips(
    step: int, config: PretrainConfig, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE
) -> tuple[np.ndarray, list[str]]:
    """The batch of step ``step``: (B, F, H, W, 3) uint8 clips of generic motions and their captions,
    a pure function of (seed, step) over all shapes, colours and backgrounds."""
    rng = np.random.default_rng([config.seed, step])
    videos, captions = [], []
    for _ in range(config.batch_size):
        motion = config.motions[int(rng.integers(len(config.motions)))]
        scene = sample_scenes(motion, 1, rng, frames=frames, size=size)[0]
        clip = render(scene)
        videos.append(clip.frames)
        captions.append(clip.caption)
    return np.stack(videos), captions


def drop_captions(captions: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """Replace each caption by the empty prompt with probability ``rate`` (the CFG unconditional)."""
    return ["" if rng.random() < rate else caption for caption in captions]


def learning_rate_at(step: int, config: PretrainConfig) -> float:
    """Linear warmup, then cosine decay from ``learning_rate`` to ``min_learning_rate``."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.min_learning_rate + (config.learning_rate - config.min_learning_rate) * cosine


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay with a warmup, (1 + step) / (10 + step) capped at ``decay``: early weights (the
    zero-initialised start) must not linger in the average of a short run."""
    return min(decay, (1 + step) / (10 + step))


# ----------------------------------------------------------------------------- training


def sample_sigmas(n: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """Noise levels u ~ U(0, 1) moved towards noise by the flow-matching time shift
    s = shift·u / (1 + (shift - 1)·u) (SD3 / Wan; shift 1 is uniform). Layout, shapes and colours are
    decided at high noise, where Mochi's linear-quadratic sampler spends most of its steps; the
    lowest levels, which the sampler never visits with 24 steps, get little training."""
    u = torch.rand(n, generator=generator)
    return shift * u / (1 + (shift - 1) * u)


def flow_matching_loss(
    backbone: ToyBackbone,
    latents: torch.Tensor,
    conditioning: dict[str, torch.Tensor],
    generator: torch.Generator,
    sigma_shift: float = 1.0,
) -> torch.Tensor:
    """MSE between the prediction and the flow target (the backbone's convention)."""
    sigma = sample_sigmas(latents.shape[0], sigma_shift, generator)
    noise = torch.randn(latents.shape, generator=generator)
    noisy = backbone.add_noise(latents, noise, sigma)
    prediction = backbone.predict(noisy, sigma, conditioning)
    return torch.nn.functional.mse_loss(prediction.float(), backbone.flow_target(latents, noise))


def pretrain(
    output: str | Path | None = None,
    steps: int | None = None,
    seed: int | None = None,
    config: PretrainConfig | None = None,
    show_progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Train the toy base model and save it as a pipeline folder; returns the training record.

    ``output``/``steps``/``seed`` and any other :class:`PretrainConfig` field may be passed directly
    (they override ``config``); the defaults are the recipe of the shipped weights.
    """
    values = config.model_dump() if config is not None else {}
    values.update(
        {k: v for k, v in dict(overrides, output=output, steps=steps, seed=seed).items() if v is not None}
    )
    if "output" not in values:
        raise ValueError("pretrain needs an output folder")
    config = PretrainConfig(**values)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    unknown = [m for m in config.motions if m not in GENERIC_MOTIONS]
    if unknown:
        raise ValueError(
            f"pretraining uses generic motions only; {unknown} are not in {tuple(GENERIC_MOTIONS)}"
        )

    if config.init_from is not None:
        # A further stage: the folder's transformer and its (frozen) text encoder, in float32.
        backbone = ToyBackbone.from_pretrained(config.init_from, torch_dtype=torch.float32)
        transformer = backbone.transformer
    else:
        backbone = ToyBackbone(
            build_pipeline(config.seed, config.size), ToyBackbone.default_max_sequence_length()
        )
        transformer = backbone.transformer
        zero_init_modulation(transformer)
    transformer.train()
    transformer.requires_grad_(True)
    ema = copy.deepcopy(transformer).requires_grad_(False) if config.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(
        transformer.parameters(),
        lr=config.learning_rate,
        betas=config.adam_betas,
        weight_decay=config.weight_decay,
    )
    generator = torch.Generator().manual_seed(config.seed)
    caption_rng = np.random.default_rng([config.seed, 1 << 20])

    losses: list[float] = []
    start = time.perf_counter()
    with _progress(show_progress) as progress:
        task = progress.add_task("pretraining", total=config.steps, loss=float("nan"))
        for step in range(config.steps):
            videos, captions = training_clips(step, config)
            with torch.no_grad():
                latents = backbone.encode_video(torch.from_numpy(videos))
                conditioning = backbone.encode_prompts(
                    drop_captions(captions, config.caption_dropout, caption_rng)
                )
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, config)
            # bf16 autocast: ~1.4x faster on CPUs with AMX/AVX512-BF16; the loss stays in float32.
            with torch.autocast(latents.device.type, torch.bfloat16, enabled=config.bf16_autocast):
                loss = flow_matching_loss(backbone, latents, conditioning, generator, config.sigma_shift)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(transformer.parameters(), config.max_grad_norm)
            optimizer.step()
            if ema is not None:
                with torch.no_grad():
                    for averaged, current in zip(ema.parameters(), transformer.parameters(), strict=True):
                        averaged.lerp_(current, 1 - ema_decay_at(step, config.ema_decay))
            losses.append(loss.item())
            progress.update(task, advance=1, loss=float(np.mean(losses[-50:])))
    wall = time.perf_counter() - start

    if ema is not None:
        transformer.load_state_dict(ema.state_dict())
    transformer.eval()
    transformer.to({"float32": torch.float32, "float16": torch.float16}[config.save_dtype])
    Path(config.output).mkdir(parents=True, exist_ok=True)
    backbone.save_pretrained(config.output)
    record = {
        "config": json.loads(config.model_dump_json()),
        "steps": config.steps,
        "wall_time_s": round(wall, 1),
        "loss_first_50": float(np.mean(losses[:50])),
        "loss_last_100": float(np.mean(losses[-100:])),
        "loss_curve": [round(float(np.mean(losses[i : i + 100])), 4) for i in range(0, len(losses), 100)],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    if config.init_from is not None and (Path(config.init_from) / "recipe.json").is_file():
        # The stage this one continued from, with its own command and evaluation: the exact lineage.
        record["init_recipe"] = json.loads((Path(config.init_from) / "recipe.json").read_text())
    return record


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show,
    )


# ----------------------------------------------------------------------------- evaluation


def evaluation_prompts(
    n_per_relation: int = 5, seed: int = 2025
) -> list[tuple[str, str, tuple[Subject, Subject]]]:
    """(relation, prompt, subjects) for ``n_per_relation`` random subject pairs of every relation and
    generic motion; a separate seed from training, so the exact (subjects, background) combos are new."""
    rng = np.random.default_rng(seed)
    items = []
    for relation in (*RELATIONS, *GENERIC_MOTIONS):
        for scene in sample_scenes(relation, n_per_relation, rng):
            items.append((relation, render(scene).caption, (scene.subject1, scene.subject2)))
    return items


@torch.no_grad()
def sample_videos(
    backbone: ToyBackbone,
    prompts: list[str],
    *,
    num_inference_steps: int = NUM_INFERENCE_STEPS,
    guidance_scale: float = GUIDANCE_SCALE,
    seed: int = 0,
    batch_size: int = 8,
    frames: int = DEFAULT_FRAMES,
    size: int = DEFAULT_SIZE,
) -> list[np.ndarray]:
    """(F, H, W, 3) uint8 videos through the real pipeline; video i uses generator seed ``seed + i``."""
    videos: list[np.ndarray] = []
    for begin in range(0, len(prompts), batch_size):
        chunk = prompts[begin : begin + batch_size]
        frames_float = render_batch(
            backbone,
            chunk,
            [seed + begin + i for i in range(len(chunk))],
            num_frames=frames,
            height=size,
            width=size,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            show_progress=False,
        )
        videos.extend(to_uint8(frames_float))
    return videos


def subject_presence(videos: list[np.ndarray], prompts_subjects: list[tuple[Subject, Subject]]) -> float:
    """Fraction of videos where the oracle tracks BOTH prompted colours in at least half the frames
    (the precondition for classifying a relation; subject fidelity also demands the shapes)."""
    return float(
        np.mean(
            [
                all(track.present.mean() >= MIN_PRESENT_FRACTION for track in track_subjects(video, subjects))
                for video, subjects in zip(videos, prompts_subjects, strict=True)
            ]
        )
    )


def evaluate_base(
    backbone: ToyBackbone,
    n_per_relation: int = 5,
    num_inference_steps: int = NUM_INFERENCE_STEPS,
    guidance_scale: float = GUIDANCE_SCALE,
    seed: int = 0,
    include_generic: bool = True,
) -> dict[str, Any]:
    """Oracle check of a base model on fresh prompts.

    ``subject_fidelity`` and ``relation_accuracy`` are measured on the relation prompts
    (``n_per_relation`` x 8 videos): the base must draw the subjects but, never having seen a relation,
    rarely act it out. ``generic_subject_fidelity`` is measured on the generic-motion prompts.
    """
    items = evaluation_prompts(n_per_relation)
    if not include_generic:
        items = [item for item in items if item[0] in RELATIONS]
    videos = sample_videos(
        backbone,
        [prompt for _, prompt, _ in items],
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        seed=seed,
    )
    relation_items = [
        (video, item) for video, item in zip(videos, items, strict=True) if item[0] in RELATIONS
    ]
    generic_items = [
        (video, item) for video, item in zip(videos, items, strict=True) if item[0] not in RELATIONS
    ]
    predicted = [classify_relation(video, subjects) for video, (_, _, subjects) in relation_items]
    hits = [p == relation for p, (_, (relation, _, _)) in zip(predicted, relation_items, strict=True)]
    metrics: dict[str, Any] = {
        "n_relation_videos": len(relation_items),
        "subject_fidelity": subject_fidelity(
            [video for video, _ in relation_items], [item[2] for _, item in relation_items]
        ),
        "relation_accuracy": float(np.mean(hits)),
        "predicted_none_fraction": float(np.mean([p == NONE for p in predicted])),
        "subject_presence": subject_presence(
            [video for video, _ in relation_items], [item[2] for _, item in relation_items]
        ),
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "seed": seed,
    }
    if generic_items:
        metrics["n_generic_videos"] = len(generic_items)
        metrics["generic_subject_fidelity"] = subject_fidelity(
            [video for video, _ in generic_items], [item[2] for _, item in generic_items]
        )
    return metrics


# ----------------------------------------------------------------------------- CLI


def _default(field: str) -> Any:
    return PretrainConfig.model_fields[field].default


toy_app = typer.Typer(no_args_is_help=True, add_completion=False)
console = Console()


@toy_app.callback()
def toy() -> None:
    """The toy world's own backbone: pretrain it on generic motions (relations held out)."""


@toy_app.command("pretrain")
def pretrain_command(
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="Pipeline folder to write (the shipped one is src/dreamrelation/toyworld/weights/base).",
    ),
    steps: int = typer.Option(_default("steps"), "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(_default("batch_size"), "--batch-size", help="Clips per step."),
    learning_rate: float = typer.Option(_default("learning_rate"), "--lr", help="Peak AdamW learning rate."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights, clips, captions and noise."),
    size: str = typer.Option("base", "--size", help="Transformer size: base (shipped) or tiny (smoke test)."),
    init_from: Path = typer.Option(
        None, "--init-from", help="Continue from this saved toy pipeline folder instead of random weights."
    ),
    warmup_steps: int = typer.Option(_default("warmup_steps"), "--warmup-steps", help="Linear warmup steps."),
    min_learning_rate: float = typer.Option(
        _default("min_learning_rate"), "--min-lr", help="Learning rate at the end of the cosine decay."
    ),
    threads: int = typer.Option(
        None, "--threads", help="torch CPU threads (1 is often fastest when shared)."
    ),
    eval_per_relation: int = typer.Option(
        5, "--eval-per-relation", help="Oracle check after training: prompts per relation/motion (0: skip)."
    ),
) -> None:
    """Train the toy base model (all transformer weights) on rendered generic motions, relations held
    out, then check it with the oracle and write recipe.json next to the weights."""
    # diffusers' Mochi RoPE asks for a float32 autocast, which CPU autocast refuses (harmlessly).
    warnings.filterwarnings("ignore", message="In CPU autocast, but the target dtype is not supported")
    record = pretrain(
        output=output,
        steps=steps,
        seed=seed,
        batch_size=batch_size,
        learning_rate=learning_rate,
        size=size,
        threads=threads,
        init_from=init_from,
        warmup_steps=warmup_steps,
        min_learning_rate=min_learning_rate,
    )
    arguments = sys.argv[sys.argv.index("pretrain") + 1 :] if "pretrain" in sys.argv else sys.argv[1:]
    record["command"] = shlex.join(["dreamrelation", "toy", "pretrain", *arguments])
    if eval_per_relation > 0:
        record["evaluation"] = evaluate_base(ToyBackbone.from_pretrained(output), eval_per_relation)
    (Path(output) / "recipe.json").write_text(json.dumps(record, indent=2) + "\n")
    table = Table(title=f"toy base model -> {output}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("steps", str(record["steps"]))
    table.add_row("wall time (s)", f"{record['wall_time_s']:.0f}")
    table.add_row("loss (last 100 steps)", f"{record['loss_last_100']:.4f}")
    for key in ("subject_fidelity", "generic_subject_fidelity", "subject_presence", "relation_accuracy"):
        if key in record.get("evaluation", {}):
            table.add_row(key, f"{record['evaluation'][key]:.3f}")
    console.print(table)


__all__ = [
    "PretrainConfig",
    "evaluate_base",
    "evaluation_prompts",
    "pretrain",
    "sample_videos",
    "toy_app",
    "training_clips",
]


if __name__ == "__main__":
    toy_app()
