"""The ComfyUI export: original checkpoint key names, fused Q/K/V, and exactly the trained update."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dreamrelation.backbones import load_backbone
from dreamrelation.generation.comfyui import (
    COMFYUI_LORA,
    comfyui_state_dict,
    fuse_lora,
    linear_out_features,
    write_comfyui_lora,
)
from dreamrelation.generation.lora_files import save_lora_files
from dreamrelation.training.adapters import TripletConfig, add_triplet

# The original checkpoints' names for the two-block tiny models, written out by hand from the
# conversion facts (genmo Mochi, Wan-Video Wan2.1, Tencent HunyuanVideo), for relation (Q, K) +
# ffn (attention outputs): every adapted layer, and no other.
EXPECTED_LAYERS = {
    "mochi": [
        "blocks.0.attn.qkv_x",
        "blocks.0.attn.qkv_y",
        "blocks.0.attn.proj_x",
        "blocks.0.attn.proj_y",
        # Mochi's last block does not update the text stream: no proj_y there
        "blocks.1.attn.qkv_x",
        "blocks.1.attn.qkv_y",
        "blocks.1.attn.proj_x",
    ],
    "wan": [f"blocks.{i}.{attn}.{p}" for i in (0, 1) for attn in ("self_attn", "cross_attn") for p in "qko"],
    "hunyuan": [
        *(
            f"double_blocks.{i}.{n}"
            for i in (0, 1)
            for n in ("img_attn_qkv", "txt_attn_qkv", "img_attn_proj", "txt_attn_proj")
        ),
        "single_blocks.0.linear1",
        "single_blocks.1.linear1",
    ],
}
# Wan2.2 keeps Wan2.1's names (A14B's two expert files: tests/core/test_wan22.py)
EXPECTED_LAYERS["wan22_5b"] = EXPECTED_LAYERS["wan"]
# HunyuanVideo-1.5's original names keep Q, K, V apart (diffusers' conversion script for it)
EXPECTED_LAYERS["hunyuan15"] = [
    f"double_blocks.{i}.{stream}_attn_{p}"
    for i in (0, 1)
    for stream in ("img", "txt")
    for p in ("q", "k", "proj")
]
# its image-to-video checkpoint is the same transformer, with the same original names
EXPECTED_LAYERS["hunyuan15_i2v"] = EXPECTED_LAYERS["hunyuan15"]
# LTX-2 (Lightricks' checkpoint; ComfyUI comfy/ldm/lightricks/av_model.py and model.py): the video
# stream's self-attention (attn1) and text cross-attention (attn2) keep diffusers' names, nothing
# fused; no audio_attn1/2, audio_to_video_attn or video_to_audio_attn (they carry no LoRA)
EXPECTED_LAYERS["ltx2"] = [
    f"transformer_blocks.{i}.{attn}.{p}"
    for i in (0, 1)
    for attn in ("attn1", "attn2")
    for p in ("to_q", "to_k", "to_out.0")
]


# Which diffusers modules each original layer stacks (row order) - the inverse of the conversions.
def _parts(backbone: str, layer: str) -> list[str]:
    i = layer.split(".")[1]
    if backbone == "mochi":
        name = layer.rsplit(".", 1)[1]
        block = f"transformer_blocks.{i}.attn1"
        return {
            "qkv_x": [f"{block}.to_q", f"{block}.to_k", f"{block}.to_v"],
            "qkv_y": [f"{block}.add_q_proj", f"{block}.add_k_proj", f"{block}.add_v_proj"],
            "proj_x": [f"{block}.to_out.0"],
            "proj_y": [f"{block}.to_add_out"],
        }[name]
    if backbone in ("wan", "wan22_5b"):
        _, _, attn, p = layer.split(".")
        ours = {"self_attn": "attn1", "cross_attn": "attn2"}[attn]
        return [f"blocks.{i}.{ours}." + {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}[p]]
    if backbone == "ltx2":
        return [layer]  # the original name is the diffusers module's
    name = layer.rsplit(".", 1)[1]
    if backbone in ("hunyuan15", "hunyuan15_i2v"):
        ours = {"img_attn_q": "to_q", "img_attn_k": "to_k", "img_attn_proj": "to_out.0"}
        ours |= {"txt_attn_q": "add_q_proj", "txt_attn_k": "add_k_proj", "txt_attn_proj": "to_add_out"}
        return [f"transformer_blocks.{i}.attn.{ours[name]}"]
    if layer.startswith("single_blocks"):
        block = f"single_transformer_blocks.{i}"
        return [f"{block}.attn.to_q", f"{block}.attn.to_k", f"{block}.attn.to_v", f"{block}.proj_mlp"]
    block = f"transformer_blocks.{i}.attn"
    return {
        "img_attn_qkv": [f"{block}.to_q", f"{block}.to_k", f"{block}.to_v"],
        "txt_attn_qkv": [f"{block}.add_q_proj", f"{block}.add_k_proj", f"{block}.add_v_proj"],
        "img_attn_proj": [f"{block}.to_out.0"],
        "txt_attn_proj": [f"{block}.to_add_out"],
    }[name]


def _comfyui_model_keys(backbone: str, layers: list[str]) -> list[str]:
    """ComfyUI's own state-dict names: the originals, except HunyuanVideo's flux-style attention
    (LTX-2's: its LTXAV model's ``diffusion_model.transformer_blocks.<i>.attn1.to_q.weight`` ...)."""
    keys = []
    for layer in layers:
        if backbone == "hunyuan":
            layer = layer.replace("_attn_qkv", "_attn.qkv").replace("_attn_proj", "_attn.proj")
        keys.append(f"diffusion_model.{layer}.weight")
    return keys


def _comfyui_key_map(backbone: str, model_keys: list[str]) -> dict[str, str]:
    """ComfyUI's LoRA key matching (comfy/lora.py, model_lora_keys_unet), as read: every model maps
    ``diffusion_model.<path>`` to its weight; Mochi also the bare path; HunyuanVideo Tencent's names.
    LTX-2 (comfy.model_base.LTXAV) has no branch of its own there: only the generic mapping, so the
    diffusers form ``transformer.<path>`` would match nothing."""
    key_map = {}
    for k in model_keys:
        key_map[k.removesuffix(".weight")] = k
        if backbone == "mochi":
            key_map[k.removeprefix("diffusion_model.").removesuffix(".weight")] = k
        if backbone == "hunyuan":
            renamed = k.replace("_attn.qkv.", "_attn_qkv.").replace("_attn.proj.", "_attn_proj.")
            renamed = renamed.removeprefix("diffusion_model.").removesuffix(".weight")
            key_map[f"transformer.{renamed}"] = k
            key_map[f"diffusion_model.{renamed}"] = k
    return key_map


def test_fused_delta_is_the_parts_deltas_stacked() -> None:
    gen = torch.Generator().manual_seed(0)
    sizes = [6, 6, 6, 24]  # q, k, v, mlp (HunyuanVideo's linear1)
    parts = [
        (torch.randn(3, 5, generator=gen), torch.randn(6, 3, generator=gen)),
        (torch.randn(2, 5, generator=gen), torch.randn(6, 2, generator=gen)),
        None,  # v: no LoRA
        None,  # mlp: never adapted
    ]
    a, b = fuse_lora(parts, sizes)
    assert a.shape == (5, 5) and b.shape == (42, 5)
    expected = torch.cat(
        [parts[0][1] @ parts[0][0], parts[1][1] @ parts[1][0], torch.zeros(6, 5), torch.zeros(24, 5)]
    )
    torch.testing.assert_close(b @ a, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backbone", sorted(EXPECTED_LAYERS))
def test_comfyui_lora_matches_original_names_and_the_trained_update(backbone: str, tmp_path: Path) -> None:
    bb = load_backbone(backbone, "tiny")
    add_triplet(bb, TripletConfig(rank=4, alpha=8))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in bb.transformer.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    lora_path, _ = save_lora_files(
        bb.transformer, tmp_path, "{}", backbone, ["relation", "subject1", "subject2", "ffn"]
    )
    write_comfyui_lora(lora_path, linear_out_features(bb.transformer))  # as the method's save does
    comfy = load_file(str(tmp_path / COMFYUI_LORA))
    ours = load_file(str(lora_path))

    layers = sorted({k.removesuffix(".lora_A.weight").removesuffix(".lora_B.weight") for k in comfy})
    assert layers == sorted(f"diffusion_model.{n}" for n in EXPECTED_LAYERS[backbone])
    assert not any(k.endswith(".alpha") for k in comfy)  # ComfyUI then applies B @ A unscaled

    key_map = _comfyui_key_map(backbone, _comfyui_model_keys(backbone, EXPECTED_LAYERS[backbone]))
    weights = dict(bb.transformer.named_parameters())
    for layer in EXPECTED_LAYERS[backbone]:
        key = f"diffusion_model.{layer}"
        assert key in key_map, f"ComfyUI would not find {key}"
        parts = _parts(backbone, layer)
        # The original weight is the parts' weights stacked; patching it must equal patching each part.
        original = torch.cat(
            [
                weights[f"{p}.base_layer.weight" if f"{p}.base_layer.weight" in weights else f"{p}.weight"]
                for p in parts
            ]
        )
        a, b = comfy[f"{key}.lora_A.weight"], comfy[f"{key}.lora_B.weight"]
        assert (b.shape[0], a.shape[1]) == tuple(original.shape)
        expected_delta = []
        for p in parts:
            size = weights[
                f"{p}.base_layer.weight" if f"{p}.base_layer.weight" in weights else f"{p}.weight"
            ].shape
            if f"transformer.{p}.lora_A.weight" in ours:
                expected_delta.append(
                    ours[f"transformer.{p}.lora_B.weight"] @ ours[f"transformer.{p}.lora_A.weight"]
                )
            else:
                expected_delta.append(torch.zeros(size))
        torch.testing.assert_close(b @ a, torch.cat(expected_delta), rtol=0, atol=1e-5)


def test_modules_outside_the_attention_are_refused(tmp_path: Path) -> None:
    from dreamrelation.errors import InputError

    sizes = linear_out_features(load_backbone("mochi", "tiny").transformer)
    state = {
        "transformer.proj_out.lora_A.weight": torch.zeros(2, 16),
        "transformer.proj_out.lora_B.weight": torch.zeros(48, 2),
    }
    with pytest.raises(InputError, match="no counterpart in the original mochi"):
        comfyui_state_dict(state, "mochi", sizes)


def test_export_command_rewrites_the_comfyui_file_and_refuses_a_non_lora(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dreamrelation.cli import app

    bb = load_backbone("wan", "tiny")
    add_triplet(bb, TripletConfig(rank=2, alpha=2))
    config = '{"model": {"backbone": "wan", "model": "tiny"}}'
    lora_path, triplet_path = save_lora_files(bb.transformer, tmp_path, config, "wan", ["relation", "ffn"])
    write_comfyui_lora(lora_path, linear_out_features(bb.transformer))
    written = load_file(str(tmp_path / COMFYUI_LORA))
    out = tmp_path / "elsewhere.safetensors"
    result = CliRunner().invoke(app, ["export", "comfyui", str(lora_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    again = load_file(str(out))
    assert again.keys() == written.keys()
    assert all(torch.equal(again[k], written[k]) for k in written)

    result = CliRunner().invoke(app, ["export", "comfyui", str(triplet_path)])
    assert result.exit_code == 2
    assert "is the adapter triplet" in result.output
