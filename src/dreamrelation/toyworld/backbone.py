"""The toy world's video backbone: a tiny real Mochi, a lossless codec and a frozen word encoder.

Every code path is Mochi's: the transformer is diffusers' ``MochiTransformer3DModel`` (so LoRA
targets, attention processors and the flow convention are the real ones), sampling is
``MochiPipeline``'s Euler loop on the linear-quadratic schedule, and the text encoder is a
``T5EncoderModel``. Only the sizes shrink, and the 3D VAE is replaced by :class:`ToyVideoCodec`, an
exact space-to-depth rearrangement (time by 2, space by 4), so the toy world measures the method
and not a codec's blur.

The pretrained base model (``weights/base``, trained by ``dreamrelation toy pretrain`` on generic
motions only; see docs/toy_backbone.md) loads with ``load_backbone("toy", "shipped")``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, MochiPipeline, MochiTransformer3DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.video_processor import VideoProcessor
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from dreamrelation.backbones import register_backbone
from dreamrelation.backbones.mochi import MochiBackbone
from dreamrelation.backbones.tiny_text import word_tokenizer
from dreamrelation.toyworld.learned_codec import (
    LearnedToyCodec,
    check_shape,
    codec_class_name,
    depth_to_space,
    point_mass,
    space_to_depth,
)
from dreamrelation.toyworld.world import (
    BACKGROUNDS,
    COLORS,
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    GENERIC_MOTIONS,
    RELATIONS,
    SHAPES,
    Scene,
    caption_for,
)

SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "base"
MAX_SEQUENCE_LENGTH = 32  # the longest toy caption is 22 tokens with its </s>
# Toy-world pixels in [-1, 1] have std ~0.38 (mostly dull background): scale latents to unit
# variance, as Mochi's VAE statistics do, so the noise schedule's SNRs mean what they mean for Mochi.
LATENT_SCALING_FACTOR = 2.6
# Sampling settings chosen on the calibration prompts for the shipped base model (docs/toy_backbone.md).
NUM_INFERENCE_STEPS = 24
GUIDANCE_SCALE = 3.0

# The transformer sizes (docs/toy_backbone.md has the calibration that chose them).
# "patch2_2x384": the first shipped design, 2 blocks of 6 heads x 64 at patch 2: a token is 2 frames x
# 8x8 px (384 numbers), and the width must cover a token's numbers (a narrower model projects the
# patch onto fewer dimensions and never removes the noise in the rest).
# "patch1_4x192" (the shipped "base"): patch 1, so a token is 2 frames x 4x4 px (96 numbers) and a
# sprite is drawn by several tokens; 4 blocks of 4 heads x 48. At equal wall time on one GPU it
# denoises 2-3x better than the patch-2 designs. "tiny": random weights for fast tests.
TRANSFORMER_SIZES: dict[str, dict[str, Any]] = {
    "patch2_2x384": {
        "patch_size": 2,
        "num_attention_heads": 6,
        "attention_head_dim": 64,
        "num_layers": 2,
        "pooled_projection_dim": 64,
        "in_channels": 96,
        "out_channels": None,
        "qk_norm": "rms_norm",
        "time_embed_dim": 64,
        "activation_fn": "swiglu",
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
    },
}
TRANSFORMER_SIZES["patch2_3x384"] = {**TRANSFORMER_SIZES["patch2_2x384"], "num_layers": 3}
TRANSFORMER_SIZES["patch1_4x192"] = {
    **TRANSFORMER_SIZES["patch2_2x384"],
    "patch_size": 1,
    "num_attention_heads": 4,
    "attention_head_dim": 48,
    "num_layers": 4,
}
TRANSFORMER_SIZES["patch1_6x192"] = {**TRANSFORMER_SIZES["patch1_4x192"], "num_layers": 6}
# For a learned codec's latents (`toy pretrain --codec`, 16 channels): a patch-2 token holds 64 numbers,
# well under the width, on 4x fewer tokens than patch 1. With the exact codec's 96 channels a patch-2
# token is 384 numbers, more than the width 192 can carry: use it with a learned codec only.
TRANSFORMER_SIZES["patch2_6x192"] = {**TRANSFORMER_SIZES["patch1_4x192"], "patch_size": 2, "num_layers": 6}
TRANSFORMER_SIZES["base"] = dict(TRANSFORMER_SIZES["patch1_4x192"])
TRANSFORMER_SIZES["tiny"] = {
    **TRANSFORMER_SIZES["patch2_2x384"],
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "pooled_projection_dim": 32,
    "time_embed_dim": 32,
}
TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "d_model": 64,
    "d_kv": 16,
    "d_ff": 128,
    "num_layers": 1,
    "num_heads": 4,
    "relative_attention_num_buckets": 16,
    "relative_attention_max_distance": 32,
    "dropout_rate": 0.0,
    "decoder_start_token_id": 0,
}
# Each text-encoder head looks at one neighbour: the previous word, the next, two back, two ahead.
NEIGHBOUR_OFFSETS = (-1, 1, -2, 2)
NEIGHBOUR_BIAS = 12.0  # softmax weight ~1 on that neighbour (random content scores are ~1)


# ----------------------------------------------------------------------------- codec


class ToyVideoCodec(ModelMixin, ConfigMixin):
    """A lossless "VAE": space-to-depth by ``spatial_factor`` and ``temporal_factor``.

    ``(B, 3, F, H, W)`` pixels in [-1, 1] <-> ``(B, 3·t·s·s, F/t, H/s, W/s)`` latents, channels ordered
    (colour, frame-in-group, row-in-cell, column-in-cell). It exposes the parts of the diffusers VAE
    API that ``MochiPipeline`` and our backbone use: ``encode(x).latent_dist.mode()/.sample()``,
    ``decode(z, return_dict=False)[0]`` and the config fields ``scaling_factor``,
    ``latents_mean``/``latents_std`` (None: no per-channel normalisation).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        temporal_factor: int = 2,
        spatial_factor: int = 4,
        scaling_factor: float = 1.0,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
    ) -> None:
        super().__init__()
        # The codec has no weights; this buffer carries its device and dtype (pipeline.to(...)).
        self.register_buffer("dtype_anchor", torch.zeros(1))

    @property
    def latent_channels(self) -> int:
        cfg = self.config
        return cfg.in_channels * cfg.temporal_factor * cfg.spatial_factor**2

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        cfg = self.config
        check_shape(x, cfg.in_channels, "pixels")
        return point_mass(space_to_depth(x, cfg.temporal_factor, cfg.spatial_factor), return_dict)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        cfg = self.config
        check_shape(z, self.latent_channels, "latents")
        x = depth_to_space(z, cfg.in_channels, cfg.temporal_factor, cfg.spatial_factor)
        if not return_dict:
            return (x,)
        return DecoderOutput(sample=x)


