"""Experiment trackers through accelerate: TensorBoard and Weights & Biases, validation videos included.

``tensorboard: true`` writes event files under the run folder; ``wandb: true`` logs to Weights &
Biases (``pip install wandb``; the API key comes from the environment, ``WANDB_API_KEY`` or
``wandb login``, and is never logged). Losses go to every tracker; each validation video goes to
TensorBoard as a strip of frames (TensorBoard's own video panel needs moviepy) and to W&B as the MP4.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from dreamrelation.errors import ConfigError

#: frames of a validation video shown in TensorBoard
TENSORBOARD_FRAMES = 8


def trackers(config: Any) -> list[str]:
    """accelerate tracker names asked for by a TrainConfig."""
    names = []
    if getattr(config, "tensorboard", False):
        names.append("tensorboard")
    if getattr(config, "wandb", False):
        names.append("wandb")
    return names


def tracker_config(config: Any) -> dict[str, Any]:
    """The run's settings flattened to scalars (TensorBoard's hparams take no lists or dicts)."""
    import json

    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{prefix}{key}.")
        elif isinstance(value, bool | int | float | str):
            flat[prefix[:-1]] = value
        else:
            flat[prefix[:-1]] = json.dumps(value)

    walk(json.loads(config.model_dump_json()), "")
    return flat


def check_trackers(config: Any) -> None:
    """Each requested tracker's package is installed (checked before any model loads)."""
    packages = {"tensorboard": "tensorboard", "wandb": "wandb"}
    for name in trackers(config):
        if importlib.util.find_spec(packages[name]) is None:
            raise ConfigError(
                f"{name}: true needs the {packages[name]} package; pip install {packages[name]}"
            )


def _frames(gif: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(gif) as image:
        frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
    index = np.linspace(0, len(frames) - 1, min(TENSORBOARD_FRAMES, len(frames))).round().astype(int)
    return np.stack([frames[i] for i in index])


def log_validation_videos(accelerator: Any, videos: list[Path], step: int, fps: int = 8) -> None:
    """Send the validation MP4s (and their GIF previews) written at ``step`` to every tracker."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            writer = tracker.tracker
            for video in videos:
                frames = _frames(video.with_suffix(".gif"))
                writer.add_images(f"validation/{video.stem}", frames, step, dataformats="NHWC")
            writer.flush()
        elif tracker.name == "wandb":
            import wandb

            tracker.tracker.log(
                {f"validation/{v.stem}": wandb.Video(str(v), fps=fps, format="mp4") for v in videos},
                step=step,
            )
