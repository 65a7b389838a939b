"""The saved inference LoRA, loaded by diffusers, generates exactly what the in-memory adapters do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from dreamrelation.backbones import load_backbone
from dreamrelation.config import GenerateConfig, load_config
from dreamrelation.errors import InputError
from dreamrelation.generation.lora_files import read_lora_metadata, save_lora_files
from dreamrelation.generation.render import generate, load_inference_lora, render
from dreamrelation.training.adapters import TripletConfig, activate, add_triplet, load_triplet_state_dict

GEOMETRY = {
    "mochi": {"num_frames": 7, "height": 16, "width": 16},
    "wan": {"num_frames": 5, "height": 16, "width": 16},
    "hunyuan": {"num_frames": 5, "height": 16, "width": 16},
    "wan22_5b": {"num_frames": 5, "height": 32, "width": 32},  # 16x VAE
    "wan22_a14b": {"num_frames": 5, "height": 16, "width": 16},
    "hunyuan15": {"num_frames": 5, "height": 32, "width": 32},  # 16x VAE
    "ltx2": {"num_frames": 9, "height": 64, "width": 64},  # 8k+1 frames, 32x VAE
}
PROMPT = "a bear is shaking hands with a raccoon."


def _trained_triplet(backbone: str, output: Path) -> tuple[Path, Path]:
    """A triplet with random (non-zero) weights, saved as training does."""
    bb = load_backbone(backbone, "tiny")
    add_triplet(bb, TripletConfig(rank=4, alpha=8))  # alpha != rank: the scaling must survive export
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in bb.transformer.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    present = ["relation", "subject1", "subject2", "ffn"]
    return save_lora_files(bb.transformer, output, '{"test": true}', bb.name, present)


@pytest.mark.parametrize("backbone", sorted(GEOMETRY))
def test_loaded_lora_equals_in_memory_adapters_and_differs_from_base(backbone: str, tmp_path: Path) -> None:
    lora_path, triplet_path = _trained_triplet(backbone, tmp_path)
    kwargs = dict(GEOMETRY[backbone], num_inference_steps=2, guidance_scale=6.0, seed=3, show_progress=False)

    in_memory = load_backbone(backbone, "tiny")
    add_triplet(in_memory, TripletConfig(rank=4, alpha=8))
    from safetensors.torch import load_file

    load_triplet_state_dict(in_memory.transformer, load_file(str(triplet_path)))
    activate(in_memory.transformer, ["relation", "ffn"], trainable=False)
    expected = render(in_memory, PROMPT, **kwargs)

    loaded = load_backbone(backbone, "tiny")
    load_inference_lora(loaded, lora_path)
    got = render(loaded, PROMPT, **kwargs)

    base = render(load_backbone(backbone, "tiny"), PROMPT, **kwargs)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got - base).max() > 1e-3


def test_inference_lora_has_only_relation_and_ffn_modules(tmp_path: Path) -> None:
    lora_path, triplet_path = _trained_triplet("mochi", tmp_path)
    with safe_open(str(lora_path), "pt") as f:
        keys = list(f.keys())
    assert all(k.startswith("transformer.") for k in keys)
    assert not any("to_v" in k or "add_v_proj" in k for k in keys)  # subject LoRAs (V) excluded
    assert any("to_q" in k for k in keys) and any("to_out.0" in k for k in keys)
    meta = read_lora_metadata(lora_path)
    assert meta["dreamrelation.adapters"] == "relation,ffn"
    assert meta["dreamrelation.config"] == {"test": True}
    with safe_open(str(triplet_path), "pt") as f:
        assert any(".subject2." in k for k in f.keys())


def test_fused_lora_matches_unfused(tmp_path: Path) -> None:
    lora_path, _ = _trained_triplet("mochi", tmp_path)
    kwargs = dict(GEOMETRY["mochi"], num_inference_steps=2, guidance_scale=6.0, seed=1, show_progress=False)
    unfused = load_backbone("mochi", "tiny")
    load_inference_lora(unfused, lora_path)
    fused = load_backbone("mochi", "tiny")
    load_inference_lora(fused, lora_path, fuse=True)
    np.testing.assert_allclose(render(fused, PROMPT, **kwargs), render(unfused, PROMPT, **kwargs), atol=1e-4)


def test_generate_writes_mp4_and_gif_reproducibly(tmp_path: Path) -> None:
    lora_path, _ = _trained_triplet("mochi", tmp_path)
    cfg = load_config(
        GenerateConfig,
        **{
            "model.backbone": "mochi",
            "model.model": "tiny",
            "model.dtype": "float32",
            "lora": str(lora_path),
            "prompts": [PROMPT],
            "output": str(tmp_path / "out"),
            "num_inference_steps": 2,
            **GEOMETRY["mochi"],
        },
    )
    first = generate(cfg, show_progress=False)
    assert first[0].suffix == ".mp4" and first[0].with_suffix(".gif").is_file()
    a = first[0].read_bytes()
    generate(cfg, show_progress=False)
    assert first[0].read_bytes() == a  # same seed, same video


def test_lora_from_another_backbone_is_refused(tmp_path: Path) -> None:
    lora_path, _ = _trained_triplet("wan", tmp_path)
    with pytest.raises(InputError, match="trained on wan"):
        load_inference_lora(load_backbone("mochi", "tiny"), lora_path)


def test_backbone_loads_from_a_local_diffusers_folder(tmp_path: Path) -> None:
    """The real from_pretrained path: save the tiny pipeline, load it back by folder."""
    tiny = load_backbone("mochi", "tiny")
    tiny.pipeline.save_pretrained(tmp_path / "mochi-tiny")
    loaded = load_backbone("mochi", str(tmp_path / "mochi-tiny"), max_sequence_length=16)
    kwargs = dict(GEOMETRY["mochi"], num_inference_steps=2, guidance_scale=6.0, seed=0, show_progress=False)
    np.testing.assert_allclose(render(loaded, PROMPT, **kwargs), render(tiny, PROMPT, **kwargs), atol=1e-5)
