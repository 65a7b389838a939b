"""Wan2.2: TI2V-5B (its own 16x VAE, one timestep per token) and A14B (two experts split by noise).

Both keep Wan2.1's attention layout (self-attention over vision tokens, cross-attention to UMT5 text
tokens), so the relation LoRA sits on the same projections (``layouts.streams("wan")``).

* **TI2V-5B** (``wan22_5b``): the pipeline runs with ``expand_timesteps``: the transformer gets one
  timestep per vision token (the first latent frame's is 0 when an image conditions it). Training
  feeds the same per-token form, so what is learned is what the pipeline asks for. Its VAE
  compresses space 16x (8x in the encoder, times a 2x2 patchify) to 48 channels.
* **A14B** (``wan22_a14b``): two 14B experts. ``transformer`` denoises timesteps at or above
  ``boundary_ratio x 1000`` (high noise: layout, motion), ``transformer_2`` the rest (low noise:
  detail). A relation is learned as **one triplet per expert, each trained on its own noise range**,
  in one run: every step draws σ as usual and the sample goes to the expert that owns σ at sampling
  time, so each expert's LoRA only ever sees the noise levels it will denoise (what the Wan2.2 LoRA
  trainers do with two runs, here in one). See docs/wan22.md.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import UMT5EncoderModel

from dreamrelation.backbones import layouts
from dreamrelation.backbones.base import TransformerOnly
from dreamrelation.backbones.tiny_text import tiny_t5_config, word_tokenizer
from dreamrelation.backbones.wan import WanBackbone, tiny_wan_transformer, tiny_wan_vae
from dreamrelation.errors import InputError

#: the diffusers pipelines of the public checkpoints
WAN22_5B = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
WAN22_A14B = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
WAN22_I2V_A14B = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
#: A14B's experts: name -> the pipeline component holding it, highest noise first
EXPERTS: dict[str, str] = {"high_noise": "transformer", "low_noise": "transformer_2"}


def _tiny_text() -> dict[str, Any]:
    return {"tokenizer": word_tokenizer(16), "text_encoder": UMT5EncoderModel(tiny_t5_config())}


@torch.no_grad()
def image_condition_latents(backbone: WanBackbone, video: torch.Tensor) -> torch.Tensor:
    """``WanImageToVideoPipeline``'s condition latents (without ``expand_timesteps``): the video
    [first frame, black ...] through the VAE (its mode), normalised as the latents are. ``video``:
    (B, F, H, W, 3) uint8 frames."""
    vae = backbone.vae
    x = video.permute(0, 4, 1, 2, 3).to(device=vae.device, dtype=vae.dtype) / 127.5 - 1.0
    x[:, :, 1:] = 0.0  # the pipeline pads the image with zeros (in [-1, 1]) to the video's length
    return backbone.normalize_latents(vae.encode(x).latent_dist.mode().float())


def with_image_channels(noisy_latents: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """The transformer input the image-to-video pipeline builds: the noisy latents, a 4-channel mask
    (1 on the first latent frame: the given image) and the condition latents, on the channels."""
    mask = torch.zeros_like(noisy_latents[:, :4])
    mask[:, :, 0] = 1.0
    return torch.cat([noisy_latents, mask, condition.to(noisy_latents.dtype)], dim=1)


class _WanImageToVideo(WanImageToVideoPipeline):
    """diffusers' image-to-video pipeline with ``WanPipeline``'s prompt encoding: the same UMT5 call,
    but the image pipeline's own cleans the text with ``ftfy`` unconditionally, which diffusers does
    not install (``WanPipeline`` skips it when absent, so both encode the same way without ftfy)."""

    _get_t5_prompt_embeds = WanPipeline._get_t5_prompt_embeds


class Wan22TI2VBackbone(WanBackbone):
    """Wan2.2 TI2V-5B in its text-to-video form."""

    name = "wan22_5b"
    spatial_factor = 16  # 8x in the VAE encoder times its 2x2 patchify
    image_to_video = True  # the same weights, through WanImageToVideoPipeline
    hub_id = WAN22_5B

    @staticmethod
    def _tiny_transformer_module(seed: int) -> WanTransformer3DModel:
        return tiny_wan_transformer(seed, 8)

    @classmethod
    def tiny(cls, seed: int = 0) -> Wan22TI2VBackbone:
        transformer = cls._tiny_transformer_module(seed)
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(  # the 5B VAE's form: residual blocks, 12 = 3 x 2 x 2 patchified channels
            base_dim=12,
            z_dim=8,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=[0.0] * 8,
            latents_std=[1.0] * 8,
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            scale_factor_spatial=16,
        )
        pipeline = WanPipeline(
            **_tiny_text(),
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
            transformer=transformer,
            expand_timesteps=True,
        )
        return cls(pipeline, max_sequence_length=cls.tiny_max_sequence_length)

    def predict(
        self,
        noisy_latents: torch.Tensor,
        sigma: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
        first_frame: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """As the pipelines call it under ``expand_timesteps``: one timestep per vision token. With
        ``first_frame`` (image-to-video, as ``WanImageToVideoPipeline``): the first latent frame is
        the clean image latent and its tokens' timestep is 0."""
        frames, rows, cols = self.token_grid(noisy_latents.shape)
        timestep = self.model_timestep(sigma).to(noisy_latents.dtype)
        timestep = timestep[:, None, None].expand(-1, frames, rows * cols).clone()
        if first_frame is not None:
            noisy_latents = torch.cat([first_frame.to(noisy_latents.dtype), noisy_latents[:, :, 1:]], dim=2)
            timestep[:, 0] = 0
        timestep = timestep.flatten(1)
        return self.transformer(
            hidden_states=noisy_latents,
            timestep=timestep,
            return_dict=False,
            **self.transformer_kwargs(conditioning, noisy_latents),
        )[0]

    def image_pipeline(self) -> WanImageToVideoPipeline:
        """``WanImageToVideoPipeline`` on the same models (TI2V-5B needs no image encoder: the image
        enters as the first latent frame)."""
        pipe = self.pipeline
        if getattr(self, "_image_pipeline", None) is None:
            self._image_pipeline = _WanImageToVideo(
                tokenizer=pipe.tokenizer,
                text_encoder=pipe.text_encoder,
                vae=pipe.vae,
                scheduler=pipe.scheduler,
                transformer=pipe.transformer,
                expand_timesteps=True,
            )
        return self._image_pipeline


