"""Read clips for training and write results for people to look at.

Every frame goes through one geometry: scale so the frame covers (height, width), then take the
centre. ``resize_and_crop`` is shared with the mask loader so a subject mask stays on its subject.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from dreamrelation.errors import InputError
from dreamrelation.files import atomic_target

# Decoding failures PyAV reports: its own FFmpeg errors, and OSError for unreadable files.
_DECODE_ERRORS = (av.error.FFmpegError, OSError)


@dataclass(frozen=True)
class CropGeometry:
    """Where a frame of one size lands in a (height, width) target: resize, then crop."""

    resized_height: int
    resized_width: int
    top: int
    left: int
    height: int
    width: int


def crop_geometry(src_height: int, src_width: int, height: int, width: int) -> CropGeometry:
    """Scale so the frame covers (height, width) (the short side fits), then centre the crop."""
    if min(src_height, src_width, height, width) <= 0:
        raise ValueError(
            f"sizes must be positive, got source {src_height}x{src_width}, target {height}x{width}"
        )
    scale = max(height / src_height, width / src_width)
    # Rounding can fall one pixel short of the target; never resize smaller than the crop.
    resized_height = max(height, round(src_height * scale))
    resized_width = max(width, round(src_width * scale))
    top = (resized_height - height) // 2
    left = (resized_width - width) // 2
    return CropGeometry(resized_height, resized_width, top, left, height, width)


def resize_and_crop(
    image: Image.Image, height: int, width: int, resample: Image.Resampling = Image.Resampling.BICUBIC
) -> Image.Image:
    """Apply :func:`crop_geometry` to a PIL image (use NEAREST for label maps such as masks)."""
    geometry = crop_geometry(image.height, image.width, height, width)
    if (geometry.resized_height, geometry.resized_width) != (image.height, image.width):
        image = image.resize((geometry.resized_width, geometry.resized_height), resample=resample)
    return image.crop((geometry.left, geometry.top, geometry.left + width, geometry.top + height))


@dataclass(frozen=True)
class VideoInfo:
    """What a clip holds, counted by decoding it (container headers are often wrong)."""

    num_frames: int
    height: int
    width: int
    fps: float


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "video file does not exist", "check the path, or add the video to the dataset")
    if not path.is_file():
        raise InputError(path, "is not a file", "point to a video file such as clip.mp4")


def _corrupt(path: Path, error: Exception) -> InputError:
    return InputError(
        path,
        f"cannot be decoded as a video ({type(error).__name__}: {error})",
        "re-encode or re-download the clip (e.g. `ffmpeg -i in.avi -c:v libx264 out.mp4`), or remove it",
    )


@contextmanager
def _open_frames(path: Path) -> Iterator[tuple[av.VideoStream, Iterator[av.VideoFrame]]]:
    """Yield the first video stream and an iterator over its decoded frames; errors name the file."""
    _check_exists(path)
    try:
        container = av.open(str(path), mode="r")
    except _DECODE_ERRORS as error:
        raise _corrupt(path, error) from error
    try:
        if not container.streams.video:
            raise InputError(path, "has no video stream", "use a file that contains video, not only audio")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"

        def frames() -> Iterator[av.VideoFrame]:
            try:
                yield from container.decode(stream)
            except _DECODE_ERRORS as error:
                raise _corrupt(path, error) from error

        yield stream, frames()
    finally:
        container.close()


def video_info(path: str | Path) -> VideoInfo:
    """Decode the whole clip once and report its frame count, frame size and frame rate."""
    path = Path(path)
    num_frames, height, width = 0, 0, 0
    with _open_frames(path) as (stream, frames):
        rate = stream.average_rate
        for frame in frames:
            if num_frames == 0:
                height, width = frame.height, frame.width
            num_frames += 1
    if num_frames == 0:
        raise InputError(
            path, "contains no decodable frames", "re-encode the clip or remove it from the dataset"
        )
    return VideoInfo(num_frames=num_frames, height=height, width=width, fps=float(rate) if rate else 0.0)


def frame_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of the decoded frames, from the first frame only."""
    path = Path(path)
    with _open_frames(path) as (_, frames):
        for frame in frames:
            return frame.height, frame.width
    raise InputError(path, "contains no decodable frames", "re-encode the clip or remove it from the dataset")


def count_frames(path: str | Path) -> int:
    """Number of frames the decoder yields for this clip (the unit mask PNGs are counted in)."""
    return video_info(path).num_frames


