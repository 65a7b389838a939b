"""The dataset folder of one relation: videos, one-line captions and per-frame subject masks.

Layout::

    <root>/<name>.mp4                 (also .avi .mov .mkv .webm)
    <root>/<name>.txt                 caption, one line, e.g. "A person is shaking hands with a person."
    <root>/masks/<name>/00000.png     one PNG per decoded video frame, numbered from 0
    <root>/relation.txt               optional relation name (default: the folder name)

A mask PNG paints each subject in its colour on black: subject1 red, subject2 green by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dreamrelation.data.video import frame_size, resize_and_crop, video_info
from dreamrelation.errors import InputError
from dreamrelation.files import safe_name

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
DEFAULT_SUBJECT_COLORS: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0))
DEFAULT_COLOR_TOLERANCE = 60
RELATION_FILE = "relation.txt"
MASKS_FOLDER = "masks"

_CAPTION_EXAMPLE = "'A person is shaking hands with a person.'"


@dataclass
class VideoItem:
    """One exemplar video of a relation, with its caption and (optionally) its mask folder."""

    name: str
    video_path: Path
    caption: str
    mask_dir: Path | None
    relation: str


def _read_one_line(path: Path, what: str, example: str) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the caption
    except UnicodeDecodeError as error:
        raise InputError(path, f"{what} is not UTF-8 text ({error})", "save the file as UTF-8") from error
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(path, f"{what} is empty", f"write the {what} on one line, e.g. {example}")
    if len(lines) > 1:
        raise InputError(path, f"{what} has {len(lines)} non-empty lines", f"put the {what} on a single line")
    return lines[0]


def scan_dataset(
    root: str | Path, relation: str | None = None, require_masks: bool = True
) -> list[VideoItem]:
    """List the videos of a dataset folder with their captions, sorted by name.

    Checks file pairing only (cheap); :func:`check_item` decodes a video and counts its masks.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(root, "dataset folder does not exist", "check the path to the relation's folder")
    if not root.is_dir():
        raise InputError(root, "is not a folder", "point to the folder that holds <name>.mp4 and <name>.txt")

    if relation is None:
        relation_file = root / RELATION_FILE
        if relation_file.is_file():
            relation = _read_one_line(relation_file, "relation name", "'shaking hands'")
        else:
            relation = root.resolve().name
        # the relation becomes part of the cache's file names: it must stay inside that folder
        safe_name(relation, str(relation_file))

    videos: dict[str, Path] = {}
    captions: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        suffix = path.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            if path.stem in videos:
                raise InputError(
                    path,
                    f"two videos share the name {path.stem!r} ({videos[path.stem].name} and {path.name})",
                    "keep one of them or rename the other (its caption and mask folder too)",
                )
            videos[path.stem] = path
        elif suffix == ".txt" and path.name != RELATION_FILE:
            captions[path.stem] = path

    if not videos:
        raise InputError(
            root,
            f"no videos found (looked for {', '.join(VIDEO_EXTENSIONS)})",
            "put the exemplar clips in this folder, each with a <name>.txt caption beside it",
        )
    for name, caption_path in sorted(captions.items()):
        if name not in videos:
            raise InputError(
                caption_path,
                f"caption has no matching video (no {name}{'/'.join(VIDEO_EXTENSIONS)})",
                f"add the video {name}.mp4 or remove the caption file",
            )

    items = []
    for name in sorted(videos):
        caption_path = root / f"{name}.txt"
        if name not in captions:
            raise InputError(
                caption_path,
                f"video {videos[name].name} has no caption file",
                f"write the caption, e.g. {_CAPTION_EXAMPLE}, on one line in {caption_path.name}",
            )
        caption = _read_one_line(captions[name], "caption", _CAPTION_EXAMPLE)
        mask_dir: Path | None = root / MASKS_FOLDER / name
        if not mask_dir.is_dir():
            if require_masks:
                raise InputError(
                    mask_dir,
                    f"mask folder for video {videos[name].name} is missing",
                    "make one PNG per video frame (00000.png, 00001.png, ...) with subject1 red and "
                    "subject2 green on black, or train without masks",
                )
            mask_dir = None
        item = VideoItem(name, videos[name], caption, mask_dir, relation)
        items.append(item)
    return items