class WanExperts(torch.nn.Module):
    """Wan2.2 A14B's two experts as one module: each sample goes to the expert owning its timestep.

    The experts are the pipeline's own ``transformer`` and ``transformer_2`` (the same objects), so
    adapters added here are the ones the pipeline samples with. Module names gain the expert's name
    (``high_noise.blocks.0.attn1.to_q``).
    """

    def __init__(
        self, high_noise: torch.nn.Module, low_noise: torch.nn.Module, boundary_ratio: float
    ) -> None:
        super().__init__()
        self.high_noise = high_noise
        self.low_noise = low_noise
        self.boundary_timestep = float(boundary_ratio) * 1000.0
        # the repeated blocks (gradient checkpointing, block offload, FSDP) are the experts' blocks
        self._no_split_modules = list(getattr(high_noise, "_no_split_modules", None) or [])

    @property
    def experts(self) -> dict[str, torch.nn.Module]:
        return {"high_noise": self.high_noise, "low_noise": self.low_noise}

    @property
    def config(self) -> Any:
        return self.high_noise.config

    @property
    def dtype(self) -> torch.dtype:
        return self.high_noise.dtype

    @property
    def device(self) -> torch.device:
        return self.high_noise.device

    def expert_of(self, timestep: torch.Tensor) -> torch.Tensor:
        """True where a sample belongs to the high-noise expert (the pipeline's ``t >= boundary``)."""
        per_sample = timestep if timestep.ndim == 1 else timestep.amax(dim=1)
        return per_sample >= self.boundary_timestep

    def forward(
        self, hidden_states: torch.Tensor, timestep: torch.Tensor, return_dict: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor]:
        high = self.expert_of(timestep)
        if bool(high.all()) or bool((~high).all()):
            expert = self.high_noise if bool(high.all()) else self.low_noise
            out = expert(hidden_states=hidden_states, timestep=timestep, return_dict=False, **kwargs)[0]
            return (out,)
        out = torch.empty_like(hidden_states)
        for expert, rows in ((self.high_noise, high), (self.low_noise, ~high)):
            index = rows.nonzero().flatten()
            part = {k: v[index] if torch.is_tensor(v) else v for k, v in kwargs.items()}
            out[index] = expert(
                hidden_states=hidden_states[index], timestep=timestep[index], return_dict=False, **part
            )[0].to(out.dtype)
        return (out,)

    def add_adapter(self, adapter_config: Any, adapter_name: str) -> None:
        """peft's ``add_adapter`` on each expert, for the modules of ``adapter_config``'s (full-match)
        ``target_modules`` regex that lie inside it."""
        pattern = re.compile(adapter_config.target_modules)
        for expert_name, expert in self.experts.items():
            inside = [
                name for name, _ in expert.named_modules() if pattern.fullmatch(f"{expert_name}.{name}")
            ]
            if inside:
                config = copy.deepcopy(adapter_config)
                config.target_modules = "|".join(re.escape(name) for name in inside)
                expert.add_adapter(config, adapter_name=adapter_name)

    def enable_gradient_checkpointing(self, gradient_checkpointing_func: Any = None) -> None:
        for expert in self.experts.values():
            if gradient_checkpointing_func is None:
                expert.enable_gradient_checkpointing()
            else:
                expert.enable_gradient_checkpointing(gradient_checkpointing_func)

    def enable_layerwise_casting(self, **kwargs: Any) -> None:
        for expert in self.experts.values():
            expert.enable_layerwise_casting(**kwargs)


