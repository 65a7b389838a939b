"""Lossless MP4 for toy-world clips.

A 32x32 sprite survives lossy yuv420p badly (chroma is stored at 16x16), so toy clips are written
with ``libx264rgb`` at ``qp=0``: RGB H.264 in lossless mode, decoded back bit-exact. Where that
encoder is missing, ``libx264`` in ``yuv444p`` at ``qp=0`` is used (only the RGB<->YUV rounding is
lost, a few levels per channel). Kept here, separate from ``dreamrelation.data.video``, so the toy
world has no dependency on the data layer.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 8) -> Path:
    """Write ``(F, H, W, 3)`` uint8 frames (even H and W) as a lossless H.264 MP4."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (F, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {height}x{width}")
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb_codec = "libx264rgb" in av.codecs_available
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264rgb" if rgb_codec else "libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "rgb24" if rgb_codec else "yuv444p"
        stream.options = {"qp": "0", "preset": "veryslow" if rgb_codec else "medium"}
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_mp4(path: str | Path) -> np.ndarray:
    """Decode every frame of a video into ``(F, H, W, 3)`` uint8 RGB."""
    with av.open(str(path)) as container:
        images = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not images:
        raise ValueError(f"{path}: no decodable frames")
    return np.stack(images)
