"""The batched Mochi attention gives the transformer exactly the per-sample loop's output."""

from __future__ import annotations

import pytest
import torch

from dreamrelation.backbones.mochi import MochiBackbone, use_batched_attention
from dreamrelation.toyworld.backbone import ToyBackbone

pytestmark = pytest.mark.filterwarnings("ignore:In CPU autocast")


@pytest.mark.parametrize("backbone_class", [MochiBackbone, ToyBackbone])
def test_batched_attention_matches_the_per_sample_loop(backbone_class: type) -> None:
    transformer = backbone_class.tiny().transformer
    cfg = transformer.config
    torch.manual_seed(0)
    frames = 2 if backbone_class is MochiBackbone else 8
    latents = torch.randn(3, cfg.in_channels, frames, 8, 8)
    text = torch.randn(3, cfg.max_sequence_length, cfg.text_embed_dim)
    # prompts of different lengths: the padding differs per sample
    mask = torch.zeros(3, cfg.max_sequence_length, dtype=torch.long)
    mask[0, :5], mask[1, :9], mask[2, :] = 1, 1, 1
    timestep = torch.tensor([100.0, 500.0, 900.0])
    with torch.no_grad():
        looped = transformer(latents, text, timestep, mask, return_dict=False)[0]
        assert use_batched_attention(transformer) == cfg.num_layers
        batched = transformer(latents, text, timestep, mask, return_dict=False)[0]
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)
