"""HunyuanVideo-1.5: dual-stream MM-DiT only (no single-stream blocks), Qwen2.5-VL + ByT5 text
encoders, a 4x/16x VAE with 32 channels, classifier-free guidance through a diffusers guider.

* The transformer reads ``[latents, condition latents, condition mask]`` stacked on the channels
  (2C + 1) plus SigLIP image tokens. Text-to-video (what training and ``generate`` do here) feeds
  zeros for the condition and the image tokens, as ``HunyuanVideo15Pipeline`` does: the model then
  masks the image tokens out of attention.
* Its pipeline has no ``load_lora_weights``: a LoRA goes through the transformer's own peft adapter
  API (``pipe.transformer.load_lora_adapter(path, prefix="transformer")``), the two lines the README
  shows for plain diffusers.
* Not guidance-distilled (unlike HunyuanVideo): training feeds the plain flow, sampling uses true CFG.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from diffusers import (
    AutoencoderKLHunyuanVideo15,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideo15Pipeline,
    HunyuanVideo15Transformer3DModel,
)
from diffusers.guiders import ClassifierFreeGuidance
from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5EncoderModel

from dreamrelation.backbones import layouts
from dreamrelation.backbones.base import Backbone, TransformerOnly
from dreamrelation.backbones.tiny_text import tiny_t5_config, word_tokenizer

HUNYUAN15_480P = "hunyuanvideo-community/HunyuanVideo-1.5-480p_t2v"
#: SigLIP tokens of the image condition (``HunyuanVideo15Pipeline.vision_num_semantic_tokens``)
IMAGE_TOKENS = 729
#: a chat template for the tiny word tokenizer: the user's text only (the real Qwen2 tokenizer brings
#: its own, whose system prompt the pipeline crops off)
_TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}"
)


class HunyuanVideo15Backbone(Backbone):
    name = "hunyuan15"
    pipeline_class = HunyuanVideo15Pipeline
    transformer_class = HunyuanVideo15Transformer3DModel
    streams = layouts.streams("hunyuan15")
    text_encoders = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))  # Qwen2.5-VL, ByT5
    temporal_factor = 4
    spatial_factor = 16
    first_frame_alone = True
    flow_convention = "noise_minus_data"
    hub_id = HUNYUAN15_480P

    def __init__(self, pipeline: Any, max_sequence_length: int) -> None:
        super().__init__(pipeline, max_sequence_length)
        if not isinstance(pipeline, TransformerOnly):
            pipeline.tokenizer_max_length = max_sequence_length  # the pipeline's own text length knob

    @classmethod
    def default_max_sequence_length(cls) -> int:
        return 1000  # the pipeline's tokenizer_max_length

    #: the tiny transformer's ``target_size`` (pixels; the image-to-video pipeline picks the video's
    #: size from it and the image's aspect ratio) and ``task_type`` (a config label only)
    tiny_target_size: ClassVar[int] = 16
    tiny_task_type: ClassVar[str] = "t2v"

    @classmethod
    def _tiny_transformer_module(cls, seed: int) -> HunyuanVideo15Transformer3DModel:
        torch.manual_seed(seed)
        return HunyuanVideo15Transformer3DModel(
            in_channels=9,  # latents (4) + condition latents (4) + condition mask (1)
            out_channels=4,
            num_attention_heads=2,
            attention_head_dim=8,
            num_layers=2,
            num_refiner_layers=1,
            mlp_ratio=2.0,
            text_embed_dim=16,
            text_embed_2_dim=32,
            image_embed_dim=12,
            rope_axes_dim=(2, 2, 4),
            target_size=cls.tiny_target_size,
            task_type=cls.tiny_task_type,
        )

    @classmethod
    def tiny(cls, seed: int = 0) -> HunyuanVideo15Backbone:
        pipeline = cls.pipeline_class(**cls._tiny_components(seed))
        # The real template's crop (108 Qwen tokens of system prompt) means nothing to the tiny tokenizer.
        pipeline.prompt_template_encode_start_idx = 0
        pipeline.tokenizer_2_max_length = 8
        return cls(pipeline, max_sequence_length=cls.tiny_max_sequence_length)

    @classmethod
    def _tiny_components(cls, seed: int) -> dict[str, Any]:
        """The tiny pipeline's components (the image-to-video backbone adds its image encoder)."""
        transformer = cls._tiny_transformer_module(seed)
        vae = AutoencoderKLHunyuanVideo15(
            latent_channels=4,
            block_out_channels=(8, 8, 8, 8, 8),
            layers_per_block=1,
            spatial_compression_ratio=16,
            temporal_compression_ratio=4,
            downsample_match_channel=False,
            upsample_match_channel=False,
        )
        text_encoder = Qwen2_5_VLTextModel(
            Qwen2_5_VLTextConfig(
                vocab_size=512,
                hidden_size=16,
                intermediate_size=16,
                num_hidden_layers=3,
                num_attention_heads=2,
                num_key_value_heads=2,
                rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                rope_theta=1000000.0,
                bos_token_id=3,
                eos_token_id=1,
                pad_token_id=0,
            )
        )
        tokenizer = word_tokenizer(64)
        tokenizer.chat_template = _TINY_CHAT_TEMPLATE
        return {
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "transformer": transformer,
            "vae": vae,
            "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
            "text_encoder_2": T5EncoderModel(tiny_t5_config()),
            "tokenizer_2": ByT5Tokenizer(),
            "guider": ClassifierFreeGuidance(guidance_scale=6.0),
        }

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, mask, embeds_2, mask_2 = self.pipeline.encode_prompt(
            prompts, device=self.pipeline.text_encoder.device, batch_size=len(prompts)
        )
        return {
            "prompt_embeds": embeds.float(),
            "prompt_attention_mask": mask,
            "glyph_embeds": embeds_2.float(),  # ByT5 embeddings of quoted text ("..."), zeros without
            "glyph_attention_mask": mask_2,
        }

    def predict(
        self,
        noisy_latents: torch.Tensor,
        sigma: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
        first_frame: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """As the pipelines call it: ``[latents, condition latents, condition mask]`` on the channels
        (:meth:`condition_channels`), the SigLIP image tokens beside the text (:meth:`transformer_kwargs`)."""
        condition, mask = self.condition_channels(noisy_latents, first_frame)
        inputs = torch.cat([noisy_latents, condition.to(noisy_latents.dtype), mask], dim=1)
        return super().predict(inputs, sigma, conditioning)

    def condition_channels(
        self, noisy_latents: torch.Tensor, first_frame: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The condition latents and mask of the text-to-video pipeline: zeros, mask 0."""
        if first_frame is not None:
            raise ValueError(f"{self.name} has no image-to-video form (that is hunyuan15_i2v)")
        b, _, f, h, w = noisy_latents.shape
        return torch.zeros_like(noisy_latents), noisy_latents.new_zeros(b, 1, f, h, w)

    def transformer_kwargs(
        self, conditioning: dict[str, torch.Tensor], noisy_latents: torch.Tensor
    ) -> dict[str, Any]:
        dtype = noisy_latents.dtype
        image_embeds = conditioning.get("image_embeds")  # SigLIP tokens of an image condition
        if image_embeds is None:  # text-to-video: zero tokens, which the model masks out of attention
            image_dim = self.transformer.config.image_embed_dim
            image_embeds = noisy_latents.new_zeros(noisy_latents.shape[0], IMAGE_TOKENS, image_dim)
        return {
            "encoder_hidden_states": conditioning["prompt_embeds"].to(dtype),
            "encoder_attention_mask": conditioning["prompt_attention_mask"].to(dtype),
            "encoder_hidden_states_2": conditioning["glyph_embeds"].to(dtype),
            "encoder_attention_mask_2": conditioning["glyph_attention_mask"].to(dtype),
            "image_embeds": image_embeds.to(dtype),
        }

    def text_sequence(
        self, text_mask: torch.Tensor, conditioning: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformer reorders its text tokens: valid image tokens (none in text-to-video), valid
        ByT5 tokens, valid Qwen tokens, then the masked image, ByT5 and Qwen tokens."""
        glyph = conditioning["glyph_attention_mask"][0].bool().cpu()
        text_mask = text_mask.bool()
        n_glyph, n_text = int(glyph.sum()), int(text_mask.sum())
        where = torch.empty(len(text_mask), dtype=torch.long)
        where[text_mask] = n_glyph + torch.arange(n_text)
        invalid_start = n_glyph + n_text + IMAGE_TOKENS + int((~glyph).sum())
        where[~text_mask] = invalid_start + torch.arange(int((~text_mask).sum()))
        length = IMAGE_TOKENS + len(glyph) + len(text_mask)
        sequence_mask = torch.zeros(length, dtype=torch.bool)
        sequence_mask[: n_glyph + n_text] = True
        return where, sequence_mask

    def patch_size(self) -> tuple[int, int, int]:
        cfg = self.transformer.config
        return (int(cfg.patch_size_t), int(cfg.patch_size), int(cfg.patch_size))

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.vae.config.scaling_factor  # the pipeline decodes latents / scaling_factor

    def pipeline_kwargs(self, guidance_scale: float) -> dict[str, Any]:
        # CFG lives in the pipeline's guider component, not in a call argument
        self.pipeline.guider.guidance_scale = guidance_scale
        return {}

    # ----- LoRA files: its pipeline has no load_lora_weights, so ``generate`` loads them through the
    # transformer's peft adapter API (generation.render); fusing goes through the transformer too
    def fuse_lora(self, adapter_name: str) -> None:
        self.transformer.fuse_lora(lora_scale=1.0, adapter_names=[adapter_name])
        self.transformer.unload_lora()
