"""Mochi-1 (genmo): MM-DiT with separate text/vision projections, T5-XXL, a 6x/8x causal VAE."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKLMochi,
    FlowMatchEulerDiscreteScheduler,
    MochiPipeline,
    MochiTransformer3DModel,
)
from transformers import T5EncoderModel

from dreamrelation.backbones.base import Backbone
from dreamrelation.backbones.tiny_text import tiny_t5_config, word_tokenizer


class MochiBackbone(Backbone):
    name = "mochi"
    pipeline_class = MochiPipeline
    streams = {
        "vision": (
            r"transformer_blocks\.\d+\.attn1",
            {"q": "to_q", "k": "to_k", "v": "to_v", "out": "to_out.0"},
        ),
        "text": (
            r"transformer_blocks\.\d+\.attn1",
            {"q": "add_q_proj", "k": "add_k_proj", "v": "add_v_proj", "out": "to_add_out"},
        ),
    }
    temporal_factor = 6  # 61 frames -> 11 latent frames, the first one alone
    spatial_factor = 8
    first_frame_alone = True
    flow_convention = "data_minus_noise"

    @classmethod
    def tiny(cls, seed: int = 0) -> MochiBackbone:
        torch.manual_seed(seed)
        transformer = MochiTransformer3DModel(
            patch_size=2,
            num_attention_heads=2,
            attention_head_dim=8,
            num_layers=2,
            pooled_projection_dim=16,
            in_channels=12,
            out_channels=None,
            qk_norm="rms_norm",
            text_embed_dim=32,
            time_embed_dim=4,
            activation_fn="swiglu",
            max_sequence_length=16,
        )
        vae = AutoencoderKLMochi(
            latent_channels=12,
            out_channels=3,
            encoder_block_out_channels=(32, 32, 32, 32),
            decoder_block_out_channels=(32, 32, 32, 32),
            layers_per_block=(1, 1, 1, 1, 1),
        )
        text_encoder = T5EncoderModel(tiny_t5_config())
        scheduler = FlowMatchEulerDiscreteScheduler(invert_sigmas=True)
        pipeline = MochiPipeline(
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=word_tokenizer(16),
            transformer=transformer,
        )
        return cls(pipeline, max_sequence_length=16)

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, mask, _, _ = self.pipeline.encode_prompt(
            prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
            device=self.pipeline.text_encoder.device,
        )
        return {"prompt_embeds": embeds.float(), "prompt_attention_mask": mask}

    def transformer_kwargs(
        self, conditioning: dict[str, torch.Tensor], noisy_latents: torch.Tensor
    ) -> dict[str, Any]:
        return {
            "encoder_hidden_states": conditioning["prompt_embeds"].to(noisy_latents.dtype),
            "encoder_attention_mask": conditioning["prompt_attention_mask"],
        }

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return self.standardize_latents(latents) * self.vae.config.scaling_factor