#: the codec classes a toy pipeline folder's vae/ may hold (by config.json's _class_name)
CODEC_CLASSES: dict[str, type[ModelMixin]] = {
    "ToyVideoCodec": ToyVideoCodec,
    "LearnedToyCodec": LearnedToyCodec,
}


def load_codec_folder(folder: str | Path) -> ToyVideoCodec | LearnedToyCodec:
    """The codec saved in ``folder`` (a pipeline's ``vae/`` or a `toy codec train` output), exact or
    learned; it must keep the toy backbone's geometry (time ÷2, space ÷4)."""
    name = codec_class_name(folder)
    if name not in CODEC_CLASSES:
        raise ValueError(
            f"{folder}/config.json names codec class {name!r}; expected one of {tuple(CODEC_CLASSES)}"
        )
    codec = CODEC_CLASSES[name].from_pretrained(str(folder))
    geometry = (codec.config.temporal_factor, codec.config.spatial_factor)
    if geometry != (ToyBackbone.temporal_factor, ToyBackbone.spatial_factor):
        raise ValueError(
            f"{folder}: codec factors (time, space) = {geometry}, but the toy backbone needs "
            f"({ToyBackbone.temporal_factor}, {ToyBackbone.spatial_factor}); retrain it with those"
        )
    return codec.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- pipeline


class ToyPipeline(MochiPipeline):
    """``MochiPipeline`` with the latent geometry read from the codec instead of Mochi's fixed 6x/8x."""

    def __init__(
        self,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae: ToyVideoCodec | LearnedToyCodec,
        text_encoder: T5EncoderModel,
        tokenizer: PreTrainedTokenizerFast,
        transformer: MochiTransformer3DModel,
        force_zeros_for_empty_prompt: bool = False,
    ) -> None:
        super().__init__(scheduler, vae, text_encoder, tokenizer, transformer, force_zeros_for_empty_prompt)
        # prepare_latents: latent frames = (num_frames - 1) // t + 1, i.e. 16 -> 8 for t = 2.
        self.vae_spatial_scale_factor = vae.config.spatial_factor
        self.vae_temporal_scale_factor = vae.config.temporal_factor
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_spatial_scale_factor)
        self.default_height = self.default_width = DEFAULT_SIZE


# ----------------------------------------------------------------------------- text


