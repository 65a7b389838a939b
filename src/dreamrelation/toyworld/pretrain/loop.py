"""The pretraining loop: flow matching on the toy backbone, AdamW with warmup and cosine decay, EMA."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
from dreamrelation.toyworld.backbone import (
    ToyBackbone,
    build_pipeline,
    load_codec_folder,
    zero_init_modulation,
)
from dreamrelation.toyworld.pretrain.config import PretrainConfig
from dreamrelation.toyworld.pretrain.data import batch_loader, drop_captions, training_clips
from dreamrelation.toyworld.run_state import (
    CHECKPOINT_DIR,
    Schedule,
    check_output_folder,
    check_resume_settings,
    ema_decay_at,
    learning_rate_at,
    load_checkpoint,
    read_recipe,
    run_entry,
    save_checkpoint,
    write_recipe,
)

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