def list_mask_files(mask_dir: str | Path) -> list[Path]:
    """The mask PNGs of one video in frame order: 00000.png (or 0.png), 00001.png, ...

    Sorted by the number, not the text, so ``2.png`` comes before ``10.png``. Numbers must run 0..N-1.
    """
    mask_dir = Path(mask_dir)
    if not mask_dir.is_dir():
        raise InputError(
            mask_dir, "mask folder does not exist", "make one PNG per video frame in this folder"
        )
    numbered: dict[int, Path] = {}
    for path in mask_dir.iterdir():
        if path.name.startswith(".") or path.suffix.lower() != ".png":
            continue
        if not path.stem.isdigit():
            raise InputError(
                path,
                "mask file name is not a frame number",
                "name mask PNGs by the frame they belong to, e.g. 00000.png, 00001.png, ...",
            )
        index = int(path.stem)
        if index in numbered:
            raise InputError(
                path,
                f"frame {index} has two masks ({numbered[index].name} and {path.name})",
                "keep one PNG per frame",
            )
        numbered[index] = path
    if not numbered:
        raise InputError(
            mask_dir, "mask folder has no PNG files", "make one PNG per video frame: 00000.png, 00001.png ..."
        )
    indices = sorted(numbered)
    missing = sorted(set(range(indices[-1] + 1)) - set(indices))
    if missing:
        shown = ", ".join(str(i) for i in missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise InputError(
            mask_dir,
            f"mask frame numbers are not contiguous from 0: missing {shown} (found {len(indices)} PNGs, "
            f"numbered {indices[0]}..{indices[-1]})",
            "number the PNGs 0, 1, 2, ... with one PNG per decoded video frame, the first being 00000.png",
        )
    return [numbered[i] for i in indices]


def _color_list(colors: Sequence[Sequence[int]]) -> str:
    return ", ".join(f"subject{i + 1} {tuple(int(c) for c in color)}" for i, color in enumerate(colors))


def decode_subject_labels(
    image: Image.Image,
    path: str | Path,
    colors: Sequence[Sequence[int]] = DEFAULT_SUBJECT_COLORS,
    tolerance: int = DEFAULT_COLOR_TOLERANCE,
) -> np.ndarray:
    """Turn a colour mask into labels (H, W) uint8: 0 background, i+1 for subject i.

    A pixel is background if all its channels are below ``tolerance``; otherwise it belongs to the
    nearest subject colour within ``tolerance`` (max-abs RGB distance). Anything else is an error.
    """
    source_mode = image.mode
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    palette = np.asarray(colors, dtype=np.int16).reshape(-1, 3)
    # (K, H, W): max-abs distance of each pixel to each subject colour.
    distances = np.abs(rgb[None, :, :, :] - palette[:, None, None, :]).max(axis=-1)
    nearest = distances.argmin(axis=0)
    nearest_distance = distances.min(axis=0)
    is_background = rgb.max(axis=-1) < tolerance
    is_subject = nearest_distance <= tolerance
    # A dark subject colour could also pass as black: the nearer one wins.
    is_subject &= ~is_background | (nearest_distance < rgb.max(axis=-1))
    unknown = ~(is_background | is_subject)
    if unknown.any():
        ys, xs = np.nonzero(unknown)
        color = tuple(int(c) for c in rgb[ys[0], xs[0]])
        hint = (
            f" (the PNG is single-channel, mode {source_mode}; subjects need colours)"
            if source_mode in ("1", "L", "I", "I;16", "F")
            else ""
        )
        if "A" in image.getbands() or "transparency" in image.info:
            alpha = np.asarray(image.convert("RGBA"))[ys[0], xs[0], 3]
            hint += (
                f" (the PNG has an alpha channel, which masks ignore: this pixel's alpha is {int(alpha)}; "
                "flatten the masks onto black without transparency)"
            )
        raise InputError(
            path,
            f"pixel (x={xs[0]}, y={ys[0]}) has colour {color}, which is neither black nor a subject colour "
            f"({_color_list(colors)}, tolerance {tolerance}); {int(unknown.sum())} such pixels{hint}",
            "paint each subject in its colour on a black background with no anti-aliasing, "
            "or pass the colours your masks use (colors=...) or a larger tolerance",
        )
    labels = np.where(is_subject, nearest + 1, 0)
    return labels.astype(np.uint8)


def _open_mask(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(
            path, f"mask PNG cannot be read ({type(error).__name__}: {error})", "re-export the mask PNG"
        ) from error


def load_subject_masks(
    item_or_mask_dir: VideoItem | str | Path,
    frame_indices: Sequence[int],
    height: int,
    width: int,
    colors: Sequence[Sequence[int]] = DEFAULT_SUBJECT_COLORS,
    tolerance: int = DEFAULT_COLOR_TOLERANCE,
    video_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Masks of the subjects for the given original frame indices, as float32 (S, F, H, W) in {0, 1}.

    The same resize and centre crop as :func:`~dreamrelation.data.video.read_video` is applied
    (nearest-neighbour), so masks stay aligned with the frames. ``video_size`` (height, width) is
    checked against every PNG; it is read from the video when a :class:`VideoItem` is given.
    """
    if isinstance(item_or_mask_dir, VideoItem):
        item: VideoItem | None = item_or_mask_dir
        if item_or_mask_dir.mask_dir is None:
            raise InputError(
                item_or_mask_dir.video_path,
                "video has no mask folder",
                f"make masks/{item_or_mask_dir.name}/00000.png, ... beside the videos",
            )
        mask_dir = item_or_mask_dir.mask_dir
    else:
        item = None
        mask_dir = Path(item_or_mask_dir)
    if any(index < 0 for index in frame_indices):
        raise ValueError(f"frame indices must be >= 0, got {list(frame_indices)}")

    mask_files = list_mask_files(mask_dir)
    if frame_indices and max(frame_indices) >= len(mask_files):
        missing = max(frame_indices)
        in_video = ""
        if item is not None:
            in_video = f" vs {video_info(item.video_path).num_frames} frames in {item.video_path.name}"
        raise InputError(
            mask_dir / f"{missing:05d}.png",
            f"no mask PNG for frame {missing} (found {len(mask_files)} PNGs{in_video})",
            "the mask folder must have one PNG per video frame",
        )

    expected_size = video_size
    expected_from = "the video's frame size"
    if expected_size is None and item is not None:
        expected_size = frame_size(item.video_path)

    masks = np.zeros((len(colors), len(frame_indices), height, width), dtype=np.float32)
    for position, index in enumerate(frame_indices):
        path = mask_files[index]
        image = _open_mask(path)
        if expected_size is None:
            expected_size, expected_from = (image.height, image.width), f"the size of {path.name}"
        if (image.height, image.width) != tuple(expected_size):
            raise InputError(
                path,
                f"mask is {image.width}x{image.height} (WxH) but {expected_from} is "
                f"{expected_size[1]}x{expected_size[0]}",
                "export masks at the video's own resolution (before any resizing)",
            )
        labels = decode_subject_labels(image, path, colors=colors, tolerance=tolerance)
        labels = np.asarray(resize_and_crop(Image.fromarray(labels), height, width, Image.Resampling.NEAREST))
        for subject in range(len(colors)):
            masks[subject, position] = labels == subject + 1
    return torch.from_numpy(masks)


def check_item(
    item: VideoItem,
    num_frames: int,
    frame_stride: int = 1,
    start_frame: int = 0,
    colors: Sequence[Sequence[int]] = DEFAULT_SUBJECT_COLORS,
    tolerance: int = DEFAULT_COLOR_TOLERANCE,
) -> int:
    """Check one item before training: the clip decodes, is long enough, and has one mask per frame.

    Also decodes the first mask PNG (size and colours). Returns the number of frames in the video.
    """
    info = video_info(item.video_path)
    needed = start_frame + (num_frames - 1) * frame_stride + 1
    if info.num_frames < needed:
        raise InputError(
            item.video_path,
            f"has {info.num_frames} frames, needs start + (num_frames-1)*stride + 1 = "
            f"{start_frame} + ({num_frames}-1)*{frame_stride} + 1 = {needed}",
            "lower num_frames or frame_stride, or use a longer clip",
        )
    if item.mask_dir is not None:
        mask_files = list_mask_files(item.mask_dir)
        if len(mask_files) != info.num_frames:
            raise InputError(
                item.mask_dir,
                f"has {len(mask_files)} mask PNGs but {item.video_path.name} has {info.num_frames} frames",
                "the mask folder must have one PNG per video frame; re-run mask extraction on every frame",
            )
        load_subject_masks(
            item.mask_dir,
            [0],
            info.height,
            info.width,
            colors=colors,
            tolerance=tolerance,
            video_size=(info.height, info.width),
        )
    return info.num_frames


def subjects_present(frame_masks: Any, where: Path, colors: Sequence[Sequence[int]]) -> None:
    """Each subject appears in at least one frame (a clip cached with an empty mask would train the
    subject LoRA on nothing and silently zero the relation mask)."""
    for index, name in enumerate(("subject1", "subject2")):
        if not bool(frame_masks[index].any()):
            raise InputError(
                where,
                f"{name} (colour {tuple(colors[index])}) is absent from every mask frame of this clip",
                "re-run mask extraction for this clip, or remove the clip from the dataset",
            )
