"""`dreamrelation generate`: render a learned relation for new subjects through the backbone's
own diffusers pipeline, with only the inference adapters (``relation`` + ``ffn``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from dreamrelation.backbones import Backbone, default_device, load_backbone
from dreamrelation.config import GenerateConfig
from dreamrelation.data import write_gif, write_video
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.files import file_sha256
from dreamrelation.generation.lora_files import LORA_FILE_METHODS, check_lora_fits, read_inference_lora
from dreamrelation.generation.manifest import RenderSummary, render_prompt_set
from dreamrelation.generation.prompts import PromptEntry, load_prompt_file

ADAPTER_NAME = "dreamrelation"


@torch.no_grad()
def render_batch(
    backbone: Backbone,
    prompts: list[str],
    seeds: list[int],
    *,
    num_frames: int,
    height: int,
    width: int,
    num_inference_steps: int = 64,
    guidance_scale: float = 6.0,
    show_progress: bool = True,
) -> np.ndarray:
    """Videos for several prompts in one pipeline call: float frames in [0, 1], shape (N, F, H, W, 3).
    Video i starts from the noise of generator seed ``seeds[i]``, so it equals ``render(prompts[i],
    seed=seeds[i])``."""
    if len(prompts) != len(seeds):
        raise ValueError(f"one seed per prompt: got {len(prompts)} prompts and {len(seeds)} seeds")
    pipe = backbone.pipeline
    pipe.set_progress_bar_config(disable=not show_progress)
    out = pipe(
        prompt=list(prompts),
        num_frames=num_frames,
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        generator=[torch.Generator(device="cpu").manual_seed(seed) for seed in seeds],
        output_type="np",
        **backbone.pipeline_kwargs(guidance_scale),
    )
    return np.asarray(out.frames, dtype=np.float32)


def render(
    backbone: Backbone,
    prompt: str,
    *,
    num_frames: int,
    height: int,
    width: int,
    num_inference_steps: int = 64,
    guidance_scale: float = 6.0,
    seed: int = 0,
    show_progress: bool = True,
) -> np.ndarray:
    """One video as float frames in [0, 1], shape (F, H, W, 3); reproducible by ``seed``."""
    return render_batch(
        backbone,
        [prompt],
        [seed],
        num_frames=num_frames,
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        show_progress=show_progress,
    )[0]


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] -> uint8 pixels, rounded."""
    return np.clip(np.round(frames * 255), 0, 255).astype(np.uint8)


def slug(prompt: str, index: int) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60]
    return f"{index:02d}-{words or 'video'}"


def _unused(output: Path, stem: str) -> Path:
    """``output/stem.mp4``, or ``stem-2.mp4``, ``stem-3.mp4``… when an earlier render (or any
    file of the user's) has the name: a new render never replaces an existing video or preview."""
    path, n = output / f"{stem}.mp4", 1
    while path.exists() or path.with_suffix(".gif").exists():
        n += 1
        path = output / f"{stem}-{n}.mp4"
    return path


def render_and_save(
    backbone: Backbone,
    prompts: list[str],
    output: Path,
    *,
    fps: int = 8,
    gif_scale: int = 1,
    **render_kwargs: object,
) -> list[Path]:
    """Render each prompt and write ``NN-slug.mp4`` plus a ``.gif`` preview; returns the MP4 paths."""
    output = Path(output)
    paths = []
    for i, prompt in enumerate(prompts):
        frames = render(backbone, prompt, **render_kwargs)
        path = _unused(output, slug(prompt, i))
        write_video(frames, path, fps=fps)
        write_gif(frames, path.with_suffix(".gif"), fps=fps, scale=gif_scale)
        paths.append(path)
    return paths


def load_inference_lora(backbone: Backbone, lora: Path, scale: float = 1.0, fuse: bool = False) -> str | None:
    """Apply a file written by training to ``backbone``, whatever the method that wrote it.

    LoRA methods (dreamrelation, direct_lora): our diffusers-format LoRA through the pipeline's own
    ``load_lora_weights``. ReVersion: the relation token is added to the tokenizer(s) and text
    encoder(s); its text (e.g. ``<R>``) is returned and must appear in the prompts. MotionInversion:
    the motion embeddings are hooked onto the attention inputs (scaled by ``scale``).
    """
    lora = Path(lora)
    state, meta = read_inference_lora(lora)  # refuses non-LoRAs, the triplet, NaN
    trained_on = meta.get("dreamrelation.backbone")
    if trained_on is not None and trained_on != backbone.name:
        raise InputError(
            lora, f"was trained on {trained_on}, not {backbone.name}", f"use --backbone {trained_on}"
        )
    method = str(meta.get("dreamrelation.method", "dreamrelation"))
    if method not in LORA_FILE_METHODS:
        from dreamrelation.training.methods import METHOD_NAMES, method_class

        if method not in METHOD_NAMES:
            raise InputError(lora, f"was written by unknown method {method!r}", "update dreamrelation")
        return method_class(method).apply_file(backbone, lora, meta, scale)
    check_lora_fits(state, backbone.transformer, lora)
    pipe = backbone.pipeline
    pipe.load_lora_weights(str(lora), adapter_name=ADAPTER_NAME)
    pipe.set_adapters([ADAPTER_NAME], [scale])
    if fuse:
        pipe.fuse_lora(lora_scale=1.0, adapter_names=[ADAPTER_NAME])
        pipe.unload_lora_weights()
    return None


