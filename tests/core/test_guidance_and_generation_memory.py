"""HunyuanVideo's guidance (no double guidance) and generation's memory options."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from diffusers import HunyuanVideoPipeline

from dreamrelation.backbones import load_backbone
from dreamrelation.config import GenerateConfig, load_config
from dreamrelation.errors import ConfigError
from dreamrelation.generation.render import apply_memory_options, generate


def test_hunyuan_generation_uses_embedded_guidance_only_like_its_pipeline_defaults() -> None:
    backbone = load_backbone("hunyuan", "tiny", components="transformer")
    kwargs = backbone.pipeline_kwargs(6.0)
    defaults = inspect.signature(HunyuanVideoPipeline.__call__).parameters
    # the pipeline's own defaults: true CFG 1.0 (off), embedded guidance 6.0
    assert kwargs["true_cfg_scale"] == defaults["true_cfg_scale"].default == 1.0
    assert kwargs["guidance_scale"] == defaults["guidance_scale"].default == 6.0
    assert "negative_prompt" not in kwargs


def test_hunyuan_training_feeds_embedded_guidance_one() -> None:
    backbone = load_backbone("hunyuan", "tiny", components="transformer")
    latents = torch.zeros(2, 4, 1, 2, 2)
    text = {
        "prompt_embeds": torch.zeros(2, 3, 16),
        "prompt_attention_mask": torch.ones(2, 3),
        "pooled_prompt_embeds": torch.zeros(2, 8),
    }
    guidance = backbone.transformer_kwargs(text, latents)["guidance"]
    assert guidance.tolist() == [1000.0, 1000.0]  # 1.0, in the transformer's x1000 units


def _generate_config(tmp_path: Path, **overrides: object) -> GenerateConfig:
    values = {
        "model.backbone": "mochi",
        "model.model": "tiny",
        "model.dtype": "float32",
        "prompts": ["a cat is shaking hands with a dog."],
        "output": str(tmp_path / "out"),
        "num_inference_steps": 2,
        "num_frames": 7,
        "height": 16,
        "width": 16,
        **overrides,
    }
    return load_config(GenerateConfig, **values)


def test_vae_tiling_and_slicing_switch_the_vae(tmp_path: Path) -> None:
    backbone = load_backbone("mochi", "tiny")
    apply_memory_options(
        backbone, _generate_config(tmp_path, vae_tiling=True, vae_slicing=True), torch.device("cpu")
    )
    assert backbone.vae.use_tiling and backbone.vae.use_slicing
    plain = load_backbone("mochi", "tiny")
    apply_memory_options(plain, _generate_config(tmp_path), torch.device("cpu"))
    assert not plain.vae.use_tiling and not plain.vae.use_slicing


def test_cpu_offload_without_a_gpu_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cpu_offload: false"):
        generate(_generate_config(tmp_path, cpu_offload=True, device="cpu"), show_progress=False)
