"""`dreamrelation prepare videos`: fit any clips to a backbone's frame count and size, masks aligned.

Per clip: (1) resample to ``fps`` (frame k of the output is source frame floor(k * src_fps / fps));
(2) choose frames: the first N, N spread uniformly over the clip, or sliding chunks of N; (3) resize
so the frame covers the target and centre-crop (the geometry :func:`~dreamrelation.data.video.crop_geometry`
that training uses), to one size or to the nearest aspect-ratio bucket. The same source frames and the
same geometry (nearest-neighbour) are applied to the clip's mask PNGs, and the caption is copied.

The frame rule comes from the backbone class itself (its VAE's temporal factor, and whether the first
frame is encoded alone): Mochi 6k+1, Wan2.1 and HunyuanVideo 4k+1, the toy backbone 2k.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dreamrelation.data.dataset import (
    MASKS_FOLDER,
    RELATION_FILE,
    VIDEO_EXTENSIONS,
    list_mask_files,
    load_subject_masks,
)
from dreamrelation.data.video import read_frames, video_info, write_video
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.files import write_text_atomic
from dreamrelation.prepare.config import VideosConfig


@dataclass(frozen=True)
class FrameRule:
    """What a backbone's VAE accepts: frame counts and the spatial factor sizes must divide by."""

    backbone: str
    temporal_factor: int
    first_frame_alone: bool
    spatial_factor: int

    def is_valid(self, num_frames: int) -> bool:
        return num_frames >= 1 and (num_frames - self.first_frame_alone) % self.temporal_factor == 0

    def nearest(self, num_frames: int) -> tuple[int, int]:
        """The valid count at or below ``num_frames`` (at least the smallest valid one) and the next."""
        offset = int(self.first_frame_alone)
        k = max((num_frames - offset) // self.temporal_factor, 1 - offset)
        lower = k * self.temporal_factor + offset
        return lower, lower + self.temporal_factor

    def describe(self) -> str:
        return f"{self.temporal_factor}k+1" if self.first_frame_alone else f"{self.temporal_factor}k"


def frame_rule(backbone: str) -> FrameRule:
    """The backbone's rule, read from its class (no weights are loaded)."""
    from dreamrelation.backbones import backbone_class

    try:
        cls = backbone_class(backbone)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return FrameRule(backbone, cls.temporal_factor, bool(cls.first_frame_alone), cls.spatial_factor)


def check_geometry(rule: FrameRule, num_frames: int, height: int, width: int) -> None:
    """Raise ConfigError, with the nearest valid values, if the backbone cannot take this geometry."""
    if not rule.is_valid(num_frames):
        lower, upper = rule.nearest(num_frames)
        raise ConfigError(
            f"num_frames={num_frames} does not fit {rule.backbone} ({rule.describe()} frames); "
            f"use {lower} or {upper}"
        )
    for name, value in (("height", height), ("width", width)):
        if value % rule.spatial_factor:
            lower = value - value % rule.spatial_factor
            raise ConfigError(
                f"{name}={value} is not divisible by {rule.backbone}'s spatial factor {rule.spatial_factor}; "
                f"use {lower} or {lower + rule.spatial_factor}"
            )


def resample_indices(num_source_frames: int, source_fps: float, fps: float | None) -> list[int]:
    """Source frame shown at each output frame when playing at ``fps`` (None: every frame)."""
    if fps is None or source_fps <= 0 or math.isclose(fps, source_fps):
        return list(range(num_source_frames))
    step = source_fps / fps
    # A tiny epsilon keeps exact ratios (30 -> 15 fps: 0, 2, 4, ...) from flooring one frame short.
    count = math.floor((num_source_frames - 1) / step + 1e-9) + 1
    return [min(math.floor(k * step + 1e-9), num_source_frames - 1) for k in range(count)]


def choose_windows(available: int, num_frames: int, mode: str, stride: int | None = None) -> list[list[int]]:
    """Positions (into the resampled frames) of each output clip; empty if the clip is too short."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if available < num_frames:
        return []
    if mode == "first":
        return [list(range(num_frames))]
    if mode == "uniform":
        if num_frames == 1:
            return [[0]]
        return [[round(i * (available - 1) / (num_frames - 1)) for i in range(num_frames)]]
    if mode == "chunks":
        stride = stride or num_frames
        return [list(range(s, s + num_frames)) for s in range(0, available - num_frames + 1, stride)]
    raise ValueError(f"unknown frame choice {mode!r}; use first, uniform or chunks")


def nearest_bucket(height: int, width: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The (height, width) bucket whose aspect ratio is closest (in log scale) to the clip's."""
    if not buckets:
        raise ValueError("no buckets given")
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[1] / b[0]) - aspect))


