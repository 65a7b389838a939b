"""Shared fixtures: offline, deterministic, small."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

from dreamrelation.testing import write_two_subject_dataset  # noqa: E402 - after the offline switch


@pytest.fixture
def make_dataset(tmp_path: Path):
    def make(name: str = "shaking_hands", **kwargs: object) -> Path:
        return write_two_subject_dataset(tmp_path / name, **kwargs)

    return make


def write_tiny_mochi_cache(
    root: Path, *, n_videos: int = 3, num_frames: int = 13, size: int = 32, backbone: object = None
) -> Path:
    """A two-subject dataset under ``root`` cached by the tiny random Mochi (``backbone``: one already
    built, else the registry's tiny one); returns the cache folder. Also used by benchmarks/."""
    from dreamrelation.cache import build_cache
    from dreamrelation.config import CacheConfig, load_config

    data = write_two_subject_dataset(
        root / "shaking_hands", n_videos=n_videos, num_frames=num_frames, size=size
    )
    cfg = load_config(
        CacheConfig,
        **{
            "model.backbone": "mochi",
            "model.model": "tiny",
            "model.dtype": "float32",
            "data": [{"path": str(data)}],
            "output": str(root / "cache"),
            "video.num_frames": num_frames,
            "video.height": size,
            "video.width": size,
        },
    )
    build_cache(cfg, backbone=backbone, show_progress=False)
    return root / "cache"


@pytest.fixture(scope="session")
def mochi_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache of three 13-frame 32x32 clips encoded by the tiny random Mochi."""
    return write_tiny_mochi_cache(tmp_path_factory.mktemp("mochi"))
