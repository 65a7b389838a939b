"""LTX-2: one transformer for video *and* audio tokens, Gemma 3 + text connectors, a 8x/32x VAE.

* **The relation is learned on the video stream.** The LoRA sits on the video self-attention
  (``attn1``) and the video cross-attention to the text (``attn2``); the audio stream's attention
  layers and the audio<->video cross-attention carry none.
* **Audio tokens in training.** Exemplar clips have no usable sound, so training calls the
  transformer with ``isolate_modalities=True``: the audio->video and video->audio cross-attention are
  off, the audio tokens (zeros) cannot reach the video tokens, and only the video output enters the
  loss. This is a mode the model knows: the pipeline's own modality guidance asks it for exactly
  this isolated video prediction at every sampling step.
* **Generation** runs the full audio-video pipeline: the video is sampled jointly with its audio
  (cross-attention on), and the audio is written beside the MP4 as a WAV file.
* The text conditioning the transformer reads is the *connectors'* output (per stream), so the cache
  stores that (the connectors are frozen), not Gemma's raw hidden states.
* Latents are packed to tokens for the transformer; ``predict`` packs and unpacks, so the trainer
  keeps working on (B, C, F, H, W) latents like for every other backbone.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    FlowMatchEulerDiscreteScheduler,
    LTX2ImageToVideoPipeline,
    LTX2Pipeline,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2TextConnectors
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

from dreamrelation.backbones import layouts
from dreamrelation.backbones.base import Backbone
from dreamrelation.backbones.tiny_text import word_tokenizer

LTX2_HUB = "Lightricks/LTX-2"
#: the pipeline's default frame rate, which training assumes too (positions of video and audio tokens)
FRAME_RATE = 24.0


class LTX2Backbone(Backbone):
    name = "ltx2"
    pipeline_class = LTX2Pipeline
    transformer_class = LTX2VideoTransformer3DModel
    streams = layouts.streams("ltx2")  # the video stream only (module docstring)
    temporal_factor = 8
    spatial_factor = 32
    first_frame_alone = True
    flow_convention = "noise_minus_data"
    hub_id = LTX2_HUB
    audio_sample_rate = 24000  # the vocoder's output rate (the tiny one's: 16000, read from it)
    image_to_video = True  # the same weights, through LTX2ImageToVideoPipeline

    def __init__(
        self, pipeline: Any, max_sequence_length: int, sampling: dict[str, Any] | None = None
    ) -> None:
        super().__init__(pipeline, max_sequence_length)
        #: extra sampling arguments of the pipeline (the tiny model has no block 28 for its STG default)
        self.sampling = dict(sampling or {})

    @classmethod
    def default_max_sequence_length(cls) -> int:
        return 1024  # the pipeline's default

    @staticmethod
    def _tiny_transformer_module(seed: int) -> LTX2VideoTransformer3DModel:
        torch.manual_seed(seed)
        return LTX2VideoTransformer3DModel(
            in_channels=4,
            out_channels=4,
            num_attention_heads=2,
            attention_head_dim=8,
            cross_attention_dim=16,
            vae_scale_factors=(8, 32, 32),
            audio_in_channels=4,  # 2 latent channels x 2 latent mel bins
            audio_out_channels=4,
            audio_num_attention_heads=2,
            audio_attention_head_dim=4,
            audio_cross_attention_dim=8,
            num_layers=2,
            caption_channels=16,
            rope_double_precision=False,
            rope_type="split",
        )

    @classmethod
    def tiny(cls, seed: int = 0) -> LTX2Backbone:
        transformer = cls._tiny_transformer_module(seed)
        text = Gemma3TextConfig(
            vocab_size=512,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=64,
            sliding_window=16,
            pad_token_id=0,
            bos_token_id=3,
            eos_token_id=1,
        )
        vision = SiglipVisionConfig(
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        )
        text_encoder = Gemma3ForConditionalGeneration(
            Gemma3Config(
                text_config=text,
                vision_config=vision,
                mm_tokens_per_image=4,
                image_token_index=5,
                boi_token_index=6,
                eoi_token_index=7,
            )
        )
        connectors = LTX2TextConnectors(
            caption_channels=16,
            text_proj_in_factor=text.num_hidden_layers + 1,
            video_connector_num_attention_heads=4,
            video_connector_attention_head_dim=4,
            video_connector_num_layers=1,
            video_connector_num_learnable_registers=None,
            audio_connector_num_attention_heads=4,
            audio_connector_attention_head_dim=4,
            audio_connector_num_layers=1,
            audio_connector_num_learnable_registers=None,
            connector_rope_base_seq_len=32,
            rope_double_precision=False,
            rope_type="split",
        )
        vae = AutoencoderKLLTX2Video(  # LTX-2's strides: patch 4, then space, time, both, both
            latent_channels=4,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 16, 32),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1),
            decoder_causal=False,
            decoder_spatial_padding_mode="zeros",
            spatial_compression_ratio=32,
            temporal_compression_ratio=8,
        )
        audio_vae = AutoencoderKLLTX2Audio(
            base_channels=4,
            output_channels=2,
            ch_mult=(1,),
            num_res_blocks=1,
            attn_resolutions=None,
            in_channels=2,
            resolution=32,
            latent_channels=2,
            norm_type="pixel",
            causality_axis="height",
            dropout=0.0,
            mid_block_add_attention=False,
            sample_rate=16000,
            mel_hop_length=160,
            is_causal=True,
            mel_bins=8,
        )
        vocoder = LTX2Vocoder(
            in_channels=2 * 8,
            hidden_channels=32,
            out_channels=2,
            upsample_kernel_sizes=[4, 4],
            upsample_factors=[2, 2],
            resnet_kernel_sizes=[3],
            resnet_dilations=[[1, 3, 5]],
            leaky_relu_negative_slope=0.1,
            output_sampling_rate=16000,
        )
        pipeline = LTX2Pipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(),
            vae=vae,
            audio_vae=audio_vae,
            text_encoder=text_encoder,
            tokenizer=word_tokenizer(16),
            connectors=connectors,
            transformer=transformer,
            vocoder=vocoder,
        )
        # The real defaults add spatio-temporal guidance at block 28 and LTX-2.3's cross-timestep
        # modulation; the two-block tiny model samples with plain CFG.
        sampling = {
            "stg_scale": 0.0,
            "spatio_temporal_guidance_blocks": None,
            "modality_scale": 1.0,
            "guidance_rescale": 0.0,
            "audio_guidance_scale": 1.0,
            "audio_stg_scale": 0.0,
            "audio_modality_scale": 1.0,
            "audio_guidance_rescale": 0.0,
            "use_cross_timestep": False,
        }
        return cls(pipeline, max_sequence_length=cls.tiny_max_sequence_length, sampling=sampling)

    # ----- text: Gemma 3, then the frozen connectors (what the transformer reads) ---------------
    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        pipe = self.pipeline
        embeds, mask, _, _ = pipe.encode_prompt(
            prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
            device=pipe.text_encoder.device,
        )
        video, audio, connector_mask = pipe.connectors(embeds, mask, padding_side=pipe.tokenizer.padding_side)
        return {
            "prompt_embeds": video.float(),
            "audio_prompt_embeds": audio.float(),
            "prompt_attention_mask": connector_mask,
        }

    def transformer_kwargs(
        self, conditioning: dict[str, torch.Tensor], noisy_latents: torch.Tensor
    ) -> dict[str, Any]:
        dtype = noisy_latents.dtype
        return {
            "encoder_hidden_states": conditioning["prompt_embeds"].to(dtype),
            "audio_encoder_hidden_states": conditioning["audio_prompt_embeds"].to(dtype),
            "encoder_attention_mask": conditioning["prompt_attention_mask"],
            "audio_encoder_attention_mask": conditioning["prompt_attention_mask"],
        }

    def audio_tokens(self, latent_frames: int) -> int:
        """Audio latent frames of a clip of ``latent_frames`` video latent frames (the pipeline's rule)."""
        cfg = self.transformer.config
        num_frames = (latent_frames - 1) * self.temporal_factor + 1
        per_second = cfg.audio_sampling_rate / cfg.audio_hop_length / cfg.audio_scale_factor
        return round(num_frames / FRAME_RATE * per_second)

    def predict(
        self,
        noisy_latents: torch.Tensor,
        sigma: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
        first_frame: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The video stream's flow: tokens packed as the pipeline packs them, the audio stream cut off
        (``isolate_modalities``; module docstring), the output unpacked to (B, C, F, H, W).

        With ``first_frame`` (image-to-video, as ``LTX2ImageToVideoPipeline``): the first latent frame
        is the clean image latent and its tokens' timestep is 0."""
        b, _, f, h, w = noisy_latents.shape
        pt, ph, _ = self.patch_size()
        if first_frame is not None:
            noisy_latents = torch.cat([first_frame.to(noisy_latents.dtype), noisy_latents[:, :, 1:]], dim=2)
        tokens = LTX2Pipeline._pack_latents(noisy_latents, ph, pt)
        audio_frames = self.audio_tokens(f)
        audio = tokens.new_zeros(b, audio_frames, self.transformer.config.audio_in_channels)
        timestep = self.model_timestep(sigma).to(tokens.dtype)
        video_timestep = timestep
        if first_frame is not None:
            video_timestep = timestep[:, None, None].expand(-1, f // pt, (h // ph) * (w // ph)).clone()
            video_timestep[:, 0] = 0
            video_timestep = video_timestep.flatten(1)
        video, _ = self.transformer(
            hidden_states=tokens,
            audio_hidden_states=audio,
            timestep=video_timestep,
            audio_timestep=timestep,
            sigma=timestep,
            num_frames=f // pt,
            height=h // ph,
            width=w // ph,
            fps=FRAME_RATE,
            audio_num_frames=audio_frames,
            isolate_modalities=True,
            use_cross_timestep=bool(self.sampling.get("use_cross_timestep", True)),
            return_dict=False,
            **self.transformer_kwargs(conditioning, tokens),
        )
        return LTX2Pipeline._unpack_latents(video, f // pt, h // ph, w // ph, ph, pt)

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        return LTX2Pipeline._normalize_latents(
            latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor
        )

    def image_pipeline(self) -> LTX2ImageToVideoPipeline:
        """``LTX2ImageToVideoPipeline`` on the same models."""
        if getattr(self, "_image_pipeline", None) is None:
            names = ("scheduler", "vae", "audio_vae", "text_encoder", "tokenizer", "connectors")
            parts = {name: getattr(self.pipeline, name) for name in (*names, "transformer", "vocoder")}
            self._image_pipeline = LTX2ImageToVideoPipeline(**parts)
        return self._image_pipeline

    def sound_rate(self) -> int:
        """The sample rate of the generated sound, from the vocoder's config."""
        config = self.pipeline.vocoder.config
        return int(getattr(config, "output_sampling_rate", None) or self.audio_sample_rate)

    def pipeline_kwargs(self, guidance_scale: float) -> dict[str, Any]:
        return {
            "guidance_scale": guidance_scale,
            "max_sequence_length": self.max_sequence_length,
            "frame_rate": FRAME_RATE,
            **self.sampling,
        }
