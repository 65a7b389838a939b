"""The one small interface every video backbone implements.

Everything backbone-specific (module names, VAE factors, flow convention, text encoders) lives in
one module per backbone; nothing outside ``dreamrelation.backbones`` branches on a backbone's name.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from diffusers import DiffusionPipeline

from dreamrelation.backbones import layouts
from dreamrelation.data.masks import temporal_groups

Role = Literal["q", "k", "v", "out"]
ROLES: tuple[Role, ...] = layouts.ROLES  # type: ignore[assignment]

# The two flow-matching conventions in use. Both noise as z_s = (1 - s) z + s eps (s = noise level).
#  * "data_minus_noise" (genmo Mochi): the model sees timestep (1 - s) * 1000 and predicts u = z - eps.
#  * "noise_minus_data" (Wan, HunyuanVideo, SD3-style): timestep s * 1000, prediction v = eps - z.
FlowConvention = Literal["data_minus_noise", "noise_minus_data"]


def _is_linear(module: torch.nn.Module) -> bool:
    """A Linear layer, or a peft LoRA wrapper around one (after load_lora_weights / add_adapter)."""
    return isinstance(module, torch.nn.Linear) or isinstance(
        getattr(module, "base_layer", None), torch.nn.Linear
    )


class TransformerOnly:
    """Stands in for the pipeline when only the transformer is loaded (training from a cache).

    The text encoders and the VAE are never instantiated; asking for one names the reason.
    """

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer

    @property
    def components(self) -> dict[str, Any]:
        return {"transformer": self.transformer}

    def to(self, *args: Any, **kwargs: Any) -> TransformerOnly:
        self.transformer.to(*args, **kwargs)
        return self

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"{name!r} is not loaded: this backbone holds only the transformer (training reads the "
            "cache); load it with components='all' to encode prompts, encode videos or sample"
        )


class Backbone(ABC):
    """A diffusers video pipeline plus the facts DreamRelation needs about it.

    Subclasses set the class attributes and implement the few methods that differ between
    backbones; the shared logic (noising, targets, module discovery) lives here.
    """

    name: ClassVar[str]
    pipeline_class: ClassVar[type[DiffusionPipeline]]
    transformer_class: ClassVar[type[torch.nn.Module]]
    #: token stream -> (attention-module regex, full match; role -> projection name inside it),
    #: from the one table of attention layouts (``layouts.streams(family)``)
    streams: ClassVar[dict[str, tuple[str, dict[str, str]]]]
    temporal_factor: ClassVar[int]
    spatial_factor: ClassVar[int]
    first_frame_alone: ClassVar[bool] = True
    flow_convention: ClassVar[FlowConvention]
    num_train_timesteps: ClassVar[int] = 1000
    #: relation -> caption template ("{a} is shaking hands with {b}") where the backbone's own data
    #: captions its relations its own way (the toy world); None: NTU's templates
    caption_templates: ClassVar[dict[str, str] | None] = None
    #: the pipeline also generates sound (``output.audio``), at this sample rate; None: video only
    audio_sample_rate: ClassVar[int | None] = None
    #: has an image-to-video form: ``predict(first_frame=...)`` and :meth:`image_pipeline` work
    image_to_video: ClassVar[bool] = False
    #: image-to-video by replacing the first latent frame with the clean image latent (TI2V-5B,
    #: LTX-2; that frame then leaves the loss); False: the image enters otherwise (extra input
    #: channels, Wan2.2 I2V-A14B), from what :meth:`encode_image_condition` put in the cache
    image_replaces_first_frame: ClassVar[bool] = True
    #: also generates from text alone (an image-to-video-only checkpoint sets False)
    text_to_video: ClassVar[bool] = True
    #: the public diffusers checkpoint (README's backbone table; ``--model`` takes any other)
    hub_id: ClassVar[str | None] = None
    #: (tokenizer, text encoder) component names of the pipeline, in encoding order
    text_encoders: ClassVar[tuple[tuple[str, str], ...]] = (("tokenizer", "text_encoder"),)

    def __init__(self, pipeline: DiffusionPipeline | TransformerOnly, max_sequence_length: int) -> None:
        self.pipeline = pipeline
        self.max_sequence_length = max_sequence_length
        # Freshly built (tiny) models start in train mode; from_pretrained ones in eval. Match the
        # latter so text-encoder dropout never makes encoding or sampling random.
        for component in pipeline.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()

    # ----- loading -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, model: str, torch_dtype: torch.dtype = torch.float32, max_sequence_length: int | None = None
    ) -> Backbone:
        """Load the real pipeline from a hub id or a local diffusers folder."""
        pipeline = cls.pipeline_class.from_pretrained(model, torch_dtype=torch_dtype)
        return cls(pipeline, max_sequence_length or cls.default_max_sequence_length())

    @classmethod
    def transformer_from_pretrained(
        cls, model: str, torch_dtype: torch.dtype = torch.float32, max_sequence_length: int | None = None
    ) -> Backbone:
        """Load only the transformer (``<model>/transformer``): what training from a cache needs."""
        transformer = cls.transformer_class.from_pretrained(
            cls.resolve_model(model), subfolder="transformer", torch_dtype=torch_dtype
        )
        return cls(TransformerOnly(transformer), max_sequence_length or cls.default_max_sequence_length())

    @classmethod
    def resolve_model(cls, model: str) -> str:
        """The hub id or folder ``model`` names (backbones with named shipped weights override this)."""
        return model

    @classmethod
    def default_max_sequence_length(cls) -> int:
        return 256

    @classmethod
    @abstractmethod
    def tiny(cls, seed: int = 0) -> Backbone:
        """The same classes built from a tiny random config (tests, CI)."""

    #: the max_sequence_length :meth:`tiny` and :meth:`tiny_transformer` build with
    tiny_max_sequence_length = 16

    @classmethod
    def _tiny_transformer_module(cls, seed: int) -> torch.nn.Module:
        """The transformer :meth:`tiny` builds for ``seed``; backbones override this to build it alone."""
        return cls.tiny(seed).transformer

    @classmethod
    def tiny_transformer(cls, seed: int = 0) -> Backbone:
        """Only the transformer of :meth:`tiny` (the same weights for the same seed)."""
        return cls(TransformerOnly(cls._tiny_transformer_module(seed)), cls.tiny_max_sequence_length)

    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipeline.transformer

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipeline.vae

    # ----- adapter targets -----------------------------------------------------------------
    def projection_modules(self, role: str, streams: Sequence[str] | None = None) -> list[str]:
        """Full names of the Linear modules playing ``role`` in the given streams (default: all)."""
        if role not in ROLES:
            raise ValueError(f"unknown projection role {role!r}; valid roles: {', '.join(ROLES)}")
        wanted = list(self.streams) if streams is None else list(streams)
        unknown = [s for s in wanted if s not in self.streams]
        if unknown:
            raise ValueError(f"{self.name} has no stream(s) {unknown}; it has {sorted(self.streams)}")
        patterns = [
            re.compile(rf"{block}\.{re.escape(roles[role])}")
            for block, roles in (self.streams[s] for s in wanted)
            if role in roles
        ]
        return [
            module_name
            for module_name, module in self.transformer.named_modules()
            if _is_linear(module) and any(p.fullmatch(module_name) for p in patterns)
        ]

    # ----- latent geometry -----------------------------------------------------------------
    def patch_size(self) -> tuple[int, int, int]:
        """(time, height, width) patch of the transformer's vision tokens, read from its config."""
        cfg = self.transformer.config
        patch = cfg.patch_size
        if isinstance(patch, list | tuple):
            return (int(patch[0]), int(patch[1]), int(patch[2]))
        return (int(getattr(cfg, "patch_size_t", None) or 1), int(patch), int(patch))

    def token_grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        """(frames, rows, columns) of the vision tokens made from latents shaped (..., F, H, W);
        the tokens are laid out frame by frame, row by row (every backbone here)."""
        pt, ph, pw = self.patch_size()
        f, h, w = (int(n) for n in latent_shape[-3:])
        return f // pt, h // ph, w // pw

    def frame_groups(self, num_frames: int) -> list[list[int]]:
        """Which video frames make up each latent frame (the VAE's temporal compression)."""
        return temporal_groups(num_frames, self.temporal_factor, self.first_frame_alone)

    def latent_hw(self, height: int, width: int) -> tuple[int, int]:
        if height % self.spatial_factor or width % self.spatial_factor:
            raise ValueError(
                f"{self.name} needs height and width divisible by {self.spatial_factor}; got {height}x{width}"
            )
        return height // self.spatial_factor, width // self.spatial_factor

    # ----- flow matching -------------------------------------------------------------------
    @staticmethod
    def add_noise(latents: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.view(-1, *([1] * (latents.ndim - 1))).to(latents.dtype)
        return (1 - s) * latents + s * noise

    def flow_target(self, latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.flow_convention == "data_minus_noise":
            return latents - noise
        return noise - latents

    def model_timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        if self.flow_convention == "data_minus_noise":
            return (1 - sigma) * self.num_train_timesteps
        return sigma * self.num_train_timesteps

    def predict(
        self,
        noisy_latents: torch.Tensor,
        sigma: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
        first_frame: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One transformer call in training form: returns the flow prediction (B, C, F, H, W).

        ``first_frame`` (B, C, 1, H, W): the clean latent frame of an image condition (backbones with
        an image-to-video form)."""
        if first_frame is not None:
            raise ValueError(f"{self.name} has no image-to-video form")
        timestep = self.model_timestep(sigma).to(noisy_latents.dtype)
        return self.transformer(
            hidden_states=noisy_latents,
            timestep=timestep,
            return_dict=False,
            **self.transformer_kwargs(conditioning, noisy_latents),
        )[0]

    @abstractmethod
    def transformer_kwargs(
        self, conditioning: dict[str, torch.Tensor], noisy_latents: torch.Tensor
    ) -> dict[str, Any]:
        """Map cached text conditioning onto the transformer's keyword arguments."""

    # ----- encoders ------------------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Text conditioning for a batch of prompts, as a dict of batched tensors."""

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(B, F, H, W, 3) uint8 frames -> normalised latents (B, C, f, h, w), posterior mean."""
        vae = self.vae
        x = video.permute(0, 4, 1, 2, 3).to(device=vae.device, dtype=vae.dtype) / 127.5 - 1.0
        latents = vae.encode(x).latent_dist.mode()
        return self.normalize_latents(latents.float())

    @torch.no_grad()
    def encode_video_posterior(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, H, W, 3) uint8 frames -> the VAE posterior's mean and std, both in the normalised
        latent space (normalisation is affine per channel, so the std scales by its slope)."""
        vae = self.vae
        x = video.permute(0, 4, 1, 2, 3).to(device=vae.device, dtype=vae.dtype) / 127.5 - 1.0
        posterior = vae.encode(x).latent_dist
        mean = self.normalize_latents(posterior.mode().float())
        zero = self.normalize_latents(torch.zeros_like(mean))
        slope = self.normalize_latents(torch.ones_like(mean)) - zero
        return mean, posterior.std.float() * slope.abs()

    def encode_image_condition(self, video: torch.Tensor) -> torch.Tensor | None:
        """What the cache stores for image-to-video training besides the latents (None: nothing, the
        first latent frame is the condition). ``video``: (B, F, H, W, 3) uint8 frames."""
        return None

    def encode_image_embeds(self, video: torch.Tensor) -> torch.Tensor | None:
        """The image encoder's tokens of each clip's first frame, for transformers that also attend to
        the image (Wan2.1 I2V's CLIP); the cache stores them and training hands them to
        :meth:`transformer_kwargs` as ``conditioning["image_embeds"]``, as the pipeline does at
        sampling. None: the backbone has no image encoder. ``video``: (B, F, H, W, 3) uint8 frames."""
        return None

    @abstractmethod
    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> the space the transformer is trained in (the pipeline's inverse)."""

    def standardize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(latents - latents_mean) / latents_std per channel, from the VAE config (Mochi, Wan)."""
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean, device=latents.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, device=latents.device).view(1, -1, 1, 1, 1)
        return (latents - mean) / std

    def sound_rate(self) -> int:
        """The sample rate of the generated sound (backbones with ``audio_sample_rate``)."""
        if self.audio_sample_rate is None:
            raise ValueError(f"{self.name} generates no sound")
        return self.audio_sample_rate

    def image_pipeline(self) -> DiffusionPipeline:
        """The image-to-video pipeline sharing this pipeline's models (``image_to_video`` backbones)."""
        raise ValueError(f"{self.name} has no image-to-video form")

    def text_sequence(
        self, text_mask: torch.Tensor, conditioning: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For the attention maps: where each position of the prompt's (first) text embedding lands in
        the text sequence the transformer's attention sees, and which of that sequence's positions are
        real tokens. Default: the embedding as it is."""
        return torch.arange(len(text_mask)), text_mask

    #: the pipeline components a LoRA file is loaded into (and fused into)
    lora_components: ClassVar[tuple[str, ...]] = ("transformer",)
    #: a model of several experts (Wan2.2 A14B): expert -> the pipeline component holding it, each
    #: with its own LoRA file; empty: one transformer, one file
    expert_components: ClassVar[dict[str, str]] = {}

    def fuse_lora(self, adapter_name: str) -> None:
        """Merge the loaded LoRA into the base weights (its scale already set) and drop the adapter."""
        self.pipeline.fuse_lora(
            components=list(self.lora_components), lora_scale=1.0, adapter_names=[adapter_name]
        )
        self.pipeline.unload_lora_weights()

    def pipeline_kwargs(self, guidance_scale: float) -> dict[str, Any]:
        """Keyword arguments that make the backbone's pipeline run with our CFG setting."""
        return {"guidance_scale": guidance_scale, "max_sequence_length": self.max_sequence_length}

    def to(self, device: torch.device | str) -> Backbone:
        self.pipeline.to(device)
        return self