def toy_vocabulary() -> list[str]:
    """Every word the toy world's captions and prompts use (subjects, motions, relations, backgrounds)."""
    scene = Scene(("circle", "red"), ("square", "orange"), "moving_alone", "dark", seed=0)
    templates = [*RELATIONS.values(), *GENERIC_MOTIONS.values()]
    texts = [t.format(a="a", b="an") for t in templates] + [caption_for(scene, mover=1)]
    texts += [*SHAPES, *COLORS, *BACKGROUNDS.values()]
    words = re.findall(r"[a-z]+", " ".join(texts).lower())
    return list(dict.fromkeys(words))


def toy_tokenizer() -> PreTrainedTokenizerFast:
    return word_tokenizer(MAX_SEQUENCE_LENGTH, extra_words=toy_vocabulary())


# ----------------------------------------------------------------------------- model construction


def init_rope_frequencies(transformer: MochiTransformer3DModel) -> None:
    """Axial, log-spaced RoPE frequencies (diffusers initialises Mochi's learned ones to zero, which
    would start a from-scratch model without any sense of position).

    Rotation pair k of every head turns with one axis (time, row, column, in turn), from about a
    quarter turn per latent frame / token down to a sixteenth of that. MochiRoPE measures a token
    step in space as base_size / grid_size units, so spatial frequencies are divided by that step.
    """
    freqs = transformer.pos_frequencies  # (3 axes, heads, head_dim // 2)
    pairs = freqs.shape[-1]
    patch = transformer.config.patch_size
    token_step = 192 / (DEFAULT_SIZE // ToyVideoCodec().config.spatial_factor // patch)
    values = torch.zeros_like(freqs)
    for k in range(pairs):
        axis = k % 3
        level = k // 3
        per_step = (math.pi / 2) * 0.5 ** (4 * level / max((pairs - 1) // 3, 1))
        values[axis, :, k] = per_step if axis == 0 else per_step / token_step
    with torch.no_grad():
        freqs.copy_(values)


def zero_init_modulation(transformer: MochiTransformer3DModel) -> None:
    """DiT's adaLN-Zero for a from-scratch run: zero every block's modulation (so its gates start at
    tanh(0) = 0 and each block starts as the identity), the output modulation and the output layer.

    The model then starts by predicting zero and first learns the linear part of the flow (the
    -noise term), instead of fighting random blocks; pretraining calls this, tests do not (a
    zero-output model would make every LoRA test vacuous).
    """
    modulations = [transformer.norm_out.linear, transformer.proj_out]
    for block in transformer.transformer_blocks:
        modulations.append(block.norm1.linear)
        context = block.norm1_context
        modulations.append(context.linear if hasattr(context, "linear") else context.linear_1)
    with torch.no_grad():
        for layer in modulations:
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()


def build_text_encoder(vocab_size: int) -> T5EncoderModel:
    """A frozen, randomly initialised one-layer T5 encoder whose attention is purely positional.

    Left at random init, a small T5's output is almost only the token's own embedding (the same word
    in two prompts has cosine similarity 0.9998 whatever its neighbours), so "a red triangle and a
    blue circle" and "a blue triangle and a red circle" would read the same to the video model. We
    keep the random embeddings, values and feed-forward, but zero the queries and put a large
    relative-position bias on one offset per head (:data:`NEIGHBOUR_OFFSETS`): each output token then
    mixes in its neighbours' words, binding a colour to its shape as a trained encoder would.
    """
    config = T5Config(vocab_size=vocab_size, **TEXT_ENCODER_CONFIG)
    encoder = T5EncoderModel(config)
    attention = encoder.encoder.block[0].layer[0].SelfAttention
    if len(NEIGHBOUR_OFFSETS) != config.num_heads:
        raise ValueError(f"need one neighbour offset per head ({config.num_heads}); got {NEIGHBOUR_OFFSETS}")
    bias = torch.zeros_like(attention.relative_attention_bias.weight)  # (buckets, heads)
    for head, offset in enumerate(NEIGHBOUR_OFFSETS):
        bucket = attention._relative_position_bucket(
            torch.tensor(offset),
            bidirectional=True,
            num_buckets=config.relative_attention_num_buckets,
            max_distance=config.relative_attention_max_distance,
        )
        bias[bucket, head] = NEIGHBOUR_BIAS
    with torch.no_grad():
        attention.q.weight.zero_()
        attention.relative_attention_bias.weight.copy_(bias)
    encoder.requires_grad_(False)
    return encoder.eval()


def build_pipeline(
    seed: int = 0, size: str = "base", codec: ToyVideoCodec | LearnedToyCodec | None = None
) -> ToyPipeline:
    """A toy pipeline with random weights (deterministic by ``seed``); ``size`` in TRANSFORMER_SIZES.

    ``codec``: the (frozen) codec to use instead of the exact one, e.g. a trained
    :class:`LearnedToyCodec`; the transformer's input channels follow its latent channels."""
    if size not in TRANSFORMER_SIZES:
        raise ValueError(f"unknown toy transformer size {size!r}; choose one of {tuple(TRANSFORMER_SIZES)}")
    torch.manual_seed(seed)
    tokenizer = toy_tokenizer()
    vocab_size = 64 * math.ceil(len(tokenizer) / 64)
    text_encoder = build_text_encoder(vocab_size)
    if codec is None:
        codec = ToyVideoCodec(scaling_factor=LATENT_SCALING_FACTOR)
    config = {
        **TRANSFORMER_SIZES[size],
        "text_embed_dim": text_encoder.config.d_model,
        "in_channels": codec.latent_channels,
    }
    transformer = MochiTransformer3DModel(**config)
    init_rope_frequencies(transformer)
    return ToyPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(invert_sigmas=True),
        vae=codec,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )


# ----------------------------------------------------------------------------- backbone


@register_backbone
class ToyBackbone(MochiBackbone):
    """Mochi at toy size: 16x32x32 clips <-> (96, 8, 8, 8) latents, the same streams and convention."""

    name = "toy"
    pipeline_class = ToyPipeline
    caption_templates = RELATIONS
    temporal_factor = 2  # 16 frames -> 8 latent frames, no first frame alone
    spatial_factor = 4  # 32x32 -> 8x8
    first_frame_alone = False
    flow_convention = "data_minus_noise"
    default_num_frames = DEFAULT_FRAMES
    default_size = DEFAULT_SIZE
    num_inference_steps = NUM_INFERENCE_STEPS
    guidance_scale = GUIDANCE_SCALE
    tiny_max_sequence_length = MAX_SEQUENCE_LENGTH

    @classmethod
    def default_max_sequence_length(cls) -> int:
        return MAX_SEQUENCE_LENGTH

    @classmethod
    def tiny(cls, seed: int = 0) -> ToyBackbone:
        """Random weights at the "tiny" size (tests); the pretrained model is :meth:`shipped`."""
        return cls(build_pipeline(seed, "tiny"), max_sequence_length=cls.tiny_max_sequence_length)

    @classmethod
    def _tiny_transformer_module(cls, seed: int) -> torch.nn.Module:
        # The toy's seed also drives its text encoder, built first: take the transformer of tiny().
        return cls.tiny(seed).transformer

    @classmethod
    def resolve_model(cls, model: str) -> str:
        return str(SHIPPED_WEIGHTS) if str(model) == "shipped" else str(model)

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = "shipped",
        torch_dtype: torch.dtype = torch.float32,
        max_sequence_length: int | None = None,
    ) -> ToyBackbone:
        """Load a saved toy pipeline folder; ``"shipped"`` is the pretrained base in the package."""
        folder = SHIPPED_WEIGHTS if str(model) == "shipped" else Path(model)
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(
                f"{folder} is not a saved toy pipeline (no model_index.json); pass a folder written by "
                "`dreamrelation toy pretrain` or 'shipped'"
            )
        # The codec is our own class (exact or learned), which diffusers cannot import by library
        # name: pass it in.
        vae = load_codec_folder(folder / "vae").to(torch_dtype)
        pipeline = ToyPipeline.from_pretrained(folder, vae=vae, torch_dtype=torch_dtype)
        pipeline.text_encoder.requires_grad_(False)
        return cls(pipeline, max_sequence_length or MAX_SEQUENCE_LENGTH)

    @classmethod
    def shipped(cls, torch_dtype: torch.dtype = torch.float32) -> ToyBackbone:
        return cls.from_pretrained("shipped", torch_dtype=torch_dtype)

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        if cfg.latents_mean is not None and cfg.latents_std is not None:
            return super().normalize_latents(latents)
        return latents * cfg.scaling_factor

    def save_pretrained(self, folder: str | Path) -> None:
        self.pipeline.save_pretrained(str(folder), safe_serialization=True)


__all__ = [
    "GUIDANCE_SCALE",
    "LATENT_SCALING_FACTOR",
    "MAX_SEQUENCE_LENGTH",
    "NUM_INFERENCE_STEPS",
    "SHIPPED_WEIGHTS",
    "ToyBackbone",
    "ToyPipeline",
    "ToyVideoCodec",
    "TRANSFORMER_SIZES",
    "build_pipeline",
    "load_codec_folder",
    "toy_tokenizer",
    "toy_vocabulary",
    "zero_init_modulation",
]
