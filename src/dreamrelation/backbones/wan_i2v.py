"""Wan2.1 I2V: Wan2.1's transformer, given the first frame twice (input channels and CLIP tokens).

``WanImageToVideoPipeline`` feeds the image to the 14B image-to-video transformer in two ways, and
training feeds both exactly as it does:

* **on the input channels**, as Wan2.2 I2V-A14B: the noisy latents, a 4-channel mask (1 on the first
  latent frame) and the VAE latents of the video [image, black, black, ...] (``in_channels`` 36).
  Those condition latents are not the clip's own latents beyond frame 0, so the cache stores them
  (``image_condition.latents``, :meth:`encode_image_condition`);
* **as image tokens**: the CLIP vision encoder's penultimate hidden states of the image
  (``WanImageToVideoPipeline.encode_image``: ``hidden_states[-2]``, 257 tokens at real size) go in
  as ``encoder_hidden_states_image``; each block's cross-attention (attn2) attends to them through
  its own ``add_k_proj`` / ``add_v_proj`` beside the text's ``to_k`` / ``to_v``. The cache stores
  the tokens of each clip's first frame (``image_condition.image_embeds``).

Every frame, the first included, stays in the loss (the model denoises it too). Caption dropout
drops the text only: the pipeline gives both its CFG passes the same image tokens.

The relation triplet sits on the projections of Wan2.1 (``layouts.streams("wan")``): Q/K/V/O of the
self-attention and of the cross-attention (its Q projects the vision tokens, its K/V the text).
The image tokens' ``add_k_proj`` / ``add_v_proj`` carry no adapter: they carry the given frame's
appearance, which the relation must not absorb, and they are no role of the paper's attention.

diffusers splits the cross-attention context at a fixed 512 text tokens (``WanAttnProcessor``), so
the text is always encoded to 512 tokens (``max_sequence_length`` other than 512 is refused).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5EncoderModel

from dreamrelation.backbones.base import ImageCondition, TransformerOnly
from dreamrelation.backbones.tiny_text import tiny_t5_config, word_tokenizer
from dreamrelation.backbones.wan import WanBackbone, tiny_wan_transformer, tiny_wan_vae
from dreamrelation.backbones.wan22 import _WanImageToVideo, image_condition_latents, with_image_channels
from dreamrelation.errors import ConfigError

WAN21_I2V = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
#: the text length diffusers' Wan attention assumes when it splits image from text tokens
TEXT_TOKENS = 512


class Wan21I2VBackbone(WanBackbone):
    """Wan2.1 I2V (14B, 480P): image-to-video only; see the module docstring for what is fed."""

    name = "wan_i2v"
    pipeline_class = _WanImageToVideo
    hub_id = WAN21_I2V
    image_to_video = True
    image_replaces_first_frame = False
    text_to_video = False
    tiny_max_sequence_length = TEXT_TOKENS

    def __init__(self, pipeline: _WanImageToVideo | TransformerOnly, max_sequence_length: int) -> None:
        if max_sequence_length != TEXT_TOKENS:
            raise ConfigError(
                f"max_sequence_length: {self.name} needs {TEXT_TOKENS} (diffusers' Wan attention splits the "
                f"image tokens from the text at {TEXT_TOKENS} text tokens), not {max_sequence_length}"
            )
        super().__init__(pipeline, max_sequence_length)

    # ----- tiny config -------------------------------------------------------------------------
    @staticmethod
    def _tiny_transformer_module(seed: int) -> WanTransformer3DModel:
        return tiny_wan_transformer(
            seed,
            in_channels=36,  # 16 latent + 4 mask + 16 condition channels
            image_dim=16,  # the tiny CLIP's hidden size
            added_kv_proj_dim=24,  # the transformer's width (2 heads x 12), as at real size
        )

    @classmethod
    def tiny(cls, seed: int = 0) -> Wan21I2VBackbone:
        transformer = cls._tiny_transformer_module(seed)
        torch.manual_seed(seed)
        vae = tiny_wan_vae()
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=16,
                intermediate_size=37,
                projection_dim=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=32,
                patch_size=16,
            )
        )
        pipeline = _WanImageToVideo(
            tokenizer=word_tokenizer(16),
            text_encoder=UMT5EncoderModel(tiny_t5_config()),
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            image_processor=CLIPImageProcessor(
                size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
            ),
            image_encoder=image_encoder,
            transformer=transformer,
        )
        return cls(pipeline, max_sequence_length=cls.tiny_max_sequence_length)

    # ----- image-to-video ------------------------------------------------------------------------
    def image_pipeline(self) -> _WanImageToVideo:
        return self.pipeline

    @torch.no_grad()
    def encode_image_condition(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """``latents``: the pipeline's condition latents (as Wan2.2 I2V-A14B's); ``image_embeds``:
        ``WanImageToVideoPipeline.encode_image`` of each clip's first frame, given as the pipeline
        gets a photo (an RGB image; its CLIP processor resizes and crops it)."""
        frames = [Image.fromarray(np.asarray(clip[0].cpu(), dtype=np.uint8)) for clip in video]
        tokens = self.pipeline.encode_image(frames, self.pipeline.image_encoder.device).float()
        return {"latents": image_condition_latents(self, video), "image_embeds": tokens}

    def transformer_kwargs(
        self, conditioning: dict[str, torch.Tensor], noisy_latents: torch.Tensor
    ) -> dict[str, Any]:
        if "image_embeds" not in conditioning:
            raise ValueError(f"{self.name} needs the first frame's CLIP tokens: conditioning['image_embeds']")
        return {
            **super().transformer_kwargs(conditioning, noisy_latents),
            "encoder_hidden_states_image": conditioning["image_embeds"].to(noisy_latents.dtype),
        }

    def predict(
        self,
        noisy_latents: torch.Tensor,
        sigma: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
        first_frame: ImageCondition | None = None,
    ) -> torch.Tensor:
        """``first_frame``: the cached image condition, batched: ``latents`` (B, C, F, H, W), the
        condition latents (the mask marks latent frame 0), and ``image_embeds``, the CLIP tokens of the
        same frame (beside the text, untouched by caption dropout)."""
        if not isinstance(first_frame, dict):
            raise ValueError(f"{self.name} is image-to-video only: it needs the cached image condition")
        conditioning = {**conditioning, "image_embeds": first_frame["image_embeds"]}
        inputs = with_image_channels(noisy_latents, first_frame["latents"])
        return super().predict(inputs, sigma, conditioning)
