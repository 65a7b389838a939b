"""HunyuanVideo: dual-stream then single-stream MM-DiT, Llama + CLIP text encoders, 4x/8x VAE."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKLHunyuanVideo,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

from dreamrelation.backbones import layouts
from dreamrelation.backbones.base import Backbone
from dreamrelation.backbones.tiny_text import word_tokenizer


class HunyuanVideoBackbone(Backbone):
    name = "hunyuan"
    pipeline_class = HunyuanVideoPipeline
    transformer_class = HunyuanVideoTransformer3DModel
    streams = layouts.streams("hunyuan")  # dual-stream vision/text, single-stream joint
    text_encoders = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))  # Llama, CLIP
    temporal_factor = 4
    spatial_factor = 8
    first_frame_alone = True
    flow_convention = "noise_minus_data"
    hub_id = "hunyuanvideo-community/HunyuanVideo"

    def __init__(
        self,
        pipeline: HunyuanVideoPipeline,
        max_sequence_length: int,
        prompt_template: dict[str, Any] | None = None,
        training_guidance: float = 1.0,
    ) -> None:
        super().__init__(pipeline, max_sequence_length)
        self.prompt_template = prompt_template
        # HunyuanVideo is guidance-distilled: the guidance scale is an input of the transformer.
        # Training targets the unguided flow (eps - z), which the distilled model produces at
        # embedded guidance 1.0; feeding 6.0 would ask a guided prediction to match an unguided
        # target. musubi-tuner trains HunyuanVideo LoRAs at 1.0 by default too (docs/memory.md).
        self.training_guidance = training_guidance

    @staticmethod
    def _tiny_transformer_module(seed: int) -> HunyuanVideoTransformer3DModel:
        torch.manual_seed(seed)
        return HunyuanVideoTransformer3DModel(
            in_channels=4,
            out_channels=4,
            num_attention_heads=2,
            attention_head_dim=10,
            num_layers=2,
            num_single_layers=2,
            num_refiner_layers=1,
            patch_size=1,
            patch_size_t=1,
            guidance_embeds=True,
            text_embed_dim=16,
            pooled_projection_dim=8,
            rope_axes_dim=(2, 4, 4),
        )

    @classmethod
    def tiny(cls, seed: int = 0) -> HunyuanVideoBackbone:
        transformer = cls._tiny_transformer_module(seed)
        vae = AutoencoderKLHunyuanVideo(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            down_block_types=("HunyuanVideoDownBlock3D",) * 4,
            up_block_types=("HunyuanVideoUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            act_fn="silu",
            norm_num_groups=4,
            scaling_factor=0.476986,
            spatial_compression_ratio=8,
            temporal_compression_ratio=4,
            mid_block_add_attention=True,
        )
        text_encoder = LlamaModel(
            LlamaConfig(
                vocab_size=512,
                hidden_size=16,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=64,
                pad_token_id=0,
            )
        )
        text_encoder_2 = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=512,
                hidden_size=8,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=2,
                projection_dim=8,
                max_position_embeddings=80,
                bos_token_id=3,
                eos_token_id=1,
                pad_token_id=0,
            )
        )
        pipeline = HunyuanVideoPipeline(
            text_encoder=text_encoder,
            tokenizer=word_tokenizer(64),
            transformer=transformer,
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
            text_encoder_2=text_encoder_2,
            tokenizer_2=word_tokenizer(77),
        )
        # The real template's crop_start (95) counts Llama tokens; the tiny tokenizer needs none.
        return cls(
            pipeline,
            max_sequence_length=cls.tiny_max_sequence_length,
            prompt_template={"template": "{}", "crop_start": 0},
        )

    def _template_kwargs(self) -> dict[str, Any]:
        return {} if self.prompt_template is None else {"prompt_template": self.prompt_template}

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, pooled, mask = self.pipeline.encode_prompt(
            prompts,
            max_sequence_length=self.max_sequence_length,
            device=self.pipeline.text_encoder.device,
            **self._template_kwargs(),
        )
        return {
            "prompt_embeds": embeds.float(),
            "pooled_prompt_embeds": pooled.float(),
            "prompt_attention_mask": mask,
        }

    def transformer_kwargs(
        self, conditioning: dict[str, torch.Tensor], noisy_latents: torch.Tensor
    ) -> dict[str, Any]:
        batch = noisy_latents.shape[0]
        guidance = torch.full((batch,), self.training_guidance * 1000.0, device=noisy_latents.device)
        return {
            "encoder_hidden_states": conditioning["prompt_embeds"].to(noisy_latents.dtype),
            "encoder_attention_mask": conditioning["prompt_attention_mask"],
            "pooled_projections": conditioning["pooled_prompt_embeds"].to(noisy_latents.dtype),
            "guidance": guidance.to(noisy_latents.dtype),
        }

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.vae.config.scaling_factor

    def pipeline_kwargs(self, guidance_scale: float) -> dict[str, Any]:
        # The project's guidance scale is the distilled (embedded) one; true two-pass CFG stays at
        # 1.0 (off), as in HunyuanVideo's own pipeline defaults. Applying a true CFG 6.0 on top of
        # the embedded 6.0 guided twice.
        return {
            "true_cfg_scale": 1.0,
            "guidance_scale": guidance_scale,
            "max_sequence_length": self.max_sequence_length,
            **self._template_kwargs(),
        }
