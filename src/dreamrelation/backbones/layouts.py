"""Where each backbone's attention projections are, and its original checkpoint's layers: plain data.

Read by the backbones (``Backbone.streams``, the LoRA targets) and by the Q/K/V subspace analysis,
which reads checkpoints without building a model. Like peft's ``utils/constants.py``: per-model
knowledge as data, next to the code that uses it. tests/core/test_layouts.py checks the table
against the module names of each registered backbone, built from a tiny random config. The
ComfyUI export (:mod:`dreamrelation.generation.comfyui`) reads :data:`ORIGINAL_LAYOUT`.
"""

from __future__ import annotations

from typing import NamedTuple

#: the projection roles of an attention layer
ROLES: tuple[str, ...] = ("q", "k", "v", "out")

#: role -> projection module inside a diffusers ``Attention``: the vision (or only) tokens' ...
VISION_PROJECTIONS: dict[str, str] = {"q": "to_q", "k": "to_k", "v": "to_v", "out": "to_out.0"}
#: ... and the text tokens' own projections in MM-DiT blocks
TEXT_PROJECTIONS: dict[str, str] = {
    "q": "add_q_proj",
    "k": "add_k_proj",
    "v": "add_v_proj",
    "out": "to_add_out",
}

#: family -> token stream -> (block regex, attention module in the block, role -> projection).
#: A block regex names one layer (``transformer_blocks.3``); streams are listed in layer order.
ATTENTION_LAYOUTS: dict[str, dict[str, tuple[str, str, dict[str, str]]]] = {
    # MM-DiT: one attention, separate text and vision projections. (time_embed.pooler, which pools
    # the text embedding into the timestep conditioning, has a to_q too but is no block attention.)
    "mochi": {
        "vision": (r"transformer_blocks\.\d+", "attn1", VISION_PROJECTIONS),
        "text": (r"transformer_blocks\.\d+", "attn1", TEXT_PROJECTIONS),
    },
    # Wan is not MM-DiT: text tokens enter through cross-attention (attn2), whose K and V project
    # the text tokens and whose Q projects the vision tokens that attend to them. Wan2.1 I2V's attn2
    # also projects CLIP image tokens (add_k_proj, add_v_proj): left out, as they carry the given
    # frame's appearance, not the relation (backbones/wan_i2v.py).
    "wan": {
        "vision": (r"blocks\.\d+", "attn1", VISION_PROJECTIONS),
        "text": (r"blocks\.\d+", "attn2", VISION_PROJECTIONS),
    },
    # The token refiner (context_embedder.token_refiner) is a text pre-processor, not MM-DiT
    # attention; the anchored block regexes leave it out. Single-stream blocks project the
    # concatenated text+vision tokens with one set of weights; their output projection is fused
    # with the MLP (proj_out), so the joint stream has no "out" role.
    "hunyuan": {
        "vision": (r"transformer_blocks\.\d+", "attn", VISION_PROJECTIONS),
        "text": (r"transformer_blocks\.\d+", "attn", TEXT_PROJECTIONS),
        "joint": (r"single_transformer_blocks\.\d+", "attn", {"q": "to_q", "k": "to_k", "v": "to_v"}),
    },
    # HunyuanVideo-1.5: HunyuanVideo's dual-stream blocks only (no single-stream ones); its token
    # refiner is left out as there.
    "hunyuan15": {
        "vision": (r"transformer_blocks\.\d+", "attn", VISION_PROJECTIONS),
        "text": (r"transformer_blocks\.\d+", "attn", TEXT_PROJECTIONS),
    },
    # LTX-2: video and audio streams in every block; the relation LoRA is learned on the video stream
    # (attn1: video self-attention; attn2: video cross-attention to the text), so the audio stream's
    # attention and the audio<->video cross-attention are left out.
    "ltx2": {
        "vision": (r"transformer_blocks\.\d+", "attn1", VISION_PROJECTIONS),
        "text": (r"transformer_blocks\.\d+", "attn2", VISION_PROJECTIONS),
    },
    # Analysis only (no backbone here): one attention over the concatenated text+vision tokens.
    "cogvideox": {
        "joint": (r"transformer_blocks\.\d+", "attn1", VISION_PROJECTIONS),
    },
}

#: diffusers transformer class -> family (what a checkpoint's config.json ``_class_name`` says)
TRANSFORMER_CLASSES: dict[str, str] = {
    "MochiTransformer3DModel": "mochi",
    "WanTransformer3DModel": "wan",
    "HunyuanVideoTransformer3DModel": "hunyuan",
    "HunyuanVideo15Transformer3DModel": "hunyuan15",
    "LTX2VideoTransformer3DModel": "ltx2",
    "CogVideoXTransformer3DModel": "cogvideox",
}


def streams(family: str, prefix: str = "") -> dict[str, tuple[str, dict[str, str]]]:
    """``Backbone.streams``: stream -> (regex matching the whole attention module name, roles).

    ``prefix``: a regex before the block (a model made of several transformers, such as Wan2.2
    A14B's two experts, names its modules ``high_noise.blocks.0...``)."""
    return {
        stream: (rf"{prefix}{block}\.{attention}", dict(roles))
        for stream, (block, attention, roles) in ATTENTION_LAYOUTS[family].items()
    }


def layer_streams(family: str) -> dict[str, tuple[str, dict[str, str]]]:
    """As :func:`streams`, with the layer (the block) as the regex's first group."""
    return {
        stream: (rf"({block})\.{attention}", dict(roles))
        for stream, (block, attention, roles) in ATTENTION_LAYOUTS[family].items()
    }


