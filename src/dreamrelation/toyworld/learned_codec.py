"""A compressing, learned "VAE" for the toy backbone (Mochi's VAE at toy size).

:class:`LearnedToyCodec` keeps the exact codec's geometry (time ÷2, space ÷4: a (3, 16, 32, 32) clip is
8×8×8 latent cells) but stores ``latent_channels`` numbers per cell (16 by default) instead of the
96 pixels a cell covers. A token then carries 6× fewer numbers, so the transformer can be narrower or
take bigger patches for the same cost, while the decoder draws the sprites' shapes.

Design (from the toy-world probes, docs/toy_backbone.md "Learned codec"):

- the encoder sees the exact space-to-depth cells (96 numbers each) and works at the latent grid
  (8×8 per latent frame): every convolution runs on 512 cells, not 16 384 pixels, which is what makes
  it trainable on a CPU; blocks are (2+1)D: a 3×3 convolution in space, then a 3-tap one in time, so
  a sprite's shape, which does not change over a clip, can be read from the neighbouring latent frames;
- the decoder mirrors it and ends in depth-to-space (a sub-pixel convolution), optionally
  followed by a small residual refinement at full resolution (off by default: ~40 % of a CPU step);
- no normalisation layers (they misbehave at the small batches a CPU affords), residual branches start
  at zero, latents are deterministic (``latent_dist`` is a point mass, like :class:`ToyVideoCodec`);
- the latents are standardised per channel inside the codec (``latent_shift``/``latent_scale``
  buffers, measured on rendered clips after training), so ``scaling_factor`` is 1 and the pipeline
  needs no per-channel statistics (MochiPipeline hard-codes 12 channels for those).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def check_shape(x: torch.Tensor, channels: int, what: str) -> None:
    """Refuse anything but a (B, ``channels``, F, H, W) tensor, naming ``what`` it should be."""
    if x.ndim != 5 or x.shape[1] != channels:
        raise ValueError(f"{what} must be (B, {channels}, F, H, W); got {tuple(x.shape)}")


def space_to_depth(x: torch.Tensor, temporal_factor: int, spatial_factor: int) -> torch.Tensor:
    """(B, c, F, H, W) pixels -> (B, c·t·s·s, F/t, H/s, W/s) cells, channels ordered (colour,
    frame-in-group, row-in-cell, column-in-cell): the exact codec's latents, the learned one's input."""
    t, s = temporal_factor, spatial_factor
    b, c, f, h, w = x.shape
    if f % t or h % s or w % s:
        raise ValueError(f"frames must be a multiple of {t} and height/width of {s}; got {f}x{h}x{w}")
    z = x.reshape(b, c, f // t, t, h // s, s, w // s, s)
    return z.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * t * s * s, f // t, h // s, w // s)


def depth_to_space(
    z: torch.Tensor, in_channels: int, temporal_factor: int, spatial_factor: int
) -> torch.Tensor:
    """The inverse of :func:`space_to_depth`."""
    t, s, c = temporal_factor, spatial_factor, in_channels
    b, _, f, h, w = z.shape
    x = z.reshape(b, c, t, s, s, f, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, f * t, h * s, w * s)


def point_mass(z: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
    """``z`` as a diffusers VAE's encode output whose ``latent_dist`` is a point mass: ``mode()``
    and ``sample()`` both return ``z`` exactly (``deterministic=True`` zeroes the std)."""
    posterior = DiagonalGaussianDistribution(torch.cat([z, torch.zeros_like(z)], dim=1), deterministic=True)
    if not return_dict:
        return (posterior,)
    return AutoencoderKLOutput(latent_dist=posterior)


class _Block(nn.Module):
    """x + conv_t(silu(conv_s(silu(x)))): a (2+1)D residual block without normalisation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.space = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))
        self.time = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.time.weight)  # the block starts as the identity
        nn.init.zeros_(self.time.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.time(nn.functional.silu(self.space(nn.functional.silu(x))))


class LearnedToyCodec(ModelMixin, ConfigMixin):
    """A learned convolutional autoencoder: ``(B, 3, F, H, W)`` pixels in [-1, 1] <->
    ``(B, latent_channels, F/t, H/s, W/s)`` standardised latents.

    The same VAE surface as :class:`~dreamrelation.toyworld.backbone.ToyVideoCodec` (what
    ``MochiPipeline`` and the backbone use): ``encode(x).latent_dist.mode()/.sample()``,
    ``decode(z, return_dict=False)[0]``, ``latent_channels`` and the config fields ``temporal_factor``,
    ``spatial_factor``, ``scaling_factor``, ``latents_mean``/``latents_std`` (None).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        temporal_factor: int = 2,
        spatial_factor: int = 4,
        latent_channels: int = 16,
        hidden_channels: int = 128,
        encoder_blocks: int = 2,
        decoder_blocks: int = 3,
        refine_channels: int = 0,
        scaling_factor: float = 1.0,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
    ) -> None:
        super().__init__()
        cell = in_channels * temporal_factor * spatial_factor**2
        self.encoder = nn.Sequential(
            nn.Conv3d(cell, hidden_channels, (1, 3, 3), padding=(0, 1, 1)),
            *[_Block(hidden_channels) for _ in range(encoder_blocks)],
            nn.SiLU(),
            nn.Conv3d(hidden_channels, latent_channels, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv3d(latent_channels, hidden_channels, (1, 3, 3), padding=(0, 1, 1)),
            *[_Block(hidden_channels) for _ in range(decoder_blocks)],
            nn.SiLU(),
            nn.Conv3d(hidden_channels, cell, 1),
        )
        # Optional full-resolution residual refinement (0: none; measured ~40 % of a CPU step at 32).
        self.refine: nn.Module | None = None
        if refine_channels > 0:
            self.refine = nn.Sequential(
                nn.Conv2d(in_channels, refine_channels, 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(refine_channels, in_channels, 3, padding=1),
            )
            nn.init.zeros_(self.refine[-1].weight)
            nn.init.zeros_(self.refine[-1].bias)
        # Per-channel standardisation of the raw latents (identity until measured after training).
        self.register_buffer("latent_shift", torch.zeros(latent_channels))
        self.register_buffer("latent_scale", torch.ones(latent_channels))

    # ----- geometry ------------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    # ----- raw (unstandardised) paths, used by training -------------------------------------
    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        check_shape(x, cfg.in_channels, "pixels")
        return self.encoder(space_to_depth(x, cfg.temporal_factor, cfg.spatial_factor))

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        x = depth_to_space(self.decoder(z), cfg.in_channels, cfg.temporal_factor, cfg.spatial_factor)
        if self.refine is None:
            return x
        b, c, f, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * f, c, h, w)
        frames = frames + self.refine(frames)
        return frames.reshape(b, f, c, h, w).transpose(1, 2)

    # ----- the VAE surface -----------------------------------------------------------------
    def _standardise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_shift.view(1, -1, 1, 1, 1)) / self.latent_scale.view(1, -1, 1, 1, 1)

    def _unstandardise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_scale.view(1, -1, 1, 1, 1) + self.latent_shift.view(1, -1, 1, 1, 1)

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        return point_mass(self._standardise(self.encode_raw(x)), return_dict)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        check_shape(z, self.latent_channels, "latents")
        x = self.decode_raw(self._unstandardise(z))
        if not return_dict:
            return (x,)
        return DecoderOutput(sample=x)

    @torch.no_grad()
    def set_latent_statistics(self, pixels: torch.Tensor) -> None:
        """Measure the raw latents' per-channel mean and std on ``pixels`` (B, 3, F, H, W) and
        standardise with them from now on (encode then gives zero-mean, unit-variance channels)."""
        z = self.encode_raw(pixels).float()
        dims = (0, 2, 3, 4)
        self.latent_shift.copy_(z.mean(dims))
        self.latent_scale.copy_(z.std(dims).clamp_min(1e-6))


def codec_class_name(folder: str | Path) -> str:
    """The codec class a saved ``vae`` folder holds (its config.json's ``_class_name``)."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{folder} holds no codec (no config.json); pass a folder written by "
            "`dreamrelation toy codec train` or a pipeline's vae/ folder"
        )
    return str(json.loads(config.read_text()).get("_class_name", ""))


__all__ = [
    "LearnedToyCodec",
    "check_shape",
    "codec_class_name",
    "depth_to_space",
    "point_mass",
    "space_to_depth",
]
