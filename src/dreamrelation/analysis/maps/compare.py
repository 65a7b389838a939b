"""The base model against the base with a relation LoRA: the same maps, the same noise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dreamrelation.analysis.maps.attention import AttentionMaps, attention_maps
from dreamrelation.analysis.maps.features import FeatureMaps, feature_maps
from dreamrelation.backbones import Backbone
from dreamrelation.generation.render import ADAPTER_NAME, load_inference_lora


# ----- base model vs relation LoRA -----------------------------------------------------------------
@contextmanager
def relation_lora(backbone: Backbone, lora: Path, scale: float = 1.0) -> Iterator[Backbone]:
    """The backbone with a relation LoRA loaded (through diffusers), removed again on exit."""
    load_inference_lora(backbone, lora, scale)
    try:
        yield backbone
    finally:
        backbone.pipeline.delete_adapters(ADAPTER_NAME)


def compare_feature_maps(
    backbone: Backbone, lora: Path, prompt: str, lora_scale: float = 1.0, **kwargs: Any
) -> tuple[FeatureMaps, FeatureMaps]:
    """Feature maps of the base model and of the same model with the relation LoRA (same seed)."""
    base = feature_maps(backbone, prompt, **kwargs)
    with relation_lora(backbone, lora, lora_scale):
        tuned = feature_maps(backbone, prompt, **kwargs)
    tuned.label = "relation LoRA"
    return base, tuned


def compare_attention(
    backbone: Backbone, lora: Path, prompt: str, word: str, lora_scale: float = 1.0, **kwargs: Any
) -> tuple[AttentionMaps, AttentionMaps]:
    """Attention maps of the base model and of the same model with the relation LoRA (same seed)."""
    base = attention_maps(backbone, prompt, word, **kwargs)
    with relation_lora(backbone, lora, lora_scale):
        tuned = attention_maps(backbone, prompt, word, **kwargs)
    tuned.label = "relation LoRA"
    return base, tuned