# ----- the original checkpoints' layers (ComfyUI reads LoRAs by these names) ------------------------
class FusedLayer(NamedTuple):
    """One layer of the original checkpoint; ``parts`` are the diffusers Linear modules whose
    outputs it stacks (in row order). ``{i}`` stands for the block index."""

    original: str
    parts: tuple[str, ...]


def _qkv(block: str, q: str, k: str, v: str) -> tuple[str, ...]:
    return tuple(f"{block}.{name}" for name in (q, k, v))


#: backbone -> the original checkpoint's layers and the diffusers modules each is made of (the
#: ComfyUI export, :mod:`dreamrelation.generation.comfyui`, writes LoRAs under these names)
ORIGINAL_LAYOUT: dict[str, tuple[FusedLayer, ...]] = {
    "mochi": (
        FusedLayer("blocks.{i}.attn.qkv_x", _qkv("transformer_blocks.{i}.attn1", "to_q", "to_k", "to_v")),
        FusedLayer(
            "blocks.{i}.attn.qkv_y",
            _qkv("transformer_blocks.{i}.attn1", "add_q_proj", "add_k_proj", "add_v_proj"),
        ),
        FusedLayer("blocks.{i}.attn.proj_x", ("transformer_blocks.{i}.attn1.to_out.0",)),
        FusedLayer("blocks.{i}.attn.proj_y", ("transformer_blocks.{i}.attn1.to_add_out",)),
    ),
    "wan": tuple(
        FusedLayer(f"blocks.{{i}}.{original}.{short}", (f"blocks.{{i}}.{ours}.{name}",))
        for original, ours in (("self_attn", "attn1"), ("cross_attn", "attn2"))
        for short, name in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"))
    ),
    "hunyuan": (
        FusedLayer(
            "double_blocks.{i}.img_attn_qkv", _qkv("transformer_blocks.{i}.attn", "to_q", "to_k", "to_v")
        ),
        FusedLayer(
            "double_blocks.{i}.txt_attn_qkv",
            _qkv("transformer_blocks.{i}.attn", "add_q_proj", "add_k_proj", "add_v_proj"),
        ),
        FusedLayer("double_blocks.{i}.img_attn_proj", ("transformer_blocks.{i}.attn.to_out.0",)),
        FusedLayer("double_blocks.{i}.txt_attn_proj", ("transformer_blocks.{i}.attn.to_add_out",)),
        FusedLayer(
            "single_blocks.{i}.linear1",
            (
                *_qkv("single_transformer_blocks.{i}.attn", "to_q", "to_k", "to_v"),
                "single_transformer_blocks.{i}.proj_mlp",
            ),
        ),
    ),
}
# HunyuanVideo-1.5's original checkpoint keeps Q, K, V apart (img_attn_q ... txt_attn_proj, read from
# diffusers' conversion script for it); it has no single-stream blocks.
ORIGINAL_LAYOUT["hunyuan15"] = tuple(
    FusedLayer(f"double_blocks.{{i}}.{stream}_attn_{short}", (f"transformer_blocks.{{i}}.attn.{ours}",))
    for stream, projections in (
        ("img", (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj", "to_out.0"))),
        ("txt", (("q", "add_q_proj"), ("k", "add_k_proj"), ("v", "add_v_proj"), ("proj", "to_add_out"))),
    )
    for short, ours in projections
)
# its image-to-video checkpoint is the same transformer (ComfyUI loads both with one model class)
ORIGINAL_LAYOUT["hunyuan15_i2v"] = ORIGINAL_LAYOUT["hunyuan15"]
# Wan2.2 keeps Wan2.1's original names (ComfyUI ``comfy/ldm/wan/model.py`` serves both); A14B's
# experts are two checkpoints with these names each, so each expert gets its own ComfyUI file.
# Wan2.1 I2V's original cross_attn also has k_img / v_img, which the LoRA leaves out (see above).
for _wan_like in ("wan22_5b", "wan22_a14b", "wan22_a14b_i2v", "wan_i2v"):
    ORIGINAL_LAYOUT[_wan_like] = ORIGINAL_LAYOUT["wan"]
# LTX-2's original checkpoint names the adapted layers as diffusers does and fuses nothing. Read in
# ComfyUI: comfy/model_base.py (class LTXAV: the model is comfy/ldm/lightricks/av_model.py's
# LTXAVModel under ``diffusion_model.``), av_model.py (LTXAVModel._init_transformer_blocks:
# ``transformer_blocks``; BasicAVTransformerBlock: video ``attn1`` (self) and ``attn2`` (text), beside
# audio_attn1/2, audio_to_video_attn, video_to_audio_attn), comfy/ldm/lightricks/model.py
# (CrossAttention: ``to_q``, ``to_k``, ``to_v``, ``to_out`` = Sequential(Linear, Dropout), so
# ``to_out.0``); and in diffusers: loaders/lora_conversion_utils.py
# ``_convert_non_diffusers_ltx2_lora_to_diffusers`` renames original LoRA keys only outside these
# layers (patchify_proj, adaln_single, q_norm/k_norm, the av_ca tables). Only the video stream is
# listed: the audio attention and the audio<->video cross-attention carry no LoRA (ATTENTION_LAYOUTS).
ORIGINAL_LAYOUT["ltx2"] = tuple(
    FusedLayer(name, (name,))
    for attention in ("attn1", "attn2")
    for name in (f"transformer_blocks.{{i}}.{attention}.{p}" for p in VISION_PROJECTIONS.values())
)