class Wan22A14BBackbone(WanBackbone):
    """Wan2.2 A14B text-to-video: two experts, one relation triplet each (see the module docstring)."""

    name = "wan22_a14b"
    # the same Wan projections inside each expert
    streams = layouts.streams("wan", prefix=r"(?:high_noise|low_noise)\.")
    hub_id = WAN22_A14B
    experts: ClassVar[tuple[str, ...]] = tuple(EXPERTS)
    lora_components = tuple(EXPERTS.values())
    expert_components = EXPERTS

    def __init__(self, pipeline: Any, max_sequence_length: int) -> None:
        super().__init__(pipeline, max_sequence_length)
        if isinstance(pipeline, TransformerOnly):
            self._experts = pipeline.transformer
        else:
            self._experts = WanExperts(
                pipeline.transformer, pipeline.transformer_2, pipeline.config.boundary_ratio
            )

    @property
    def transformer(self) -> WanExperts:
        return self._experts

    def expert_module(self, expert: str) -> torch.nn.Module:
        return self._experts.experts[expert]

    # ----- loading ---------------------------------------------------------------------------
    @classmethod
    def _check_experts(cls, model: str) -> float:
        """The checkpoint's boundary ratio; an InputError if an expert (or the ratio) is missing."""
        folder = Path(model)
        if folder.is_dir():
            index_path = folder / "model_index.json"
            index = json.loads(index_path.read_text()) if index_path.is_file() else {}
            for component in EXPERTS.values():
                spec = index.get(component)
                if not (folder / component / "config.json").is_file() or not spec or spec[0] is None:
                    raise InputError(
                        folder / component,
                        f"this Wan2.2 A14B checkpoint has no {component} (one of its two experts)",
                        f"download the complete checkpoint ({WAN22_A14B}) or use --backbone wan22_5b / wan "
                        "for a single-transformer model",
                    )
        else:
            from diffusers import DiffusionPipeline

            index = DiffusionPipeline.load_config(model)
        ratio = index.get("boundary_ratio")
        if ratio is None:
            raise InputError(
                Path(model) / "model_index.json",
                "has no boundary_ratio, so it is not a two-expert Wan2.2 A14B pipeline",
                "use --backbone wan for Wan2.1, or the complete Wan2.2 A14B checkpoint",
            )
        return float(ratio)

    @classmethod
    def from_pretrained(
        cls, model: str, torch_dtype: torch.dtype = torch.float32, max_sequence_length: int | None = None
    ) -> Wan22A14BBackbone:
        cls._check_experts(model)
        return super().from_pretrained(model, torch_dtype, max_sequence_length)  # type: ignore[return-value]

    @classmethod
    def transformer_from_pretrained(
        cls, model: str, torch_dtype: torch.dtype = torch.float32, max_sequence_length: int | None = None
    ) -> Wan22A14BBackbone:
        ratio = cls._check_experts(model)
        experts = [
            WanTransformer3DModel.from_pretrained(model, subfolder=component, torch_dtype=torch_dtype)
            for component in EXPERTS.values()
        ]
        return cls(
            TransformerOnly(WanExperts(*experts, ratio)),
            max_sequence_length or cls.default_max_sequence_length(),
        )

    @staticmethod
    def _tiny_experts(seed: int) -> tuple[WanTransformer3DModel, WanTransformer3DModel]:
        return tiny_wan_transformer(seed, 16), tiny_wan_transformer(seed + 1, 16)

    #: the tiny config's boundary ratio (the released checkpoints': 0.875 text-to-video, 0.9 image-to-video)
    tiny_boundary_ratio = 0.875

    @classmethod
    def _tiny_transformer_module(cls, seed: int) -> WanExperts:
        return WanExperts(*cls._tiny_experts(seed), cls.tiny_boundary_ratio)

    @classmethod
    def tiny(cls, seed: int = 0) -> Wan22A14BBackbone:
        high, low = cls._tiny_experts(seed)
        vae = tiny_wan_vae()
        pipeline = cls.pipeline_class(
            **_tiny_text(),
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            transformer=high,
            transformer_2=low,
            boundary_ratio=cls.tiny_boundary_ratio,
        )
        return cls(pipeline, max_sequence_length=cls.tiny_max_sequence_length)


