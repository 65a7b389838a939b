"""Train the learned toy codec and check it with the oracle (`dreamrelation toy codec train|evaluate`).

The codec (:class:`~dreamrelation.toyworld.learned_codec.LearnedToyCodec`) is trained as an
autoencoder on clips rendered on the fly by the world — every motion, relations included (the codec is
the world's camera: it must draw touching and overlapping sprites, which only the relations show; it
never sees a caption, and the transformer trained on its latents still never sees a relation). The loss
is an L1 pixel error weighted ``1 + sprite_weight`` on the sprites and a 1-px ring around them (the
renderer gives the masks for free): backgrounds are most of the pixels and none of the method.

Its acceptance (issue 8) is the frozen oracle on **round-tripped ground truth**: render relation clips,
encode, decode, and ask the oracle for subject fidelity and relation accuracy, both ≥ 0.98, so the
world keeps measuring the method and not the codec's blur (:func:`evaluate_codec`). The command line
over these is in :mod:`dreamrelation.cli.toy`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dreamrelation.devices import resolve_device
from dreamrelation.errors import ConfigError
from dreamrelation.files import atomic_folder
from dreamrelation.toyworld.learned_codec import LearnedToyCodec
from dreamrelation.toyworld.oracle import NONE, classify_relation, detect_background, subject_fidelity
from dreamrelation.toyworld.protocol import ACCEPTANCE_SEED, ACCEPTANCE_THRESHOLD, VALIDATION_SEED
from dreamrelation.toyworld.run_state import (
    CHECKPOINT_DIR,
    Schedule,
    check_output_folder,
    check_resume_settings,
    load_checkpoint,
    machine_record,
    read_recipe,
    run_entry,
    save_checkpoint,
    write_recipe,
)
from dreamrelation.toyworld.world import (
    GENERIC_MOTIONS,
    RELATIONS,
    render,
    sample_scenes,
)


class CodecConfig(BaseModel):
    """Every knob of a codec training run (defaults: the recipe probed on CPU, docs/toy_backbone.md)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    #: the codec folder to write (a rerun with the same settings resumes its checkpoint/)
    output: Path
    #: a trained codec folder to continue from (a further stage, with a fresh schedule); None: random
    init_from: Path | None = None
    #: numbers per latent cell (the exact codec has 96)
    latent_channels: int = Field(16, gt=0)
    #: width of the residual convolutions on the latent grid
    hidden_channels: int = Field(128, gt=0)
    #: residual blocks in the encoder
    encoder_blocks: int = Field(1, ge=0)
    #: residual blocks in the decoder
    decoder_blocks: int = Field(3, ge=0)
    #: width of an optional pixel-space refinement after the decoder (0: none)
    refine_channels: int = Field(0, ge=0)
    #: optimizer steps (with time_budget_s: the most; the budget sets the rest)
    steps: int = Field(100_000, gt=0)
    #: train for about this many seconds (the schedule's length is set from the first steps' throughput)
    time_budget_s: float | None = Field(None, gt=0)
    #: clips per step
    batch_size: int = Field(8, gt=0)
    #: peak Adam learning rate (after warmup, cosine decay to min_learning_rate)
    learning_rate: float = Field(2e-3, gt=0)
    #: learning rate at the end of the cosine decay
    min_learning_rate: float = Field(5e-5, ge=0)
    #: linear warmup steps
    warmup_steps: int = Field(100, ge=0)
    #: gradient-norm clip
    max_grad_norm: float = Field(1.0, gt=0)
    #: EMA decay of the saved weights (0: no EMA)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    #: extra loss weight on sprite pixels and a 1-px ring around them (1 everywhere else)
    sprite_weight: float = Field(10.0, ge=0)
    #: Gaussian noise added to the latents while training, in units of each channel's batch std
    #: (a scale-free "tiny KL": a decoder that tolerates slightly wrong latents); 0: deterministic
    latent_noise: float = Field(0.0, ge=0)
    #: motions the training clips are drawn from (relations included: touching sprites occur only there)
    motions: tuple[str, ...] = (*RELATIONS, *GENERIC_MOTIONS)
    #: seed of the weights and the clips
    seed: int = 0
    #: auto, cpu, cuda, cuda:N
    device: str = "auto"
    #: torch CPU threads (None: torch's default)
    threads: int | None = None
    #: processes rendering the training clips ahead of the model (0: render in the training loop);
    #: on a GPU rendering (~1 ms per clip) is the bottleneck without them
    workers: int = Field(0, ge=0)
    #: seconds between checkpoints (the run resumes from OUTPUT/checkpoint when started again)
    checkpoint_every_s: float = Field(300.0, gt=0)
    #: stop after this many steps in this invocation, checkpoint, and return unfinished (a rerun with
    #: the same settings continues); None: run to the end
    run_steps: int | None = Field(None, gt=0)
    #: stop this invocation after about this many seconds of training, checkpoint, and return
    #: unfinished (a rerun with the same settings continues); None: no limit
    run_time_s: float | None = Field(None, gt=0)

    @field_validator("motions")
    @classmethod
    def _known_motions(cls, motions: tuple[str, ...]) -> tuple[str, ...]:
        known = (*RELATIONS, *GENERIC_MOTIONS)
        unknown = [m for m in motions if m not in known]
        if unknown or not motions:
            raise ValueError(f"motions must be among {known}; got {list(motions)}")
        return motions

    @field_validator("init_from")
    @classmethod
    def _codec_folder(cls, init_from: Path | None) -> Path | None:
        if init_from is not None and not (Path(init_from) / "config.json").is_file():
            raise ValueError(
                f"{init_from} holds no codec (no config.json); "
                "pass a folder written by `dreamrelation toy codec train`"
            )
        return init_from

    def model_config_fields(self) -> dict[str, int]:
        return {
            "latent_channels": self.latent_channels,
            "hidden_channels": self.hidden_channels,
            "encoder_blocks": self.encoder_blocks,
            "decoder_blocks": self.decoder_blocks,
            "refine_channels": self.refine_channels,
        }


