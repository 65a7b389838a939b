"""Trackers through accelerate: losses and the validation videos reach TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamrelation.config import TrainConfig
from dreamrelation.errors import ConfigError
from dreamrelation.testing import tiny_train_config
from dreamrelation.training.loop import Trainer
from dreamrelation.training.trackers import check_trackers, tracker_config


def _config(cache: Path, output: Path, **extra: object) -> TrainConfig:
    return tiny_train_config(cache, output, **{"lora.rank": 2, "lora.alpha": 2, "max_steps": 2, **extra})


def test_tensorboard_gets_losses_and_validation_frames(mochi_cache: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _config(
        mochi_cache,
        tmp_path / "run",
        validation_every=2,
        validation_steps=2,
        validation_prompts=["a cat is shaking hands with a dog."],
        tensorboard=True,
    )
    Trainer(cfg).run(show_progress=False)
    events = sorted((tmp_path / "run").rglob("events.out.tfevents.*"))
    tags = {"scalars": set(), "images": {}}
    for event_file in events:
        accumulator = EventAccumulator(str(event_file), size_guidance={"images": 0})
        accumulator.Reload()
        tags["scalars"] |= set(accumulator.Tags()["scalars"])
        for tag in accumulator.Tags()["images"]:
            tags["images"][tag] = accumulator.Images(tag)
    assert {"loss", "reconstruction", "contrastive"} <= tags["scalars"]
    image_tags = [t for t in tags["images"] if t.startswith("validation/00-a-cat-is-shaking-hands")]
    assert image_tags, tags["images"].keys()
    images = tags["images"][image_tags[0]]
    assert [i.step for i in images] == [2]


def test_wandb_without_the_package_is_refused_before_work(mochi_cache: Path, tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(ConfigError, match="pip install wandb"):
        check_trackers(_config(mochi_cache, tmp_path / "run", wandb=True))


def test_tracker_config_is_flat_scalars(mochi_cache: Path, tmp_path: Path) -> None:
    flat = tracker_config(_config(mochi_cache, tmp_path / "run"))
    assert flat["lora.rank"] == 2 and flat["max_steps"] == 2
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())
