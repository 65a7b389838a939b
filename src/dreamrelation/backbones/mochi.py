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
from diffusers.models.attention_processor import MochiAttnProcessor2_0
from transformers import T5EncoderModel

from dreamrelation.backbones import layouts
from dreamrelation.backbones.base import Backbone
from dreamrelation.backbones.tiny_text import tiny_t5_config, word_tokenizer


class MochiBackbone(Backbone):
    name = "mochi"
    pipeline_class = MochiPipeline
    transformer_class = MochiTransformer3DModel
    streams = layouts.streams("mochi")
    temporal_factor = 6  # 61 frames -> 11 latent frames, the first one alone
    spatial_factor = 8
    first_frame_alone = True
    flow_convention = "data_minus_noise"
    hub_id = "genmo/mochi-1-preview"

    @staticmethod
    def _tiny_transformer_module(seed: int) -> MochiTransformer3DModel:
        torch.manual_seed(seed)
        return MochiTransformer3DModel(
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

    @classmethod
    def tiny(cls, seed: int = 0) -> MochiBackbone:
        transformer = cls._tiny_transformer_module(seed)
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
        return cls(pipeline, max_sequence_length=cls.tiny_max_sequence_length)

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


class BatchedMochiAttnProcessor:
    """Mochi's joint attention for a whole batch in one ``scaled_dot_product_attention`` call.

    diffusers' ``MochiAttnProcessor2_0`` loops over the batch to drop each prompt's padding tokens
    (with a host sync per sample), which dominates the step time of a small model trained at large
    batch on a GPU. Masking the padding *keys* instead gives every vision token and every real text
    token the same output; only the padded text positions differ (the loop writes zeros there), and
    those are never attended to again, so the transformer's output is unchanged (tested). Used by
    the toy base model's pretraining; install it with :func:`use_batched_attention`.
    """

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        def heads(x: torch.Tensor, norm: torch.nn.Module | None) -> torch.Tensor:
            x = x.unflatten(2, (attn.heads, -1))
            return norm(x) if norm is not None else x

        query = heads(attn.to_q(hidden_states), attn.norm_q)
        key = heads(attn.to_k(hidden_states), attn.norm_k)
        value = heads(attn.to_v(hidden_states), None)
        text_query = heads(attn.add_q_proj(encoder_hidden_states), attn.norm_added_q)
        text_key = heads(attn.add_k_proj(encoder_hidden_states), attn.norm_added_k)
        text_value = heads(attn.add_v_proj(encoder_hidden_states), None)
        if image_rotary_emb is not None:
            query = _rotate(query, *image_rotary_emb)
            key = _rotate(key, *image_rotary_emb)

        vision_length = query.shape[1]
        query, key, value = (
            torch.cat(pair, dim=1).transpose(1, 2)
            for pair in ((query, text_query), (key, text_key), (value, text_value))
        )
        # (B, 1, 1, vision + text): every vision key, and the prompt's real tokens only.
        keep = torch.cat(
            [attention_mask.new_ones(attention_mask.shape[0], vision_length), attention_mask], dim=1
        ).bool()[:, None, None, :]
        output = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=keep)
        output = output.transpose(1, 2).flatten(2, 3)
        hidden_states, encoder_hidden_states = output.split_with_sizes(
            (vision_length, output.shape[1] - vision_length), dim=1
        )
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if hasattr(attn, "to_add_out"):
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        return hidden_states, encoder_hidden_states


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Mochi's interleaved rotary embedding, computed in float32 as diffusers does."""
    even, odd = x[..., 0::2].float(), x[..., 1::2].float()
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2).to(x.dtype)


def use_batched_attention(transformer: torch.nn.Module) -> int:
    """Give every Mochi joint-attention layer of ``transformer`` the :class:`BatchedMochiAttnProcessor`;
    returns how many layers were changed."""
    changed = 0
    for module in transformer.modules():
        if isinstance(getattr(module, "processor", None), MochiAttnProcessor2_0):
            module.processor = BatchedMochiAttnProcessor()
            changed += 1
    return changed
