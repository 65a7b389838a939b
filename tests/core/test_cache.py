"""Caching: what is stored, resumability, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dreamrelation.cache import CachedDataset, build_cache
from dreamrelation.config import CacheConfig, load_config
from dreamrelation.errors import InputError


def _cache_config(data: Path, output: Path, **overrides: object) -> CacheConfig:
    values = {
        "model.backbone": "mochi",
        "model.model": "tiny",
        "model.dtype": "float32",
        "data": [{"path": str(data)}],
        "output": str(output),
        "video.num_frames": 13,
        "video.height": 32,
        "video.width": 32,
    }
    values.update(overrides)
    return load_config(CacheConfig, **values)


def test_cache_stores_latents_text_and_latent_masks(mochi_cache: Path) -> None:
    dataset = CachedDataset([mochi_cache])
    assert len(dataset) == 3 and dataset.relations == ["shaking_hands"]
    item = dataset.items[0]
    assert tuple(item.latents.shape) == (12, 3, 4, 4)  # 13 frames -> 1 + 2 latent frames, 32 px / 8
    assert tuple(item.masks.shape) == (3, 3, 4, 4)  # subject1, subject2, relation
    assert set(item.text) == {"prompt_embeds", "prompt_attention_mask"}
    # the relation rectangle covers both subjects
    assert torch.all(item.masks[2] >= item.masks[0]) and torch.all(item.masks[2] >= item.masks[1])
    assert item.masks[2].sum() > item.masks[0].sum()


def test_cache_resumes_and_reencodes_what_changed(make_dataset, tmp_path: Path) -> None:
    data = make_dataset()
    cfg = _cache_config(data, tmp_path / "cache")
    first = build_cache(cfg, show_progress=False)
    assert len(first.encoded) == 3
    again = build_cache(cfg, show_progress=False)
    assert again.encoded == [] and len(again.skipped) == 3
    (data / "clip1.txt").write_text("a red square is hugging a blue square.")
    third = build_cache(cfg, show_progress=False)
    assert third.encoded == ["shaking_hands__clip1"]
    stored = load_file(str(tmp_path / "cache" / "items" / "shaking_hands__clip1.safetensors"))
    assert "latents" in stored
    assert not list((tmp_path / "cache").rglob("*.tmp-*"))  # no half-written files left


def test_missing_caption_names_the_file(make_dataset, tmp_path: Path) -> None:
    data = make_dataset()
    (data / "clip2.txt").unlink()
    with pytest.raises(InputError, match=r"clip2\.txt"):
        build_cache(_cache_config(data, tmp_path / "cache"), show_progress=False)


def test_mask_with_wrong_frame_count_is_an_error_not_zeros(make_dataset, tmp_path: Path) -> None:
    data = make_dataset()
    (data / "masks" / "clip0" / "00012.png").unlink()
    with pytest.raises(InputError, match="clip0"):
        build_cache(_cache_config(data, tmp_path / "cache"), show_progress=False)


def test_corrupt_video_names_the_file(make_dataset, tmp_path: Path) -> None:
    data = make_dataset()
    (data / "clip1.mp4").write_bytes(b"not a video at all")
    with pytest.raises(InputError, match=r"clip1\.mp4"):
        build_cache(_cache_config(data, tmp_path / "cache"), show_progress=False)


def test_frame_count_that_the_vae_cannot_group_is_refused(make_dataset, tmp_path: Path) -> None:
    data = make_dataset()
    with pytest.raises(ValueError, match="1 \\+ 6k"):
        build_cache(_cache_config(data, tmp_path / "cache", **{"video.num_frames": 12}), show_progress=False)


def test_sum_relation_mask_option(make_dataset, tmp_path: Path, mochi_cache: Path) -> None:
    data = make_dataset()
    build_cache(_cache_config(data, tmp_path / "cache", relation_mask="sum"), show_progress=False)
    s1, s2, relation = CachedDataset([tmp_path / "cache"]).items[0].masks
    # max-pooled sum of the two subject masks: between the larger of the two and their sum
    assert torch.all(relation >= torch.maximum(s1, s2) - 1e-6)
    assert torch.all(relation <= s1 + s2 + 1e-6)
    bbox = CachedDataset([mochi_cache]).items[0].masks[2]
    assert relation.sum() < bbox.sum()  # the rectangle also covers the gap between the subjects


def test_training_without_a_cache_names_the_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="manifest.json"):
        CachedDataset([tmp_path / "nothing"])
