"""Previews of a dataset folder's clips that a browser plays: the clip itself, and its masks over it.

Dataset clips may be in a codec no browser decodes (the toy world's lossless RGB H.264, an .avi), so
the preview is re-encoded as H.264 yuv420p, small clips enlarged (nearest) to at least ``min_size``
pixels. The mask preview is what ``dreamrelation masks`` writes beside the masks (``previews/<clip>.gif``:
each frame beside itself with subject 1 tinted red and subject 2 green), made here from masks that
exist already. Both go to the dataset folder's ``previews/`` and are remade only when missing or older
than their sources.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dreamrelation.data.dataset import MASKS_FOLDER, _open_mask, decode_subject_labels, list_mask_files
from dreamrelation.data.video import read_video, video_info, write_gif, write_video
from dreamrelation.errors import InputError
from dreamrelation.prepare.masking import PREVIEW_FOLDER, preview_frames

__all__ = ["clip_preview", "mask_preview"]


def _fresh(target: Path, *sources: Path) -> bool:
    if not target.is_file():
        return False
    newest = max(
        (p.stat().st_mtime for s in sources for p in ([s, *s.iterdir()] if s.is_dir() else [s])),
        default=0,
    )
    return target.stat().st_mtime >= newest


def _scale(height: int, width: int, min_size: int) -> int:
    return max(1, min_size // max(1, min(height, width)))


def _frames(video: Path) -> np.ndarray:
    info = video_info(video)
    return read_video(video, info.num_frames, info.height, info.width).numpy()


def clip_preview(video: str | Path, min_size: int = 128, fps: int = 8) -> Path:
    """``previews/<clip>.mp4`` beside ``video``: the clip as browser-playable H.264 (yuv420p).
    A clip that does not decode raises :class:`InputError` naming it."""
    video = Path(video)
    target = video.parent / PREVIEW_FOLDER / f"{video.stem}.mp4"
    if _fresh(target, video):
        return target
    frames = _frames(video)
    scale = _scale(frames.shape[1], frames.shape[2], min_size)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    return write_video(frames, target, fps=fps)


def mask_preview(video: str | Path, min_size: int = 128, fps: int = 8) -> Path | None:
    """``previews/<clip>.gif``: the clip beside itself with its masks overlaid (as ``dreamrelation
    masks`` writes it), from ``masks/<clip>/``; None when the clip has no masks yet. A mask folder
    whose PNG count differs from the clip's frames, or an unreadable mask, raises :class:`InputError`."""
    video = Path(video)
    mask_dir = video.parent / MASKS_FOLDER / video.stem
    if not mask_dir.is_dir():
        return None
    target = video.parent / PREVIEW_FOLDER / f"{video.stem}.gif"
    if _fresh(target, video, mask_dir):
        return target
    frames = _frames(video)
    files = list_mask_files(mask_dir)
    if len(files) != len(frames):
        raise InputError(
            mask_dir,
            f"has {len(files)} mask PNGs but {video.name} has {len(frames)} frames",
            "delete the folder and run the masks again",
        )
    labels = np.stack([decode_subject_labels(_open_mask(path), path) for path in files])
    if labels.shape[1:] != frames.shape[1:3]:
        raise InputError(
            mask_dir,
            f"masks are {labels.shape[2]}x{labels.shape[1]} but {video.name} is "
            f"{frames.shape[2]}x{frames.shape[1]}",
            "make the masks at the video's size",
        )
    scale = _scale(frames.shape[1], frames.shape[2], min_size)
    return write_gif(preview_frames(frames, labels), target, fps=fps, scale=scale)
