"""LoRA files: the diffusers-format inference LoRA and the full triplet kept for analysis.

``<output>/relation_lora.safetensors`` holds ``relation`` + ``ffn`` merged into one plain LoRA per
module with diffusers keys (``transformer.<module>.lora_A.weight`` / ``lora_B.weight``); the
adapters' alpha/r is folded into B, so loaders that assume alpha = rank (diffusers does when no
alphas are stored) reproduce the trained update exactly. The training config travels in the
file's metadata. ``<output>/triplet.safetensors`` keeps all four adapters with peft-style names.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from dreamrelation.adapters import INFERENCE_ADAPTERS, merged_lora, triplet_state_dict
from dreamrelation.cache import atomic_save

INFERENCE_LORA = "relation_lora.safetensors"
TRIPLET = "triplet.safetensors"


def inference_state_dict(
    transformer: torch.nn.Module, adapters: tuple[str, ...] = INFERENCE_ADAPTERS, prefix: str = "transformer"
) -> dict[str, torch.Tensor]:
    state = {}
    for module, (a, b) in merged_lora(transformer, adapters).items():
        state[f"{prefix}.{module}.lora_A.weight"] = a.contiguous()
        state[f"{prefix}.{module}.lora_B.weight"] = b.contiguous()
    return state


def save_lora_files(
    transformer: torch.nn.Module,
    output: Path,
    config_json: str,
    backbone: str,
    present: list[str],
    dtype: torch.dtype = torch.float32,
    method: str = "dreamrelation",
) -> tuple[Path, Path]:
    """Write the inference LoRA and the full triplet (both atomically); return their paths."""
    output = Path(output)
    inference_adapters = tuple(a for a in INFERENCE_ADAPTERS if a in present)
    meta = {
        "format": "pt",
        "dreamrelation.backbone": backbone,
        "dreamrelation.config": config_json,
        "dreamrelation.method": method,
    }
    inference = {k: v.to(dtype) for k, v in inference_state_dict(transformer, inference_adapters).items()}
    lora_path = output / INFERENCE_LORA
    atomic_save(inference, lora_path, {**meta, "dreamrelation.adapters": ",".join(inference_adapters)})
    triplet_path = output / TRIPLET
    atomic_save(
        triplet_state_dict(transformer, present),
        triplet_path,
        {**meta, "dreamrelation.adapters": ",".join(present)},
    )
    return lora_path, triplet_path


def read_lora_metadata(path: Path) -> dict[str, object]:
    """The metadata stored by :func:`save_lora_files` (config decoded from JSON)."""
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
    if "dreamrelation.config" in meta:
        meta["dreamrelation.config"] = json.loads(meta["dreamrelation.config"])
    return meta