# ----------------------------------------------------------------------------- data and loss


def codec_clips(step: int, config: CodecConfig) -> tuple[np.ndarray, np.ndarray]:
    """The batch of step ``step``: (B, F, H, W, 3) uint8 clips and their (B, F, H, W) sprite masks
    (either subject), every motion, shape, colour and background; a pure function of (seed, step)."""
    rng = np.random.default_rng([config.seed, step, 7])
    videos, masks = [], []
    for _ in range(config.batch_size):
        motion = config.motions[int(rng.integers(len(config.motions)))]
        clip = render(sample_scenes(motion, 1, rng)[0])
        videos.append(clip.frames)
        masks.append(clip.masks.any(axis=0))
    return np.stack(videos), np.stack(masks)


def to_pixels(videos: torch.Tensor) -> torch.Tensor:
    """(B, F, H, W, 3) uint8 -> (B, 3, F, H, W) float in [-1, 1] (the backbone's encode_video scaling)."""
    return videos.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def to_uint8_video(pixels: torch.Tensor) -> np.ndarray:
    """(B, 3, F, H, W) float in [-1, 1] -> (B, F, H, W, 3) uint8, rounded (the pipeline's output)."""
    frames = ((pixels.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return frames.permute(0, 2, 3, 4, 1).to(torch.uint8).cpu().numpy()


class CodecBatches(torch.utils.data.Dataset):
    """Item i is the batch of step ``first_step + i`` (:func:`codec_clips`), so DataLoader workers
    render ahead and the batches do not depend on how many workers there are, nor on resuming."""

    def __init__(self, config: CodecConfig, first_step: int, last_step: int) -> None:
        self.config, self.first_step, self.last_step = config, first_step, last_step

    def __len__(self) -> int:
        return max(self.last_step - self.first_step, 0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        videos, masks = codec_clips(self.first_step + index, self.config)
        return torch.from_numpy(videos), torch.from_numpy(masks)


def sprite_weights(masks: torch.Tensor, sprite_weight: float) -> torch.Tensor:
    """(B, F, H, W) bool sprite masks -> (B, 1, F, H, W) loss weights: 1 + ``sprite_weight`` on the
    sprites dilated by one pixel (3×3 per frame, so both sides of every edge count), 1 elsewhere."""
    b, f, h, w = masks.shape
    frames = masks.float().reshape(b * f, 1, h, w)
    ring = torch.nn.functional.max_pool2d(frames, 3, stride=1, padding=1)
    return (1 + sprite_weight * ring).reshape(b, f, 1, h, w).transpose(1, 2)


def codec_loss(reconstruction: torch.Tensor, pixels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean absolute error: sum(w·|x̂ − x|) / sum(w) over all pixels and colour channels."""
    error = (reconstruction.float() - pixels).abs() * weights
    return error.sum() / (weights.sum() * pixels.shape[1])


def codec_step_loss(
    codec: LearnedToyCodec, pixels: torch.Tensor, weights: torch.Tensor, latent_noise: float = 0.0
) -> torch.Tensor:
    """One training forward: encode (raw latents), optionally perturb them, decode, weighted L1."""
    latents = codec.encode_raw(pixels)
    if latent_noise > 0:
        scale = latents.detach().std(dim=(0, 2, 3, 4), keepdim=True)
        latents = latents + latent_noise * scale * torch.randn_like(latents)
    return codec_loss(codec.decode_raw(latents), pixels, weights)


# ----------------------------------------------------------------------------- evaluation


def round_trip(codec: LearnedToyCodec, videos: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """(N, F, H, W, 3) uint8 -> encode -> decode -> (N, F, H, W, 3) uint8, on the codec's device."""
    out = []
    with torch.no_grad():
        for begin in range(0, len(videos), batch_size):
            chunk = torch.from_numpy(videos[begin : begin + batch_size])
            pixels = to_pixels(chunk).to(device=codec.device, dtype=codec.dtype)
            latents = codec.encode(pixels).latent_dist.mode()
            out.append(to_uint8_video(codec.decode(latents, return_dict=False)[0]))
    return np.concatenate(out)


def evaluation_scenes(n_per_motion: int, seed: int, motions: tuple[str, ...]) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [scene for motion in motions for scene in sample_scenes(motion, n_per_motion, rng)]


def oracle_scores(originals: np.ndarray, reconstructions: np.ndarray, scenes: list[Any]) -> dict[str, Any]:
    """The oracle on round-tripped clips (and, as the reference, on the originals themselves):
    subject fidelity and relation accuracy over the relation clips, ``none`` over the generic ones,
    background recognition over all, and the mean absolute pixel error (0–255)."""
    subjects = [(s.subject1, s.subject2) for s in scenes]
    is_relation = np.array([s.relation in RELATIONS for s in scenes])
    scores: dict[str, Any] = {
        "n_relation_clips": int(is_relation.sum()),
        "n_generic_clips": int((~is_relation).sum()),
    }
    for name, videos in (("round_trip", reconstructions), ("ground_truth", originals)):
        predicted = [classify_relation(v, sub) for v, sub in zip(videos, subjects, strict=True)]
        hits = [p == s.relation for p, s in zip(predicted, scenes, strict=True)]
        nones = [p == NONE for p in predicted]
        rel = [i for i in range(len(scenes)) if is_relation[i]]
        gen = [i for i in range(len(scenes)) if not is_relation[i]]
        part: dict[str, Any] = {}
        if rel:
            part["subject_fidelity"] = subject_fidelity([videos[i] for i in rel], [subjects[i] for i in rel])
            part["relation_accuracy"] = float(np.mean([hits[i] for i in rel]))
        if gen:
            part["generic_subject_fidelity"] = subject_fidelity(
                [videos[i] for i in gen], [subjects[i] for i in gen]
            )
            part["generic_none_accuracy"] = float(np.mean([nones[i] for i in gen]))
        part["background_accuracy"] = float(
            np.mean([detect_background(v) == s.background for v, s in zip(videos, scenes, strict=True)])
        )
        scores[name] = part
    error = np.abs(reconstructions.astype(np.float64) - originals.astype(np.float64))
    scores["mean_abs_error"] = float(error.mean())
    scores["max_abs_error"] = float(error.max())
    trip = scores["round_trip"]
    scores["passed"] = bool(
        trip.get("subject_fidelity", 0.0) >= ACCEPTANCE_THRESHOLD
        and trip.get("relation_accuracy", 0.0) >= ACCEPTANCE_THRESHOLD
    )
    return scores


def evaluate_codec(
    codec: LearnedToyCodec,
    n_per_relation: int = 25,
    seed: int = ACCEPTANCE_SEED,
    include_generic: bool = True,
    batch_size: int = 16,
) -> dict[str, Any]:
    """The acceptance check: ``n_per_relation`` fresh clips of each relation (and of each generic
    motion) from scene seed ``seed``, round-tripped through the codec and judged by the frozen oracle.
    ``passed``: subject fidelity and relation accuracy both ≥ :data:`ACCEPTANCE_THRESHOLD`."""
    motions = (*RELATIONS, *GENERIC_MOTIONS) if include_generic else tuple(RELATIONS)
    scenes = evaluation_scenes(n_per_relation, seed, motions)
    originals = np.stack([render(scene).frames for scene in scenes])
    start = time.perf_counter()
    reconstructions = round_trip(codec, originals, batch_size)
    scores = oracle_scores(originals, reconstructions, scenes)
    scores.update(
        {
            "n_per_relation": n_per_relation,
            "scene_seed": seed,
            "threshold": ACCEPTANCE_THRESHOLD,
            "round_trip_s": round(time.perf_counter() - start, 2),
        }
    )
    return scores


# ----------------------------------------------------------------------------- training


def build_codec(config: CodecConfig) -> LearnedToyCodec:
    torch.manual_seed(config.seed)
    return LearnedToyCodec(**config.model_config_fields())


def train_codec(
    output: str | Path | None = None,
    config: CodecConfig | None = None,
    show_progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a codec into ``output`` (resuming from ``output/checkpoint`` when one is there) and save
    the EMA weights as a diffusers model folder; returns the training record (also ``recipe.json``)."""
    # the base model's schedule and worker set-up (pretrain imports this module, hence here)
    from dreamrelation.seeding import single_thread_worker
    from dreamrelation.toyworld.run_state import learning_rate_at

    values = config.model_dump() if config is not None else {}
    values.update({k: v for k, v in dict(overrides, output=output).items() if v is not None})
    config = CodecConfig(**values)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    out = Path(config.output)
    check_output_folder(out, "config.json", "a codec")

    # 1. the model, its EMA and the optimizer (or the checkpoint of an interrupted run)
    codec = build_codec(config).to(device).train()
    ema = build_codec(config).to(device).requires_grad_(False) if config.ema_decay > 0 else None
    if config.init_from is not None:
        previous = LearnedToyCodec.from_pretrained(str(config.init_from))
        architecture = config.model_config_fields()
        differing = sorted(k for k, v in architecture.items() if previous.config[k] != v)
        if differing:
            raise ConfigError(
                f"--init-from {config.init_from} has another architecture ({', '.join(differing)}); "
                "use its settings"
            )
        codec.load_state_dict(previous.state_dict())
    if ema is not None:
        ema.load_state_dict(codec.state_dict())
    optimizer = torch.optim.Adam(codec.parameters(), lr=config.learning_rate, betas=(0.9, 0.99))
    state: dict[str, Any] = {"step": 0, "total_steps": None, "elapsed_s": 0.0, "losses": [], "validation": []}
    checkpoint = out / CHECKPOINT_DIR
    if check_resume_settings(checkpoint, config):
        state, _ = load_checkpoint(checkpoint, codec, ema, optimizer)

    # 2. the loop: render -> weighted L1 -> step -> EMA; the budget fixes the schedule's length
    step = state["step"]
    schedule = Schedule.resumed(config, state)
    last_checkpoint = time.perf_counter()
    window: list[torch.Tensor] = []  # losses stay on the device until logged (no per-step sync)
    cpu_start = time.process_time() - state.get("cpu_time_s", 0.0)
    # Every invocation (a first run, a resume) is recorded: the lineage of the weights.
    state.setdefault("runs", []).append(run_entry(step, schedule.total, device))
    batches = torch.utils.data.DataLoader(
        CodecBatches(config, step, min(config.steps, schedule.stop)),  # the budget may shorten it
        batch_size=None,
        num_workers=config.workers,
        prefetch_factor=4 if config.workers else None,
        worker_init_fn=single_thread_worker if config.workers else None,
        pin_memory=device.type == "cuda",
    )
    for videos, masks in batches:
        if step >= schedule.end:
            break
        schedule.observe(step)
        pixels = to_pixels(videos.to(device, non_blocking=True))
        weights = sprite_weights(masks.to(device, non_blocking=True), config.sprite_weight)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, config, schedule.total)
        loss = codec_step_loss(codec, pixels, weights, config.latent_noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), config.max_grad_norm)
        optimizer.step()
        if ema is not None:
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(list(ema.parameters()), list(codec.parameters()), 1 - decay)
        window.append(loss.detach())
        step += 1
        if len(window) == 50 or step == schedule.total:
            state["losses"].append([step, round(float(torch.stack(window).mean()), 5)])
            window = []
            if show_progress:
                print(
                    f"step {step}/{schedule.total}  loss {state['losses'][-1][1]:.4f}  "
                    f"{schedule.elapsed():.0f}s",
                    flush=True,
                )
        if schedule.out_of_time():
            break
        if time.perf_counter() - last_checkpoint > config.checkpoint_every_s and step < schedule.total:
            state["cpu_time_s"] = time.process_time() - cpu_start
            _validate_and_checkpoint(step, schedule, state, config, codec, ema, optimizer, show_progress)
            last_checkpoint = time.perf_counter()
    wall = schedule.elapsed()
    state["cpu_time_s"] = time.process_time() - cpu_start
    state.update(step=step, total_steps=schedule.fixed_total, elapsed_s=wall)
    if step < schedule.total:  # stopped by run_steps / run_time_s: checkpoint, hand back unfinished
        save_checkpoint(
            checkpoint, codec, ema, optimizer, {**state, "config": json.loads(config.model_dump_json())}
        )
        return {
            "finished": False,
            "steps": step,
            "total_steps": schedule.total,
            "wall_time_s": round(wall, 1),
        }

    # 3. the EMA weights, standardised on fresh clips, saved as a diffusers folder + the record
    final = ema if ema is not None else codec
    final.eval()
    stats_videos, _ = codec_clips(10**9, config.model_copy(update={"batch_size": 64}))
    final.set_latent_statistics(to_pixels(torch.from_numpy(stats_videos)).to(device))
    # the codec folder, swapped in whole: the weights, the final checkpoint (a rerun of the same
    # command then only saves again) and the record
    with atomic_folder(out) as folder:
        final.to("cpu").save_pretrained(str(folder), safe_serialization=True)
        save_checkpoint(
            folder / CHECKPOINT_DIR,
            codec.cpu(),
            ema,
            optimizer,
            {**state, "config": json.loads(config.model_dump_json())},
        )
        record = {
            "finished": True,
            "config": json.loads(config.model_dump_json()),
            "steps": step,
            "clips_seen": step * config.batch_size,
            "parameters": sum(p.numel() for p in final.parameters()),
            "wall_time_s": round(wall, 1),
            # on a shared machine the process gets less than a core: its own CPU time says how much
            "cpu_time_s": round(state["cpu_time_s"], 1),
            "loss_curve": state["losses"],
            "validation": state["validation"],
            "runs": state["runs"],
            **machine_record(device),
        }
        if (init_recipe := read_recipe(config.init_from)) is not None:
            # The stage this one continued from, with its own command and acceptance: the exact lineage.
            record["init_recipe"] = init_recipe
        write_recipe(folder, record)
    return record


def _validate_and_checkpoint(
    step: int,
    schedule: Schedule,
    state: dict[str, Any],
    config: CodecConfig,
    codec: LearnedToyCodec,
    ema: LearnedToyCodec | None,
    optimizer: torch.optim.Optimizer,
    show_progress: bool,
) -> None:
    """The progress check (oracle on 16 round-tripped validation clips, not the acceptance seed),
    then a checkpoint of the whole loop state."""
    model = ema if ema is not None else codec
    val_scenes = evaluation_scenes(2, VALIDATION_SEED, tuple(RELATIONS))
    val_videos = np.stack([render(scene).frames for scene in val_scenes])
    trip = round_trip(model, val_videos)
    scores = oracle_scores(val_videos, trip, val_scenes)
    state["validation"].append(
        {
            "step": step,
            "subject_fidelity": scores["round_trip"]["subject_fidelity"],
            "relation_accuracy": scores["round_trip"]["relation_accuracy"],
            "mean_abs_error": round(scores["mean_abs_error"], 2),
        }
    )
    if show_progress:
        print(f"  validation {state['validation'][-1]}", flush=True)
    state.update(step=step, total_steps=schedule.fixed_total, elapsed_s=schedule.elapsed())
    folder = Path(config.output) / CHECKPOINT_DIR
    save_checkpoint(folder, codec, ema, optimizer, {**state, "config": json.loads(config.model_dump_json())})


def load_codec(folder: str | Path, device: str | torch.device = "cpu") -> LearnedToyCodec:
    """A trained codec folder (config.json + safetensors) on ``device``, in eval mode."""
    return LearnedToyCodec.from_pretrained(str(folder)).to(device).eval()


__all__ = [
    "ACCEPTANCE_SEED",
    "ACCEPTANCE_THRESHOLD",
    "CodecConfig",
    "codec_clips",
    "codec_loss",
    "evaluate_codec",
    "load_codec",
    "oracle_scores",
    "round_trip",
    "sprite_weights",
    "train_codec",
]