class Wan22I2VA14BBackbone(Wan22A14BBackbone):
    """Wan2.2 I2V-A14B: the A14B experts (one triplet each) of the image-to-video checkpoint.

    The image enters on the input channels, as ``WanImageToVideoPipeline`` feeds it: the noisy
    latents, then a 4-channel mask (1 on the first latent frame), then the VAE latents of the video
    [image, black, black, ...] (no image encoder in Wan2.2). That last tensor is not the clip's own
    latents beyond frame 0, so the cache stores it (:meth:`encode_image_condition`); every frame,
    the first included, stays in the loss (the model denoises it too).
    """

    name = "wan22_a14b_i2v"
    pipeline_class = _WanImageToVideo
    hub_id = WAN22_I2V_A14B
    image_to_video = True
    image_replaces_first_frame = False
    text_to_video = False
    tiny_boundary_ratio = 0.9

    @staticmethod
    def _tiny_experts(seed: int) -> tuple[WanTransformer3DModel, WanTransformer3DModel]:
        # 16 latent + 4 mask + 16 condition channels in, 16 out
        high, low = (tiny_wan_transformer(s, 16, in_channels=36) for s in (seed, seed + 1))
        return high, low

    def image_pipeline(self) -> WanImageToVideoPipeline:
        return self.pipeline

    def encode_image_condition(self, video: torch.Tensor) -> torch.Tensor:
        return image_condition_latents(self, video)

    def predict(
        self,
        noisy_latents: torch.Tensor,
        sigma: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
        first_frame: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``first_frame``: the cached condition latents (B, C, F, H, W); the mask marks latent frame 0."""
        if first_frame is None:
            raise ValueError(f"{self.name} is image-to-video only: it needs the image condition")
        return super().predict(with_image_channels(noisy_latents, first_frame), sigma, conditioning)
