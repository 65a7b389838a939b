"""Train the toy base model on generic motions, relations held out (`dreamrelation toy pretrain`).

The toy backbone (:mod:`dreamrelation.toyworld.backbone`) starts from random weights. :func:`pretrain`
trains ALL its transformer weights (no LoRA) the way a video foundation model is trained, on clips
of the toy world rendered on the fly: every shape, colour and background, but only the generic
motions (standing still, drifting together, moving alone, wandering). The relations are never
shown, so the base model draws the prompted subjects yet cannot act out "shaking hands" - which is
what DreamRelation must then teach it from a few exemplars.

Training is flow matching in the backbone's own convention (``add_noise`` / ``flow_target`` /
``model_timestep`` of :class:`~dreamrelation.backbones.base.Backbone`), AdamW with warmup and cosine
decay, caption dropout (so classifier-free guidance works) and an EMA of the weights, which is what
gets saved. Every clip comes from a generator seeded by (seed, step): a run is reproducible.
:func:`evaluate_base` then samples the saved model with the oracle to check it. The command line
over these is in :mod:`dreamrelation.cli_toy`.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dreamrelation.backbones.mochi import use_batched_attention
from dreamrelation.devices import machine_description, resolve_device, use_bf16_autocast
from dreamrelation.files import atomic_folder
from dreamrelation.generate import render_batch, to_uint8
from dreamrelation.toyworld.backbone import (
    GUIDANCE_SCALE,
    NUM_INFERENCE_STEPS,
    TRANSFORMER_SIZES,
    ToyBackbone,
    build_pipeline,
    load_codec_folder,
    zero_init_modulation,
)
from dreamrelation.toyworld.checkpoint import (
    CHECKPOINT_DIR,
    Schedule,
    check_output_folder,
    check_resume_settings,
    load_checkpoint,
    read_recipe,
    run_entry,
    save_checkpoint,
    write_recipe,
)
from dreamrelation.toyworld.codec import CodecConfig
from dreamrelation.toyworld.oracle import (
    MIN_PRESENT_FRACTION,
    NONE,
    classify_relation,
    subject_fidelity,
    track_subjects,
)
from dreamrelation.toyworld.protocol import CALIBRATION_PROMPT_SEED
from dreamrelation.toyworld.world import (
    BACKGROUNDS,
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    GENERIC_MOTIONS,
    RELATIONS,
    Scene,
    Subject,
    render,
    sample_scenes,
    subject_phrase,
)


class PretrainConfig(BaseModel):
    """Every knob of the pretraining run (defaults: the recipe of the shipped weights)."""

    model_config = ConfigDict(extra="forbid")

    #: the pipeline folder to write (the shipped one is backbone.SHIPPED_WEIGHTS)
    output: Path
    #: a saved toy pipeline folder to continue training from (a further stage); None: random weights
    init_from: Path | None = None
    #: transformer size: a key of backbone.TRANSFORMER_SIZES
    size: str = "base"
    #: a trained learned codec folder (`dreamrelation toy codec train`): the transformer then trains in
    #: its latent space (frozen) and the saved pipeline carries it; None: the exact codec
    codec: Path | None = None
    #: optimizer steps (with time_budget_s: the most; the budget sets the rest)
    steps: int = Field(4500, gt=0)
    #: train for about this many seconds: the schedule's length is set from the throughput of the
    #: first steps, so candidates can be compared at equal wall time on one machine
    time_budget_s: float | None = Field(None, gt=0)
    #: clips per step
    batch_size: int = Field(8, gt=0)
    #: peak AdamW learning rate
    learning_rate: float = Field(2e-3, gt=0)
    #: learning rate at the end of the cosine decay
    min_learning_rate: float = Field(1e-4, ge=0)
    #: linear warmup steps
    warmup_steps: int = Field(200, ge=0)
    #: AdamW weight decay
    weight_decay: float = Field(0.01, ge=0)
    #: AdamW betas
    adam_betas: tuple[float, float] = (0.9, 0.99)
    #: clip the gradient to this norm
    max_grad_norm: float = Field(1.0, gt=0)
    #: EMA decay of the saved weights (0 disables the EMA)
    ema_decay: float = Field(0.995, ge=0, lt=1)
    #: probability of training a clip with the empty prompt (for CFG)
    caption_dropout: float = Field(0.1, ge=0, lt=1)
    #: probability that a clip's caption keeps only its subjects and background, its motion words
    #: replaced by random words no toy caption uses (pretrain.context_noise_caption): the subjects'
    #: tokens then meet unseen neighbours in pretraining, as they do in relation prompts
    caption_context_noise: float = Field(0.0, ge=0, lt=1)
    #: shift of the noise levels towards noise (1: uniform noise levels)
    sigma_shift: float = Field(3.0, ge=1)
    #: generic motions trained on (relations are held out)
    motions: tuple[str, ...] = tuple(GENERIC_MOTIONS)
    #: seed of weights, clips, captions and noise
    seed: int = 0
    #: "auto": bf16 autocast only where the hardware computes bf16 natively (a CUDA GPU with bf16,
    #: a CPU with AMX or AVX512-BF16); on an AVX2-only CPU bf16 is ~10x slower than float32.
    autocast: Literal["auto", "bf16", "off"] = "auto"
    #: "auto": cuda when available, else cpu; or cpu, cuda, cuda:1 ...
    device: str = "auto"
    #: processes rendering the training clips ahead of the model (0: render in the training loop)
    workers: int = Field(0, ge=0)
    #: dtype of the saved transformer weights: float16 keeps the shipped folder under 20 MB
    save_dtype: Literal["float32", "float16"] = "float16"
    #: torch CPU threads (None: torch's default). On a shared machine 1 is often fastest.
    threads: int | None = None
    #: seconds between checkpoints into OUTPUT/checkpoint (the same command run again resumes there)
    checkpoint_every_s: float = Field(300.0, gt=0)
    #: stop after this many steps in this invocation, checkpoint, and return unfinished (the same
    #: command run again continues); None: run to the end
    run_steps: int | None = Field(None, gt=0)
    #: stop this invocation after about this many seconds of training, checkpoint, and return
    #: unfinished (the same command run again continues); None: no limit
    run_time_s: float | None = Field(None, gt=0)

    @field_validator("size")
    @classmethod
    def _known_size(cls, size: str) -> str:
        if size not in TRANSFORMER_SIZES:
            raise ValueError(
                f"unknown toy transformer size {size!r}; choose one of {tuple(TRANSFORMER_SIZES)}"
            )
        return size

    @field_validator("codec")
    @classmethod
    def _codec_folder(cls, codec: Path | None) -> Path | None:
        if codec is not None and not (Path(codec) / "config.json").is_file():
            raise ValueError(
                f"{codec} holds no codec (no config.json); "
                "pass a folder written by `dreamrelation toy codec train`"
            )
        return codec

    @model_validator(mode="after")
    def _one_codec(self) -> PretrainConfig:
        if self.codec is not None and self.init_from is not None:
            raise ValueError("codec: a stage continued with init_from keeps that folder's codec; drop codec")
        return self

    @field_validator("motions")
    @classmethod
    def _generic_only(cls, motions: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in motions if m not in GENERIC_MOTIONS]
        if unknown:
            raise ValueError(
                f"pretraining uses generic motions only; {unknown} are not in {tuple(GENERIC_MOTIONS)}"
            )
        return motions


# ----------------------------------------------------------------------------- data

#: words of the toy tokenizer that no toy caption or prompt uses and that name no relation, colour
#: or shape: the stand-ins for the unseen relation words next to a subject (tests check both)
CONTEXT_NOISE_WORDS = (
    "of", "at", "people", "man", "woman", "cat", "dog", "bear", "raccoon", "tiger", "panda",
    "monkey", "rabbit", "fox", "lion", "horse", "cow", "robot", "astronaut", "plain", "field",
    "room", "street", "park", "beach", "video",
)  # fmt: skip


def context_noise_caption(scene: Scene, rng: np.random.Generator) -> str:
    """``scene``'s subjects and background with random :data:`CONTEXT_NOISE_WORDS` around them
    instead of its motion words: 0-1 before the first subject, 1-3 between, 0-2 after the second,
    e.g. "a red circle dog at a blue square on a dark background.".

    Why: the toy text encoder mixes each token with its neighbours (offsets -2..+2), so in "{a} is
    pushing {b} on ..." the second subject's embedding carries "pushing" and "on", words a base
    trained on generic captions never saw there, and the base then often fails to draw it
    (benchmarks/toy_subject_context.py). Trained on these captions, the model must find a subject
    from its own phrase whatever stands next to it."""

    def words(low: int, high: int) -> list[str]:
        picks = rng.integers(len(CONTEXT_NOISE_WORDS), size=int(rng.integers(low, high + 1)))
        return [CONTEXT_NOISE_WORDS[i] for i in picks]

    first, second = subject_phrase(scene.subject1), subject_phrase(scene.subject2)
    background = f"{BACKGROUNDS[scene.background]}."  # as caption_for ends: "on a dark background."
    return " ".join([*words(0, 1), first, *words(1, 3), second, *words(0, 2), "on", "a", background])


def training_clips(
    step: int, config: PretrainConfig, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE
) -> tuple[np.ndarray, list[str]]:
    """The batch of step ``step``: (B, F, H, W, 3) uint8 clips of generic motions and their captions,
    a pure function of (seed, step) over all shapes, colours and backgrounds."""
    rng = np.random.default_rng([config.seed, step])
    # its own stream, so the clips (and the captions without noise) are the same at any noise rate
    noise_rng = np.random.default_rng([config.seed, step, 1])
    videos, captions = [], []
    for _ in range(config.batch_size):
        motion = config.motions[int(rng.integers(len(config.motions)))]
        scene = sample_scenes(motion, 1, rng, frames=frames, size=size)[0]
        clip = render(scene)
        videos.append(clip.frames)
        noisy = noise_rng.random() < config.caption_context_noise
        captions.append(context_noise_caption(scene, noise_rng) if noisy else clip.caption)
    return np.stack(videos), captions


def drop_captions(captions: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """Replace each caption by the empty prompt with probability ``rate`` (the CFG unconditional)."""
    return ["" if rng.random() < rate else caption for caption in captions]


class TrainingBatches(torch.utils.data.Dataset):
    """Item i is the batch of step ``first_step + i`` (:func:`training_clips`): a DataLoader's workers
    then render batches ahead of the model, and the batches depend neither on how many workers there
    are nor on resuming."""

    def __init__(self, config: PretrainConfig, first_step: int = 0, last_step: int | None = None) -> None:
        self.config, self.first_step = config, first_step
        self.last_step = config.steps if last_step is None else last_step

    def __len__(self) -> int:
        return max(self.last_step - self.first_step, 0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str]]:
        videos, captions = training_clips(self.first_step + index, self.config)
        return torch.from_numpy(videos), captions


def batch_loader(
    config: PretrainConfig, pin_memory: bool = False, first_step: int = 0, last_step: int | None = None
) -> torch.utils.data.DataLoader:
    """The batches of steps ``first_step`` .. ``last_step`` (default ``config.steps``), in order."""
    return torch.utils.data.DataLoader(
        TrainingBatches(config, first_step, last_step),
        batch_size=None,  # an item is already a whole batch
        shuffle=False,
        num_workers=config.workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if config.workers else None,
        worker_init_fn=_single_thread if config.workers else None,
    )


def _single_thread(_: int) -> None:
    torch.set_num_threads(1)


def learning_rate_at(
    step: int, config: PretrainConfig | CodecConfig, total_steps: int | None = None
) -> float:
    """Linear warmup, then cosine decay from ``learning_rate`` to ``min_learning_rate`` over
    ``total_steps`` (default ``config.steps``); the toy base model's and the learned codec's schedule."""
    total_steps = config.steps if total_steps is None else total_steps
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(total_steps - config.warmup_steps, 1)
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
    """MSE between the prediction and the flow target (the backbone's convention). Noise levels and
    noise come from the CPU ``generator`` (the same draws on every device)."""
    sigma = sample_sigmas(latents.shape[0], sigma_shift, generator).to(latents.device)
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    noisy = backbone.add_noise(latents, noise, sigma)
    prediction = backbone.predict(noisy, sigma, conditioning)
    return torch.nn.functional.mse_loss(prediction.float(), backbone.flow_target(latents, noise))


#: noise levels of the fixed validation protocol (docs/toy_backbone.md)
VALIDATION_SIGMAS = (0.05, 0.2, 0.5, 0.8, 0.95)


@torch.no_grad()
def denoising_errors(
    backbone: ToyBackbone,
    sigmas: tuple[float, ...] = VALIDATION_SIGMAS,
    n_clips: int = 32,
    seed: int = 424242,
) -> dict[str, float]:
    """The calibration protocol's fixed validation batch: ``n_clips`` generic clips (seed ``seed``, never
    a training seed), fixed noise, and per noise level the mean squared error of the clean latent the
    model implies (x̂ = z_σ + σ·prediction for Mochi's convention), in normalised latent units."""
    config = PretrainConfig(output=Path("."), batch_size=n_clips, seed=seed)
    videos, captions = training_clips(0, config)
    device = backbone.transformer.device
    latents = backbone.encode_video(torch.from_numpy(videos)).to(device)
    conditioning = backbone.encode_prompts(captions)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    errors = {}
    for value in sigmas:
        sigma = torch.full((n_clips,), value, device=device)
        noisy = backbone.add_noise(latents, noise, sigma)
        prediction = backbone.predict(noisy, sigma, conditioning).float()
        # Mochi's convention: target z - ε, so z = z_σ + σ·(z - ε); the other convention flips the sign.
        sign = 1.0 if backbone.flow_convention == "data_minus_noise" else -1.0
        clean = noisy + sign * value * prediction
        errors[f"{value:g}"] = float((clean - latents).square().mean())
    return errors


def pretrain(
    output: str | Path | None = None,
    steps: int | None = None,
    seed: int | None = None,
    config: PretrainConfig | None = None,
    show_progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Train the toy base model and save it as a pipeline folder; returns the training record (also
    written to ``recipe.json`` in the folder).

    ``output``/``steps``/``seed`` and any other :class:`PretrainConfig` field may be passed directly
    (they override ``config``); the defaults are the recipe of the shipped weights. A run checkpoints
    into ``output/checkpoint`` and the same call resumes from there, ending on the same weights as a
    run that was never stopped; a run stopped by ``run_steps`` / ``run_time_s`` returns
    ``{"finished": False, ...}`` without a pipeline.
    """
    values = config.model_dump() if config is not None else {}
    values.update(
        {k: v for k, v in dict(overrides, output=output, steps=steps, seed=seed).items() if v is not None}
    )
    if "output" not in values:
        raise ValueError("pretrain needs an output folder")
    config = PretrainConfig(**values)
    out = Path(config.output)
    checkpoint = out / CHECKPOINT_DIR
    check_output_folder(out, "model_index.json", "a toy pipeline")
    resuming = check_resume_settings(checkpoint, config)  # other settings: refused before any work
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    autocast = use_bf16_autocast(config.autocast, device)

    # 1. the model: a saved stage (its transformer and frozen text encoder) or random weights
    if config.init_from is not None:
        backbone = ToyBackbone.from_pretrained(config.init_from, torch_dtype=torch.float32)
    else:
        codec = load_codec_folder(config.codec) if config.codec is not None else None
        backbone = ToyBackbone(
            build_pipeline(config.seed, config.size, codec), ToyBackbone.default_max_sequence_length()
        )
        zero_init_modulation(backbone.transformer)
    backbone.to(device)
    transformer = backbone.transformer
    use_batched_attention(transformer)  # same outputs, no per-sample loop (matters at large batch)
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
    # ... or the checkpoint of an interrupted run: weights, EMA, optimizer and every random state
    state: dict[str, Any] = {"step": 0, "total_steps": None, "elapsed_s": 0.0, "runs": []}
    earlier_losses = torch.zeros(0)
    if resuming:
        state, tensors = load_checkpoint(checkpoint, transformer, ema, optimizer)
        generator.set_state(tensors["generator"])
        caption_rng.bit_generator.state = state.pop("caption_rng")
        earlier_losses = tensors["losses"]

    # 2. the loop: rendered batches -> latents + text -> flow-matching step -> EMA
    step = state["step"]
    schedule = Schedule.resumed(config, state)
    state["runs"].append(run_entry(step, schedule.total, device))
    losses: list[torch.Tensor] = []
    last_checkpoint = time.perf_counter()

    def save_state(folder: Path) -> None:
        state.update(
            step=step,
            total_steps=schedule.fixed_total,
            elapsed_s=schedule.elapsed(),
            caption_rng=caption_rng.bit_generator.state,
            config=json.loads(config.model_dump_json()),
        )
        extra = {"generator": generator.get_state(), "losses": _all_losses(earlier_losses, losses)}
        save_checkpoint(folder, transformer, ema, optimizer, state, extra)

    with _progress(show_progress) as progress:
        task = progress.add_task("pretraining", total=schedule.total, completed=step, loss=float("nan"))
        loader = batch_loader(
            config, device.type == "cuda", step, min(config.steps, schedule.stop)
        )  # the budget may shorten the run, never lengthen it
        for videos, captions in loader:
            if step >= schedule.end:
                break
            if schedule.observe(step):
                progress.update(task, total=schedule.total)
            with torch.no_grad():
                latents = backbone.encode_video(videos.to(device, non_blocking=True))
                conditioning = backbone.encode_prompts(
                    drop_captions(captions, config.caption_dropout, caption_rng)
                )
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, config, schedule.total)
            with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                loss = flow_matching_loss(backbone, latents, conditioning, generator, config.sigma_shift)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(transformer.parameters(), config.max_grad_norm)
            optimizer.step()
            if ema is not None:
                with torch.no_grad():
                    torch._foreach_lerp_(
                        list(ema.parameters()),
                        list(transformer.parameters()),
                        1 - ema_decay_at(step, config.ema_decay),
                    )
            # clone: a mean-reduced loss is a view that keeps the whole elementwise buffer alive
            losses.append(loss.detach().clone())
            if step % 25 == 0:
                progress.update(task, completed=step + 1, loss=float(torch.stack(losses[-50:]).mean()))
            step += 1
            if schedule.out_of_time():
                break
            if time.perf_counter() - last_checkpoint > config.checkpoint_every_s and step < schedule.total:
                save_state(checkpoint)
                last_checkpoint = time.perf_counter()
    wall = schedule.elapsed()
    if step < schedule.total:  # stopped by run_steps / run_time_s: checkpoint, hand back unfinished
        save_state(checkpoint)
        return {
            "finished": False,
            "steps": step,
            "total_steps": schedule.total,
            "wall_time_s": round(wall, 1),
        }
    losses_cpu = _all_losses(earlier_losses, losses).numpy()

    # 3. the pipeline folder, swapped in whole: the EMA weights, the record (with the fixed validation
    # protocol) and the final checkpoint (a rerun of the same command then only saves again)
    with atomic_folder(out) as folder:
        save_state(folder / CHECKPOINT_DIR)
        if ema is not None:
            transformer.load_state_dict(ema.state_dict())
        transformer.eval()
        validation = denoising_errors(backbone)
        transformer.to({"float32": torch.float32, "float16": torch.float16}[config.save_dtype])
        backbone.to("cpu")
        backbone.save_pretrained(folder)
        record = {
            "finished": True,
            "config": json.loads(config.model_dump_json()),
            "steps": len(losses_cpu),
            "clips_seen": len(losses_cpu) * config.batch_size,
            "parameters": sum(p.numel() for p in transformer.parameters()),
            "wall_time_s": round(wall, 1),
            "loss_first_50": float(np.mean(losses_cpu[:50])),
            "loss_last_100": float(np.mean(losses_cpu[-100:])),
            "loss_curve": [
                round(float(np.mean(losses_cpu[i : i + 100])), 4) for i in range(0, len(losses_cpu), 100)
            ],
            "validation_denoising_mse": validation,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": str(device),
            "machine": machine_description(device),
            "bf16_autocast": autocast,
            "runs": state["runs"],
        }
        if device.type == "cuda":
            record["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if (codec_recipe := read_recipe(config.codec)) is not None:
            # The learned codec's own training and acceptance (its loss curve is long: keep the summary).
            record["codec_recipe"] = {k: v for k, v in codec_recipe.items() if k not in ("loss_curve",)}
        if (init_recipe := read_recipe(config.init_from)) is not None:
            # The stage this one continued from, with its own command and evaluation: the exact lineage.
            record["init_recipe"] = init_recipe
        write_recipe(folder, record)
    return record


def _all_losses(earlier: torch.Tensor, new: list[torch.Tensor]) -> torch.Tensor:
    """Every step's loss so far, earlier invocations' first, as one float32 CPU tensor."""
    if not new:
        return earlier.float()
    return torch.cat([earlier.float(), torch.stack(new).float().cpu()])


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
    n_per_relation: int = 5, seed: int = CALIBRATION_PROMPT_SEED
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
    prompt_seed: int = CALIBRATION_PROMPT_SEED,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Oracle check of a base model on fresh prompts.

    ``subject_fidelity`` and ``relation_accuracy`` are measured on the relation prompts
    (``n_per_relation`` x 8 videos): the base must draw the subjects but, never having seen a relation,
    rarely act it out. ``generic_subject_fidelity`` is measured on the generic-motion prompts.
    """
    items = evaluation_prompts(n_per_relation, prompt_seed)
    if not include_generic:
        items = [item for item in items if item[0] in RELATIONS]
    videos = sample_videos(
        backbone,
        [prompt for _, prompt, _ in items],
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        seed=seed,
        batch_size=batch_size,
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
        "prompt_seed": prompt_seed,
    }
    if generic_items:
        metrics["n_generic_videos"] = len(generic_items)
        metrics["generic_subject_fidelity"] = subject_fidelity(
            [video for video, _ in generic_items], [item[2] for _, item in generic_items]
        )
    return metrics


__all__ = [
    "PretrainConfig",
    "evaluate_base",
    "evaluation_prompts",
    "pretrain",
    "sample_videos",
    "training_clips",
]
