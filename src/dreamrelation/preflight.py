"""Checks that run before any model loads, so a user's mistake costs seconds and leaves nothing behind.

Every check raises the project's errors (one line naming the file or setting and the fix); the CLI
turns them into exit code 2. The commands call :func:`preflight_cache`, :func:`preflight_train` and
:func:`preflight_generate` right after their config is validated. Each gathers checks that live in the
room they check (output folders in ``files``, caches in ``cache``, resuming in ``training.checkpoints``,
LoRA files in ``generation.lora_files``); only the backbone and geometry checks are this module's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dreamrelation.errors import ConfigError, InputError
from dreamrelation.files import check_output_dir

if TYPE_CHECKING:
    from dreamrelation.backbones import Backbone
    from dreamrelation.config import CacheConfig, GenerateConfig, ModelSpec, TrainConfig


# ----- model and geometry -----------------------------------------------------------------------
def check_backbone(spec: ModelSpec) -> type[Backbone]:
    """The backbone class named by the config, or a ConfigError listing the choices."""
    from dreamrelation.backbones import backbone_class

    try:
        return backbone_class(spec.backbone)
    except ValueError as exc:
        raise ConfigError(f"model.backbone: {exc}") from None


def check_streams(cls: type[Backbone], streams: Sequence[str] | None) -> None:
    unknown = [s for s in streams or [] if s not in cls.streams]
    if unknown:
        raise ConfigError(
            f"lora.streams: {cls.name} has no stream(s) {unknown}; choose from {', '.join(cls.streams)}"
        )


def check_geometry(cls: type[Backbone], num_frames: int, height: int, width: int, where: str = "") -> None:
    """Frame count and size that the backbone's VAE can encode (its frame rule, its spatial factor)."""
    from dreamrelation.data.masks import temporal_groups

    try:
        temporal_groups(num_frames, cls.temporal_factor, cls.first_frame_alone)
    except ValueError as exc:
        raise ConfigError(f"{where}num_frames: {cls.name}: {exc}") from None
    factor = cls.spatial_factor
    if height % factor or width % factor:
        raise ConfigError(
            f"{where}height/width: {cls.name} needs multiples of {factor}; got {height}x{width} "
            f"(e.g. {height - height % factor or factor}x{width - width % factor or factor})"
        )


def check_image_to_video(cls: type[Backbone], key: str) -> None:
    """``first_frame`` / ``image`` need a backbone with an image-to-video form."""
    if not cls.image_to_video:
        from dreamrelation.backbones import BACKBONES

        able = ", ".join(sorted(n for n, c in BACKBONES.items() if c.image_to_video))
        raise ConfigError(
            f"{key}: {cls.name} has no image-to-video form (text-to-video only); use --backbone {able}, "
            f"or leave {key} unset"
        )


def check_image(path: Path, height: int, width: int, setting: str = "--image") -> None:
    """A readable still image whose aspect ratio is the video's (the pipeline resizes it to
    height x width; another aspect ratio would be distorted)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image not found", f"pass the path of a PNG or JPEG file with {setting}")
    try:
        with Image.open(path) as image:
            w, h = image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(
            path, f"not a readable image ({type(exc).__name__})", "pass a PNG or JPEG file"
        ) from None
    if abs((w / h) / (width / height) - 1) > 0.01:
        raise InputError(
            path,
            f"is {w}x{h} (aspect {w / h:.2f}) but the video is {width}x{height} "
            f"(aspect {width / height:.2f})",
            "crop the image to the video's aspect ratio, or set --width/--height to the image's",
        )


# ----- one call per command ---------------------------------------------------------------------
def preflight_cache(config: CacheConfig) -> None:
    cls = check_backbone(config.model)
    geo = config.video
    check_geometry(cls, geo.num_frames, geo.height, geo.width, "video.")
    check_output_dir(config.output, "cache output")


def preflight_train(config: TrainConfig) -> None:
    from dreamrelation.cache import check_cache_matches_model
    from dreamrelation.training.checkpoints import check_resume
    from dreamrelation.training.trackers import check_trackers

    cls = check_backbone(config.model)
    check_first_frame(cls, config)
    check_streams(cls, config.lora.streams)
    check_output_dir(config.output, "training output")
    check_cache_matches_model(config.cache, config.model)
    if config.validation_every:
        check_validation_image(cls, config)
    check_resume(config)

    check_trackers(config)


def check_first_frame(cls: type[Backbone], config: TrainConfig) -> None:
    """``first_frame`` needs an image-to-video form, and an image-to-video-only backbone needs it."""
    if config.first_frame:
        check_image_to_video(cls, "first_frame")
    elif not cls.text_to_video:
        raise ConfigError(f"first_frame: {cls.name} is image-to-video only; pass --first-frame")


def check_validation_image(
    cls: type[Backbone], config: TrainConfig, video_size: tuple[int, int] | None = None
) -> None:
    """Validation renders from ``validation_image`` where one is given, and must have one where the
    backbone cannot render from text alone. ``video_size``: the clips' (height, width), by default
    the cache's (the web UI checks before it has built the cache)."""
    if config.validation_image is None:
        if not cls.text_to_video:
            raise ConfigError(
                f"validation_image: {cls.name} is image-to-video only, so its validation videos need an "
                "image; set validation_image: photo.png (or validation_every: null)"
            )
        return
    check_image_to_video(cls, "validation_image")
    if video_size is None:
        from dreamrelation.cache import read_cache_manifest

        video = read_cache_manifest(config.cache[0])["video"]
        video_size = video["height"], video["width"]
    check_image(config.validation_image, *video_size, "validation_image")


def preflight_generate(config: GenerateConfig) -> None:
    cls = check_backbone(config.model)
    check_geometry(cls, config.num_frames, config.height, config.width)
    if config.image is not None:
        check_image_to_video(cls, "image")
        check_image(config.image, config.height, config.width)
    elif not cls.text_to_video:
        raise ConfigError(f"image: {cls.name} is image-to-video only; pass --image photo.png")
    check_output_dir(config.output, "video output")
    if config.lora is not None:
        from dreamrelation.generation.lora_files import read_inference_lora

        _, meta = read_inference_lora(config.lora)
        trained_on = meta.get("dreamrelation.backbone")
        if trained_on is not None and trained_on != cls.name:
            problem = f"was trained on {trained_on}, not {cls.name}"
            raise InputError(config.lora, problem, f"use --backbone {trained_on}")
        from dreamrelation.generation.lora_files import expert_lora_paths

        expert_lora_paths(config.lora, meta)  # a multi-expert run's other files are beside it
