"""Small datasets in the project's format, and their cache, built in-process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from dreamrelation.config import TrainConfig


def write_two_subject_dataset(
    root: Path, n_videos: int = 3, num_frames: int = 13, size: int = 32, caption: str | None = None
) -> Path:
    """A dataset folder in the project's format: two squares approaching, masks red/green."""
    from dreamrelation.data import write_video

    (root / "masks").mkdir(parents=True, exist_ok=True)
    for v in range(n_videos):
        frames = np.full((num_frames, size, size, 3), 20, np.uint8)
        labels = np.zeros((num_frames, size, size), np.uint8)
        for f in range(num_frames):
            x1 = 2 + f // 2 + v
            x2 = size - 2 - f // 2
            frames[f, 10:18, x1 : x1 + 6] = (200, 60, 60)
            labels[f, 10:18, x1 : x1 + 6] = 1
            frames[f, 12:20, x2 - 6 : x2] = (60, 60, 200)
            labels[f, 12:20, x2 - 6 : x2] = 2
        write_video(frames, root / f"clip{v}.mp4", crf=0)
        (root / f"clip{v}.txt").write_text(caption or "a red square is shaking hands with a blue square.")
        mask_dir = root / "masks" / f"clip{v}"
        mask_dir.mkdir(exist_ok=True)
        for f in range(num_frames):
            rgb = np.zeros((size, size, 3), np.uint8)
            rgb[labels[f] == 1] = (255, 0, 0)
            rgb[labels[f] == 2] = (0, 255, 0)
            Image.fromarray(rgb).save(mask_dir / f"{f:05d}.png")
    return root


def write_tiny_cache(
    root: Path,
    backbone: str = "mochi",
    *,
    n_videos: int = 3,
    num_frames: int = 13,
    size: int = 32,
    model: object = None,
) -> Path:
    """A two-subject dataset under ``root`` cached by the registered ``backbone``'s tiny random model
    (``model``: one already built, else the registry's tiny one); returns the cache folder."""
    from dreamrelation.cache import build_cache
    from dreamrelation.config import CacheConfig, load_config

    data = write_two_subject_dataset(
        root / "shaking_hands", n_videos=n_videos, num_frames=num_frames, size=size
    )
    cfg = load_config(
        CacheConfig,
        **{
            "model.backbone": backbone,
            "model.model": "tiny",
            "model.dtype": "float32",
            "data": [{"path": str(data)}],
            "output": str(root / "cache"),
            "video.num_frames": num_frames,
            "video.height": size,
            "video.width": size,
        },
    )
    build_cache(cfg, backbone=model, show_progress=False)
    return root / "cache"


def tiny_train_config(
    cache: Path, output: Path, /, *, backbone: str = "mochi", **overrides: object
) -> TrainConfig:
    """A training config on a backbone's tiny random model (float32, rank-4 LoRAs, no warmup,
    6 steps) reading ``cache`` and writing ``output``; ``overrides`` are dotted keys
    (``**{"lora.rank": 2}``) or top-level fields (``max_steps=2``, ``cache=[...]`` for several)."""
    from dreamrelation.config import TrainConfig, load_config

    values: dict[str, object] = {
        "model.backbone": backbone,
        "model.model": "tiny",
        "model.dtype": "float32",
        "cache": [str(cache)],
        "output": str(output),
        "lora.rank": 4,
        "lora.alpha": 4,
        "warmup_steps": 0,
        "max_steps": 6,
    }
    values.update(overrides)
    return load_config(TrainConfig, **values)


def tiny_train_losses(
    cache: Path,
    output: Path,
    /,
    *,
    backbone: str = "mochi",
    stop_after: int | None = None,
    **overrides: object,
) -> list[float]:
    """The per-step losses of a training run of :func:`tiny_train_config` (``stop_after``: end after
    that many steps, leaving a checkpoint to resume from)."""
    from dreamrelation.training.loop import Trainer

    run = Trainer(tiny_train_config(cache, output, backbone=backbone, **overrides))
    return [record["loss"] for record in run.run(show_progress=False, stop_after=stop_after).history]


def cached_first_frame(cache: Path, num_frames: int, size: int) -> Image.Image:
    """The first frame of a cache's first clip (read at the cache's geometry), as the still image a
    user would pass to ``generate --image``."""
    import json

    from dreamrelation.data import read_video

    manifest = json.loads((Path(cache) / "manifest.json").read_text())
    video = read_video(Path(manifest["items"][0]["video"]), num_frames, size, size, 1, 0)
    return Image.fromarray(video[0].numpy())
