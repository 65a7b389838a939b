"""HunyuanVideo-1.5 image-to-video (``HunyuanVideo15ImageToVideoPipeline``): the text-to-video
backbone's transformer layout, text encoders and VAE (:mod:`dreamrelation.backbones.hunyuan15`), plus
a SigLIP image encoder. Image-to-video only: the checkpoint is trained with an image.

What is conditioned, exactly as the pipeline conditions it (training calls the transformer the same way):

* **the input channels**: ``[noisy latents, condition latents, mask]``. The condition latents are the
  image through the VAE alone (its mode, times ``scaling_factor``) on latent frame 0 and zeros after
  it; the mask is 1 on latent frame 0, 0 after it.
* **the SigLIP tokens** of the image (the vision model's last hidden state; 729 in the released
  model) join the text tokens in the attention (non-zero tokens are not masked out).
* **the text**, as in text-to-video (Qwen2.5-VL + ByT5).

What is not: the first latent frame is not replaced by the image (unlike Wan2.2 TI2V-5B and LTX-2):
it is noised and denoised like every other frame, so every frame, the first included, stays in the
loss. Classifier-free guidance drops only the text (the pipeline gives both branches the image), and
so does caption dropout in training. The image is each clip's own first frame; the cache stores its
condition latents and SigLIP tokens (:meth:`encode_image_condition`), so the image encoder never runs
in training.

The pipeline takes no height/width: it picks the video's size from the image's aspect ratio and the
transformer's ``target_size`` (640 for 480p). ``generate`` passes its height/width anyway; the
pipeline here only checks that they are the size the pipeline picks, so its video is the plain one.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import HunyuanVideo15ImageToVideoPipeline
from PIL import Image
from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

from dreamrelation.backbones.hunyuan15 import HunyuanVideo15Backbone
from dreamrelation.errors import ConfigError

HUNYUAN15_480P_I2V = "hunyuanvideo-community/HunyuanVideo-1.5-480p_i2v"


class _HunyuanVideo15ImageToVideo(HunyuanVideo15ImageToVideoPipeline):
    """diffusers' pipeline, accepting the ``height``/``width`` every ``generate`` call passes: it picks
    the size itself (the ``target_size`` bucket nearest the image's aspect ratio), so these are only
    checked against it; the video is the plain pipeline's."""

    def __call__(
        self,
        image: Image.Image,
        *args: Any,
        height: int | None = None,
        width: int | None = None,
        **kwargs: Any,
    ) -> Any:
        if height is not None and width is not None and isinstance(image, Image.Image):
            picked = self.video_processor.calculate_default_height_width(
                height=image.size[1], width=image.size[0], target_size=self.target_size
            )
            if (int(picked[0]), int(picked[1])) != (height, width):
                raise ConfigError(
                    f"height/width: HunyuanVideo-1.5 I2V renders a {width}x{height} image at "
                    f"{picked[1]}x{picked[0]} (its size for that aspect ratio at target size "
                    f"{self.target_size}); set --width {picked[1]} --height {picked[0]}"
                )
        return super().__call__(image, *args, **kwargs)


class HunyuanVideo15I2VBackbone(HunyuanVideo15Backbone):
    """HunyuanVideo-1.5 I2V: see the module docstring for what is and is not conditioned."""

    name = "hunyuan15_i2v"
    pipeline_class = _HunyuanVideo15ImageToVideo
    hub_id = HUNYUAN15_480P_I2V
    image_to_video = True
    image_replaces_first_frame = False  # condition channels + SigLIP tokens; every frame is denoised
    text_to_video = False
    # 32 x 32 (the tests' video) is a size the pipeline picks at target size 32
    tiny_target_size = 32
    tiny_task_type = "i2v"

    @classmethod
    def _tiny_components(cls, seed: int) -> dict[str, Any]:
        parts = super()._tiny_components(seed)
        vision = SiglipVisionConfig(
            hidden_size=parts["transformer"].config.image_embed_dim,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=4,  # 16 image tokens (the released model: 729)
        )
        parts["image_encoder"] = SiglipVisionModel(vision)
        parts["feature_extractor"] = SiglipImageProcessor(size={"height": 16, "width": 16})
        return parts

    def image_pipeline(self) -> HunyuanVideo15ImageToVideoPipeline:
        return self.pipeline

    @torch.no_grad()
    def encode_image_condition(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each clip's first frame as the pipeline encodes its image (its own two encoders, called
        as it calls them): ``latents`` (B, C, 1, h, w), the VAE's mode times ``scaling_factor``, and
        ``image_embeds`` (B, tokens, dim), the SigLIP tokens."""
        pipe = self.pipeline
        height, width = int(video.shape[2]), int(video.shape[3])
        latents, tokens = [], []
        for clip in video:
            image = Image.fromarray(clip[0].cpu().numpy())
            latents.append(
                pipe._get_image_latents(pipe.vae, pipe.video_processor, image, height, width, pipe.vae.device)
            )
            tokens.append(
                pipe._get_image_embeds(
                    pipe.image_encoder, pipe.feature_extractor, image, pipe.image_encoder.device
                )
            )
        return {"latents": torch.cat(latents).float(), "image_embeds": torch.cat(tokens).float()}

    def predict(
        self,
        noisy_latents: torch.Tensor,
        sigma: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
        first_frame: Any = None,
    ) -> torch.Tensor:
        """``first_frame``: the cached image condition, batched (``latents`` and ``image_embeds``)."""
        if not isinstance(first_frame, dict):
            raise ValueError(
                f"{self.name} is image-to-video only: it needs the cached image condition "
                "(condition latents and SigLIP tokens)"
            )
        conditioning = {**conditioning, "image_embeds": first_frame["image_embeds"]}
        return super().predict(noisy_latents, sigma, conditioning, first_frame)

    def condition_channels(
        self, noisy_latents: torch.Tensor, first_frame: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline's ``prepare_cond_latents_and_mask``: the image latents on frame 0, mask 1 there."""
        b, _, f, h, w = noisy_latents.shape
        condition = torch.zeros_like(noisy_latents)
        condition[:, :, :1] = first_frame["latents"].to(noisy_latents.dtype)
        mask = noisy_latents.new_zeros(b, 1, f, h, w)
        mask[:, :, 0] = 1.0
        return condition, mask