def _decode_resized(
    path: Path, wanted: set[int], height: int, width: int
) -> tuple[dict[int, np.ndarray], int]:
    """One pass over the clip up to the last wanted frame: the wanted frames, resized to cover
    (height, width) and centre-cropped, as uint8 (H, W, 3) by index, and how many frames were decoded."""
    last_needed = max(wanted)
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    with _open_frames(path) as (_, frames):
        for index, frame in enumerate(frames):
            decoded = index + 1
            if index in wanted:
                image = resize_and_crop(frame.to_image(), height, width, Image.Resampling.BICUBIC)
                kept[index] = np.asarray(image.convert("RGB"), dtype=np.uint8)
            if index >= last_needed:
                break
    return kept, decoded


def read_video(
    path: str | Path,
    num_frames: int,
    height: int,
    width: int,
    frame_stride: int = 1,
    start_frame: int = 0,
) -> torch.Tensor:
    """Decode frames start, start+stride, ... (num_frames of them) as uint8 (F, H, W, 3).

    Each frame is resized so it covers (height, width) and centre-cropped (see :func:`crop_geometry`).
    """
    if num_frames < 1 or frame_stride < 1 or start_frame < 0:
        raise ValueError(
            f"need num_frames >= 1, frame_stride >= 1, start_frame >= 0; "
            f"got {num_frames}, {frame_stride}, {start_frame}"
        )
    path = Path(path)
    indices = [start_frame + i * frame_stride for i in range(num_frames)]
    last_needed = indices[-1]
    kept, decoded = _decode_resized(path, set(indices), height, width)
    if last_needed not in kept:
        raise InputError(
            path,
            f"has {decoded} frames, needs start + (num_frames-1)*stride + 1 = "
            f"{start_frame} + ({num_frames}-1)*{frame_stride} + 1 = {last_needed + 1}",
            "lower num_frames or frame_stride, or use a longer clip",
        )
    return torch.from_numpy(np.stack([kept[i] for i in indices]))


def read_frames(path: str | Path, indices: Sequence[int], height: int, width: int) -> torch.Tensor:
    """Decode the frames at ``indices`` (any order, repeats allowed) as uint8 (len(indices), H, W, 3).

    One pass over the clip, keeping only the wanted frames, resized and centre-cropped like
    :func:`read_video`; an index past the end is an error naming the clip.
    """
    if not indices:
        raise ValueError("indices must name at least one frame")
    if min(indices) < 0:
        raise ValueError(f"frame indices must be >= 0, got {min(indices)}")
    path = Path(path)
    last_needed = max(indices)
    kept, decoded = _decode_resized(path, set(indices), height, width)
    if last_needed not in kept:
        raise InputError(
            path, f"has {decoded} frames, needs frame {last_needed}", "use a longer clip or fewer frames"
        )
    return torch.from_numpy(np.stack([kept[i] for i in indices]))


def _frames_to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """(F, H, W, 3) uint8, or float in [0, 1] (values outside are clipped), → uint8 numpy."""
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise ValueError(f"frames must have shape (F, H, W, 3) with F >= 1, got {tuple(array.shape)}")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        # rounded half to even, as generate.to_uint8: a video written from float frames holds the
        # pixels that in-memory evaluations (the toy world's) score
        return np.round(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"frames must be uint8 or float in [0, 1], got dtype {array.dtype}")


def write_video(
    frames: torch.Tensor | np.ndarray, path: str | Path, fps: int = 8, crf: int = 18, lossless: bool = False
) -> Path:
    """Write an H.264 MP4 (libx264, yuv420p) atomically; odd sizes are padded to even by edge copies.

    ``lossless``: RGB H.264 at qp 0 (libx264rgb), decoded back bit-exact (``crf`` is ignored); where
    that encoder is missing, yuv444p at qp 0 (only the RGB<->YUV rounding is lost).
    """
    array = _frames_to_uint8(frames)
    _, height, width, _ = array.shape
    # yuv420p needs even sizes; repeating the last row/column keeps the padding invisible.
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    rgb = lossless and "libx264rgb" in av.codecs_available
    path = Path(path)
    with atomic_target(path, ".mp4") as temp_path:
        with av.open(str(temp_path), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264rgb" if rgb else "libx264", rate=fps)
            stream.width = width + pad_w
            stream.height = height + pad_h
            stream.pix_fmt = "rgb24" if rgb else ("yuv444p" if lossless else "yuv420p")
            stream.options = {"qp": "0"} if lossless else {"crf": str(crf)}
            for image in array:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    return path


def write_gif(frames: torch.Tensor | np.ndarray, path: str | Path, fps: int = 8, scale: int = 1) -> Path:
    """Write a looping GIF preview atomically; ``scale`` enlarges tiny videos with nearest-neighbour."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    array = _frames_to_uint8(frames)
    images = [Image.fromarray(image) for image in array]
    if scale > 1:
        images = [
            image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
            for image in images
        ]
    path = Path(path)
    with atomic_target(path, ".gif") as temp_path:
        images[0].save(
            temp_path,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=max(1, round(1000 / fps)),
            loop=0,
        )
    return path