@dataclass
class VideosReport:
    written: list[Path] = field(default_factory=list)
    #: (clip file name, why) for clips that gave no output
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _clip_sources(root: Path, default_caption: str | None) -> list[tuple[Path, str, Path | None]]:
    if not root.is_dir():
        raise InputError(root, "input folder does not exist", "point --input to a folder of clips")
    sources = []
    for path in sorted(root.iterdir()):
        if not path.is_file() or path.suffix.lower() not in VIDEO_EXTENSIONS or path.name.startswith("."):
            continue
        caption_path = path.with_suffix(".txt")
        if caption_path.is_file():
            lines = [ln.strip() for ln in caption_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if len(lines) != 1:
                raise InputError(caption_path, f"caption has {len(lines)} non-empty lines", "write one line")
            caption = lines[0]
        elif default_caption:
            caption = default_caption
        else:
            raise InputError(
                caption_path, f"{path.name} has no caption", "write one, or pass --caption for all such clips"
            )
        mask_dir = root / MASKS_FOLDER / path.stem
        sources.append((path, caption, mask_dir if mask_dir.is_dir() else None))
    if not sources:
        raise InputError(
            root, f"no videos found ({', '.join(VIDEO_EXTENSIONS)})", "put the clips in this folder"
        )
    return sources


def prepare_videos(config: VideosConfig, on_clip: Callable[[str, str], None] | None = None) -> VideosReport:
    """Write the prepared dataset folder(s); see the module docstring for the steps."""
    from dreamrelation.prepare.masking import write_mask_folder

    if config.output.resolve() == config.input.resolve():
        raise ConfigError(f"output {config.output} is the input folder; write the prepared clips elsewhere")
    rule = frame_rule(config.backbone)
    sizes = config.buckets if config.resize == "bucket" else [(config.height, config.width)]
    for height, width in sizes:
        check_geometry(rule, config.num_frames, height, width)
    report = VideosReport()
    relation_file = config.input / RELATION_FILE
    for video_path, caption, mask_dir in _clip_sources(config.input, config.caption):
        info = video_info(video_path)
        resampled = resample_indices(info.num_frames, info.fps, config.fps)
        windows = choose_windows(len(resampled), config.num_frames, config.frames, config.chunk_stride)
        if not windows:
            why = (
                f"has {len(resampled)} frames at {config.fps or info.fps:g} fps, "
                f"fewer than num_frames={config.num_frames}"
            )
            report.skipped.append((video_path.name, why))
            if on_clip is not None:
                on_clip(video_path.name, f"skipped: {why}")
            continue
        mask_count = len(list_mask_files(mask_dir)) if mask_dir is not None else info.num_frames
        if mask_dir is not None and mask_count != info.num_frames:
            raise InputError(
                mask_dir,
                f"has {mask_count} mask PNGs but {video_path.name} has {info.num_frames} frames",
                "one PNG per video frame; regenerate the masks (`dreamrelation masks`)",
            )
        height, width = (
            nearest_bucket(info.height, info.width, config.buckets)
            if config.resize == "bucket"
            else (config.height, config.width)
        )
        target = config.output / f"{height}x{width}" if config.resize == "bucket" else config.output
        target.mkdir(parents=True, exist_ok=True)
        if relation_file.is_file():
            shutil.copyfile(relation_file, target / RELATION_FILE)
        out_fps = config.fps or info.fps or 24.0
        for number, window in enumerate(windows):
            source_frames = [resampled[p] for p in window]
            name = video_path.stem if len(windows) == 1 else f"{video_path.stem}_c{number:02d}"
            frames = read_frames(video_path, source_frames, height, width)
            written = write_video(frames, target / f"{name}.mp4", fps=max(1, round(out_fps)), crf=config.crf)
            write_text_atomic(target / f"{name}.txt", caption + "\n")
            if mask_dir is not None:
                masks = load_subject_masks(
                    mask_dir, source_frames, height, width, video_size=(info.height, info.width)
                ).numpy()
                labels = (masks[0] > 0) * 1 + (masks[1] > 0) * 2
                write_mask_folder(labels.astype(np.uint8), target / MASKS_FOLDER / name)
            report.written.append(written)
            if on_clip is not None:
                on_clip(video_path.name, f"-> {written.name} ({len(window)} frames, {height}x{width})")
    if not report.written:
        raise InputError(
            config.input,
            f"no clip is long enough for {config.num_frames} frames ({len(report.skipped)} skipped)",
            "lower num_frames or fps",
        )
    return report


__all__ = [
    "FrameRule",
    "VideosReport",
    "check_geometry",
    "choose_windows",
    "frame_rule",
    "nearest_bucket",
    "prepare_videos",
    "resample_indices",
]
