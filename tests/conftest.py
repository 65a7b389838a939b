"""Shared fixtures: offline, deterministic, small."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

from dreamrelation.testing import write_tiny_cache, write_two_subject_dataset  # noqa: E402


@pytest.fixture
def make_dataset(tmp_path: Path):
    def make(name: str = "shaking_hands", **kwargs: object) -> Path:
        return write_two_subject_dataset(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def mochi_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache of three 13-frame 32x32 clips encoded by the tiny random Mochi."""
    return write_tiny_cache(tmp_path_factory.mktemp("mochi"))