def apply_memory_options(backbone: Backbone, config: GenerateConfig, device: torch.device) -> None:
    """VAE tiling/slicing and model CPU offload, as asked by ``config`` (checked before any work)."""
    vae = backbone.vae
    for wanted, method in ((config.vae_tiling, "enable_tiling"), (config.vae_slicing, "enable_slicing")):
        if wanted:
            if not hasattr(vae, method):
                raise ConfigError(f"{backbone.name}'s VAE has no {method}; set {method[7:]}: false")
            getattr(vae, method)()
    if config.cpu_offload:
        backbone.pipeline.enable_model_cpu_offload(device=device)


def _prepared_backbone(config: GenerateConfig, backbone: Backbone | None, prompts: list[str]) -> Backbone:
    device = torch.device(config.device) if config.device else default_device()
    if config.cpu_offload and device.type != "cuda":
        raise ConfigError(
            f"cpu_offload moves models between the CPU and a GPU, but generation runs on {device}; "
            "set cpu_offload: false"
        )
    if backbone is None:
        spec = config.model
        # with CPU offload the pipeline stays on the CPU; diffusers moves each model in turn
        backbone = load_backbone(
            spec.backbone, spec.model, spec.dtype, spec.max_sequence_length,
            None if config.cpu_offload else device,
        )  # fmt: skip
    if config.lora is not None:
        token = load_inference_lora(backbone, config.lora, config.lora_scale, config.fuse)
        missing = [p for p in prompts if token is not None and token not in p]
        if missing:
            raise InputError(
                config.lora,
                f"is a learned relation token and the prompt {missing[0]!r} does not use it",
                f"write the relation as {token}, e.g. 'A dog {token} a cat.'",
            )
    apply_memory_options(backbone, config, device)
    return backbone


def generate(
    config: GenerateConfig, backbone: Backbone | None = None, show_progress: bool = True
) -> list[Path]:
    backbone = _prepared_backbone(config, backbone, config.prompts)
    return render_and_save(
        backbone,
        config.prompts,
        config.output,
        fps=config.fps,
        num_frames=config.num_frames,
        height=config.height,
        width=config.width,
        num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale,
        seed=config.seed,
        show_progress=show_progress,
    )


def generate_prompt_set(
    config: GenerateConfig, backbone: Backbone | None = None, show_progress: bool = True
) -> RenderSummary:
    """`generate --prompts FILE`: every prompt of the set with its own seed, into ``config.output``
    with a ``manifest.json`` (see ``dreamrelation.generation.manifest``); resumable."""
    entries = load_prompt_file(config.prompt_file, config.relations)  # checked before any model loads
    settings = {
        "backbone": config.model.backbone,
        "model": config.model.model,
        "dtype": config.model.dtype,
        "lora": Path(config.lora).name if config.lora else None,
        "lora_sha256": file_sha256(config.lora) if config.lora and Path(config.lora).is_file() else None,
        "lora_scale": config.lora_scale,
        "num_inference_steps": config.num_inference_steps,
        "guidance_scale": config.guidance_scale,
        "num_frames": config.num_frames,
        "height": config.height,
        "width": config.width,
    }
    backbone = _prepared_backbone(config, backbone, [e.prompt for e in entries])
    geometry = {"num_frames": config.num_frames, "height": config.height, "width": config.width}

    def render_one(entry: PromptEntry) -> np.ndarray:
        return render(
            backbone,
            entry.prompt,
            **geometry,
            num_inference_steps=config.num_inference_steps,
            guidance_scale=config.guidance_scale,
            seed=entry.seed,
            show_progress=False,
        )

    return render_prompt_set(
        render_one, entries, config.output, settings, fps=config.fps, show_progress=show_progress
    )
