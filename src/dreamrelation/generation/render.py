"""`dreamrelation generate`: render a learned relation for new subjects through the backbone's
own diffusers pipeline, with only the inference adapters (``relation`` + ``ffn``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dreamrelation.backbones import Backbone, default_device, load_backbone
from dreamrelation.config import GenerateConfig
from dreamrelation.data import write_gif, write_video
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.files import file_sha256
from dreamrelation.generation.lora_files import (
    EXPERT_KEY,
    LORA_FILE_METHODS,
    check_lora_fits,
    expert_lora_paths,
    read_inference_lora,
)
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
    image: Image.Image | None = None,
    sound: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Videos for several prompts in one pipeline call: float frames in [0, 1], shape (N, F, H, W, 3).
    Video i starts from the noise of generator seed ``seeds[i]``, so it equals ``render(prompts[i],
    seed=seeds[i])``. With ``image``: image-to-video, the image as every video's first frame. A
    backbone that also generates sound (LTX-2) appends each video's (channels, samples) waveform to
    ``sound`` when it is given."""
    if len(prompts) != len(seeds):
        raise ValueError(f"one seed per prompt: got {len(prompts)} prompts and {len(seeds)} seeds")
    pipe = backbone.pipeline if image is None else backbone.image_pipeline()
    pipe.set_progress_bar_config(disable=not show_progress)
    given = {} if image is None else {"image": image}
    out = pipe(
        prompt=list(prompts),
        num_frames=num_frames,
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        generator=[torch.Generator(device="cpu").manual_seed(seed) for seed in seeds],
        output_type="np",
        **given,
        **backbone.pipeline_kwargs(guidance_scale),
    )
    if sound is not None and getattr(out, "audio", None) is not None:
        sound.extend(
            np.asarray(a.float().cpu() if torch.is_tensor(a) else a, dtype=np.float32) for a in out.audio
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
    image: Image.Image | None = None,
    sound: list[np.ndarray] | None = None,
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
        image=image,
        sound=sound,
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
    audio: bool = True,
    **render_kwargs: object,
) -> list[Path]:
    """Render each prompt and write ``NN-slug.mp4`` plus a ``.gif`` preview (and, for a backbone that
    generates sound, the sound as ``NN-slug.wav``); returns the MP4 paths."""
    output = Path(output)
    paths = []
    for i, prompt in enumerate(prompts):
        sound: list[np.ndarray] = []
        frames = render(backbone, prompt, sound=sound, **render_kwargs)
        path = _unused(output, slug(prompt, i))
        write_video(frames, path, fps=fps)
        write_gif(frames, path.with_suffix(".gif"), fps=fps, scale=gif_scale)
        if audio and sound and backbone.audio_sample_rate is not None:
            write_wav(sound[0], path.with_suffix(".wav"), backbone.sound_rate())
        paths.append(path)
    return paths


def write_wav(waveform: np.ndarray, path: Path, sample_rate: int) -> Path:
    """(channels, samples) floats in [-1, 1] -> 16-bit PCM WAV, written atomically."""
    import wave

    from dreamrelation.files import atomic_target

    pcm = (np.clip(np.atleast_2d(waveform), -1, 1) * 32767).round().astype("<i2")
    with atomic_target(path) as temp, wave.open(str(temp), "wb") as out:
        out.setnchannels(pcm.shape[0])
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(pcm.T.tobytes())
    return path


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
    apply_lora_files(backbone, lora, state, meta, scale)
    if fuse:
        backbone.fuse_lora(ADAPTER_NAME)
    return None


def apply_lora_files(
    backbone: Backbone, lora: Path, state: dict[str, torch.Tensor], meta: dict[str, object], scale: float
) -> None:
    """Our inference LoRA file(s) through diffusers' own loading: the pipeline's ``load_lora_weights``
    where it has one, each expert's file into its own transformer for a model of several (Wan2.2
    A14B: ``load_into_transformer_2``), else the transformer's peft adapter API (HunyuanVideo-1.5)."""
    experts = backbone.expert_components
    files = [(lora, state, "transformer")]
    if experts:
        paths = expert_lora_paths(lora, meta)
        if set(paths) != set(experts):
            raise InputError(
                lora,
                f"holds no expert of {backbone.name} (a LoRA trained on a single-transformer model)",
                f"train on --backbone {backbone.name}, or generate with the backbone the LoRA was trained on",
            )
        files = []
        for expert, component in experts.items():
            expert_state, expert_meta = read_inference_lora(paths[expert])
            if expert_meta.get(EXPERT_KEY) != expert:
                raise InputError(
                    paths[expert],
                    f"was trained for the {expert_meta.get(EXPERT_KEY)} expert, not {expert}",
                    "use the files of one training run, with the names training gave them",
                )
            files.append((paths[expert], expert_state, component))
    pipe = backbone.pipeline
    for path, file_state, component in files:
        module = getattr(pipe, component)
        check_lora_fits(file_state, module, path)
        if hasattr(pipe, "load_lora_weights"):
            into = {"load_into_transformer_2": True} if component == "transformer_2" else {}
            pipe.load_lora_weights(str(path), adapter_name=ADAPTER_NAME, **into)
        else:  # a pipeline without a LoRA loader: the transformer's own peft adapter API
            module.load_lora_adapter(str(path), prefix="transformer", adapter_name=ADAPTER_NAME)
    for component in dict.fromkeys(component for *_, component in files):
        getattr(pipe, component).set_adapters([ADAPTER_NAME], [scale])


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


def open_image(path: Path | None) -> Image.Image | None:
    """The still image at ``path`` as RGB (None: none): ``generate``'s ``image`` and training's
    ``validation_image``, checked before by ``preflight.check_image``."""
    if path is None:
        return None
    with Image.open(path) as image:
        return image.convert("RGB")


def generate(
    config: GenerateConfig, backbone: Backbone | None = None, show_progress: bool = True
) -> list[Path]:
    backbone = _prepared_backbone(config, backbone, config.prompts)
    if config.image is not None and not backbone.image_to_video:
        raise ConfigError(f"image: {backbone.name} has no image-to-video form; leave image unset")
    return render_and_save(
        backbone,
        config.prompts,
        config.output,
        fps=config.fps,
        audio=config.audio,
        num_frames=config.num_frames,
        height=config.height,
        width=config.width,
        num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale,
        seed=config.seed,
        show_progress=show_progress,
        image=open_image(config.image),
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
        **({"image_sha256": file_sha256(config.image)} if config.image is not None else {}),
    }
    backbone = _prepared_backbone(config, backbone, [e.prompt for e in entries])
    image = open_image(config.image)
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
            image=image,
        )

    return render_prompt_set(
        render_one, entries, config.output, settings, fps=config.fps, show_progress=show_progress
    )
