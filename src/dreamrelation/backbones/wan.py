"""Wan2.1: self-attention over vision tokens, cross-attention to UMT5 text tokens, 4x/8x VAE."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5EncoderModel

from dreamrelation.backbones import layouts
from dreamrelation.backbones.base import Backbone
from dreamrelation.backbones.tiny_text import tiny_t5_config, word_tokenizer


def tiny_wan_transformer(
    seed: int, channels: int = 16, in_channels: int | None = None, **extra: Any
) -> WanTransformer3DModel:
    """The tiny random Wan transformer of every Wan backbone (``channels`` latent channels out,
    ``in_channels`` in; ``extra``: more config, e.g. Wan2.1 I2V's image projection sizes)."""
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels or channels,
        out_channels=channels,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        **extra,
    )


def tiny_wan_vae() -> AutoencoderKLWan:
    """The tiny random Wan2.1 VAE (16 latent channels; 8x space, 4x time) of the Wan backbones
    (from the global random state: each ``tiny`` seeds it)."""
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )


class WanBackbone(Backbone):
    name = "wan"
    pipeline_class = WanPipeline
    transformer_class = WanTransformer3DModel
    streams = layouts.streams("wan")  # text enters through cross-attention (attn2)
    temporal_factor = 4
    spatial_factor = 8
    first_frame_alone = True
    flow_convention = "noise_minus_data"
    hub_id = "Wan-AI/Wan2.1-T2V-14B-Diffusers"

    @classmethod
    def default_max_sequence_length(cls) -> int:
        return 512

    @staticmethod
    def _tiny_transformer_module(seed: int) -> WanTransformer3DModel:
        return tiny_wan_transformer(seed)

    @classmethod
    def tiny(cls, seed: int = 0) -> WanBackbone:
        transformer = cls._tiny_transformer_module(seed)
        vae = tiny_wan_vae()
        text_encoder = UMT5EncoderModel(tiny_t5_config())
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
        pipeline = WanPipeline(
            tokenizer=word_tokenizer(16),
            text_encoder=text_encoder,
            vae=vae,
            scheduler=scheduler,
            transformer=transformer,
        )
        return cls(pipeline, max_sequence_length=cls.tiny_max_sequence_length)

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, _ = self.pipeline.encode_prompt(
            prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
            device=self.pipeline.text_encoder.device,
        )
        return {"prompt_embeds": embeds.float()}

    def transformer_kwargs(
        self, conditioning: dict[str, torch.Tensor], noisy_latents: torch.Tensor
    ) -> dict[str, Any]:
        return {"encoder_hidden_states": conditioning["prompt_embeds"].to(noisy_latents.dtype)}

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return self.standardize_latents(latents)
