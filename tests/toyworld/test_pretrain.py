"""Toy pretraining on any device: rendering workers, the bf16 policy, the time budget, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dreamrelation.devices import native_bf16, use_bf16_autocast
from dreamrelation.toyworld.backbone import ToyBackbone
from dreamrelation.toyworld.pretrain import (
    VALIDATION_SIGMAS,
    PretrainConfig,
    batch_loader,
    denoising_errors,
    pretrain,
    training_clips,
)

pytestmark = pytest.mark.filterwarnings("ignore:In CPU autocast")


def test_rendering_workers_give_the_same_batches_as_the_loop() -> None:
    config = PretrainConfig(output=Path("unused"), batch_size=2, steps=3, seed=4, workers=2)
    for step, (videos, captions) in enumerate(batch_loader(config)):
        expected, expected_captions = training_clips(step, config)
        assert np.array_equal(videos.numpy(), expected) and captions == expected_captions


def test_bf16_autocast_only_where_asked_or_native() -> None:
    cpu = torch.device("cpu")
    assert use_bf16_autocast("bf16", cpu) and not use_bf16_autocast("off", cpu)
    assert use_bf16_autocast("auto", cpu) == native_bf16(cpu)
    with pytest.raises(ValueError, match="autocast"):
        PretrainConfig(output=Path("unused"), autocast="fp8")


def test_unknown_size_or_relation_motion_is_refused_before_any_work() -> None:
    with pytest.raises(ValueError, match="patch1_4x192"):
        PretrainConfig(output=Path("unused"), size="huge")
    with pytest.raises(ValueError, match="generic motions only"):
        PretrainConfig(output=Path("unused"), motions=("hugging",))


def test_time_budget_sets_the_schedule_length(tmp_path: Path) -> None:
    record = pretrain(
        tmp_path / "budget",
        steps=100_000,
        size="tiny",
        batch_size=2,
        time_budget_s=4.0,
        warmup_steps=2,
        show_progress=False,
        threads=1,
    )
    # stopped by the budget, long after the throughput probe (steps 10..60)
    assert 60 < record["steps"] < 100_000
    assert record["wall_time_s"] < 12
    assert record["clips_seen"] == 2 * record["steps"]
    assert record["device"] == "cpu" and record["machine"]


def test_denoising_errors_grow_with_the_noise_level() -> None:
    errors = denoising_errors(ToyBackbone.tiny(), n_clips=4)
    assert list(errors) == [f"{s:g}" for s in VALIDATION_SIGMAS]
    values = list(errors.values())
    assert all(np.isfinite(values)) and values == sorted(values)
