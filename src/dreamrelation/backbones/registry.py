"""The backbone registry: the only place names are mapped to backbone classes; loading a model."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Literal

import torch

from dreamrelation.backbones.base import Backbone
from dreamrelation.backbones.hunyuan import HunyuanVideoBackbone
from dreamrelation.backbones.hunyuan15 import HunyuanVideo15Backbone
from dreamrelation.backbones.hunyuan15_i2v import HunyuanVideo15I2VBackbone
from dreamrelation.backbones.ltx2 import LTX2Backbone
from dreamrelation.backbones.mochi import MochiBackbone
from dreamrelation.backbones.wan import WanBackbone
from dreamrelation.backbones.wan22 import Wan22A14BBackbone, Wan22I2VA14BBackbone, Wan22TI2VBackbone
from dreamrelation.backbones.wan_i2v import Wan21I2VBackbone
from dreamrelation.errors import DreamRelationError

BACKBONES: dict[str, type[Backbone]] = {
    cls.name: cls
    for cls in (
        MochiBackbone,
        WanBackbone,
        HunyuanVideoBackbone,
        Wan22TI2VBackbone,
        Wan22A14BBackbone,
        Wan22I2VA14BBackbone,
        Wan21I2VBackbone,
        HunyuanVideo15Backbone,
        HunyuanVideo15I2VBackbone,
        LTX2Backbone,
    )
}


#: backbones defined elsewhere, imported (and so registered) on first use
_LAZY = {"toy": "dreamrelation.toyworld.backbone"}


def backbone_class(name: str) -> type[Backbone]:
    """Look a backbone up by its registry name."""
    if name not in BACKBONES and name in _LAZY:
        importlib.import_module(_LAZY[name])
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted({*BACKBONES, *_LAZY}))
        raise ValueError(f"unknown backbone {name!r}; available: {known}") from None


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    """Add a backbone class (e.g. the toy world's) to the registry; usable as a decorator."""
    BACKBONES[cls.name] = cls
    return cls


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_backbone(
    backbone: str,
    model: str,
    dtype: str = "float32",
    max_sequence_length: int | None = None,
    device: str | torch.device | None = None,
    components: Literal["all", "transformer"] = "all",
) -> Backbone:
    """Load a backbone's pipeline from a hub id or local folder; ``model="tiny"`` builds the tiny
    random config the tests use (deterministic: seed 0).

    ``components="transformer"`` loads only the transformer (text encoders and VAE are never
    instantiated): all that training from a cache needs.
    """
    cls = backbone_class(backbone)
    if components not in ("all", "transformer"):
        raise ValueError(f"components must be 'all' or 'transformer', not {components!r}")
    if model == "tiny":
        loaded = cls.tiny(seed=0) if components == "all" else cls.tiny_transformer(seed=0)
        if dtype != "float32":
            loaded.pipeline.to(dtype=DTYPES[dtype])
    else:
        check_model_source(model, backbone, "transformer" if components == "transformer" else "pipeline")
        try:
            if components == "transformer":
                loaded = cls.transformer_from_pretrained(
                    model, torch_dtype=DTYPES[dtype], max_sequence_length=max_sequence_length
                )
            else:
                loaded = cls.from_pretrained(
                    model, torch_dtype=DTYPES[dtype], max_sequence_length=max_sequence_length
                )
        except DreamRelationError:
            raise
        except Exception as exc:  # the one loader: whatever diffusers/transformers raise, one line
            raise _model_not_loadable(model, backbone, exc) from exc
        empty = [n for n, p in loaded.transformer.named_parameters() if p.device.type == "meta"]
        if empty:  # e.g. a folder of pickled .bin weights only: diffusers leaves them unloaded
            from dreamrelation.errors import ConfigError

            raise ConfigError(
                f"model {model!r} ({backbone}): {len(empty)} transformer weights could not be read (such as "
                f"{empty[0]}); pass a diffusers folder with .safetensors weights"
            )
    if device is not None:
        loaded.to(device)
    return loaded


def check_model_source(model: str, backbone: str, need: Literal["pipeline", "transformer"]) -> None:
    """A ``--model`` that is a local path must be a diffusers folder: a file, an empty folder or a
    folder without the model's index is named as what it is (not as a hub id to download)."""
    from dreamrelation.errors import ConfigError

    path = Path(model)
    looks_local = path.exists() or path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1
    if not looks_local:
        return  # a hub id: the loader says whether it is cached or reachable
    fix = "pass a hub id or a local diffusers folder (with model_index.json) with --model"
    if not path.exists():
        raise ConfigError(f"model {model!r} ({backbone}): no such folder. Fix: {fix}")
    if not path.is_dir():
        raise ConfigError(f"model {model!r} ({backbone}) is a file, not a diffusers model folder. Fix: {fix}")
    index = path / ("model_index.json" if need == "pipeline" else "transformer/config.json")
    if not index.is_file() and not (need == "transformer" and (path / "model_index.json").is_file()):
        raise ConfigError(
            f"model {model!r} ({backbone}) is not a diffusers model folder: it has no "
            f"{index.relative_to(path)}. Fix: {fix}"
        )


def _model_not_loadable(model: str, backbone: str, exc: Exception) -> Exception:
    """One line for a model that cannot be found or read (instead of a 200-line traceback)."""
    from dreamrelation.errors import ConfigError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline and not os.path.isdir(model):
        return ConfigError(
            f"model {model!r} ({backbone}) is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, "
            f"so it cannot be downloaded; download it first (huggingface-cli download {model}), unset "
            "HF_HUB_OFFLINE, or pass a local diffusers folder with --model"
        )
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return ConfigError(
        f"model {model!r} ({backbone}) cannot be loaded: {first}. Fix: pass a hub id or a local "
        "diffusers folder (with model_index.json) with --model"
    )
