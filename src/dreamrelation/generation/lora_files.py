"""LoRA files: the diffusers-format inference LoRA and the full triplet kept for analysis.

``<output>/relation_lora.safetensors`` holds ``relation`` + ``ffn`` merged into one plain LoRA per
module with diffusers keys (``transformer.<module>.lora_A.weight`` / ``lora_B.weight``); the
adapters' alpha/r is folded into B, so loaders that assume alpha = rank (diffusers does when no
alphas are stored) reproduce the trained update exactly. The training config travels in the
file's metadata. ``<output>/triplet.safetensors`` keeps all four adapters with peft-style names.
``<output>/relation_lora_comfyui.safetensors`` is the inference LoRA under the original checkpoint's
key names, which ComfyUI needs (see :mod:`dreamrelation.generation.comfyui`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from dreamrelation.errors import InputError
from dreamrelation.files import atomic_save
from dreamrelation.training.adapters import INFERENCE_ADAPTERS, merged_lora, triplet_state_dict
from dreamrelation.training.methods.settings import LORA_METHODS

INFERENCE_LORA = "relation_lora.safetensors"
TRIPLET = "triplet.safetensors"
#: metadata of a multi-expert model's LoRA files: which expert a file is for, and every expert's file
EXPERT_KEY = "dreamrelation.expert"
EXPERT_FILES_KEY = "dreamrelation.expert_files"


def expert_file_name(expert: str | None, index: int) -> str:
    """The first (or only) expert's file is ``relation_lora.safetensors`` (what ``generate --lora``
    and a plain ``load_lora_weights`` take); the others' add the expert's name."""
    return INFERENCE_LORA if index == 0 else f"{Path(INFERENCE_LORA).stem}_{expert}.safetensors"


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
    # a model of several experts (Wan2.2 A14B) gets one plain diffusers LoRA file per expert
    experts = getattr(transformer, "experts", None) or {None: transformer}
    files = {expert: expert_file_name(expert, i) for i, expert in enumerate(experts)}
    for expert, module in experts.items():
        inference = {k: v.to(dtype) for k, v in inference_state_dict(module, inference_adapters).items()}
        expert_meta = {} if expert is None else {EXPERT_KEY: expert, EXPERT_FILES_KEY: json.dumps(files)}
        path = output / files[expert]
        atomic_save(
            inference, path, {**meta, **expert_meta, "dreamrelation.adapters": ",".join(inference_adapters)}
        )
    lora_path = output / INFERENCE_LORA
    triplet_path = output / TRIPLET
    atomic_save(
        triplet_state_dict(transformer, present),
        triplet_path,
        {**meta, "dreamrelation.adapters": ",".join(present)},
    )
    return lora_path, triplet_path


#: methods whose file is a diffusers LoRA; the others' files are applied by their method class
LORA_FILE_METHODS = LORA_METHODS


def expert_lora_paths(path: Path, meta: dict[str, object]) -> dict[str, Path]:
    """expert -> its LoRA file, beside ``path`` (a file of a multi-expert run); an InputError naming
    the first one missing. Empty for a single-transformer LoRA."""
    files = meta.get(EXPERT_FILES_KEY)
    if not isinstance(files, dict):
        return {}
    paths = {expert: Path(path).with_name(str(name)) for expert, name in files.items()}
    for expert, expert_path in paths.items():
        if not expert_path.is_file():
            raise InputError(
                expert_path,
                f"the {expert.replace('_', '-')} expert's LoRA is missing (one file per expert is needed)",
                f"keep {expert_path.name} beside {Path(path).name}, as training wrote them",
            )
    return paths


def read_lora_metadata(path: Path) -> dict[str, object]:
    """The metadata stored by :func:`save_lora_files` (config decoded from JSON)."""
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
    for key in ("dreamrelation.config", EXPERT_FILES_KEY):
        if key in meta:
            meta[key] = json.loads(meta[key])
    return meta


def read_inference_lora(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Load an inference LoRA written by :func:`save_lora_files`, refusing anything else with a
    message that names the file: not safetensors (a pickle, a truncated file), the triplet file,
    keys or shapes that are not a LoRA, non-finite values."""
    from safetensors.torch import load_file

    path = Path(path)
    fix = f"pass the {INFERENCE_LORA} written by `dreamrelation train`"
    if not path.is_file():
        raise InputError(path, "LoRA file not found", fix)
    try:
        meta = read_lora_metadata(path)
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a pickle / truncated header
        problem = f"not a readable safetensors LoRA ({type(exc).__name__}: {exc})"
        raise InputError(path, problem, fix) from None
    if str(meta.get("dreamrelation.method", "dreamrelation")) not in LORA_FILE_METHODS:
        _check_finite(path, state)  # a token or motion-embedding file: its method class checks the rest
        return state, meta
    if any(re.search(r"\.lora_[AB]\.(relation|subject1|subject2|ffn)\.weight$", k) for k in state):
        raise InputError(path, "is the adapter triplet (kept for analysis), not the inference LoRA", fix)
    bad = [k for k in state if not re.fullmatch(r"transformer\..+\.lora_[AB]\.weight", k)]
    if bad or not state:
        what = f"unexpected keys such as {bad[0]!r}" if bad else "no weights"
        raise InputError(path, f"not a DreamRelation LoRA: {what}", fix)
    for key in state:
        if key.endswith(".lora_A.weight"):
            a, b = state[key], state.get(key.replace(".lora_A.", ".lora_B."))
            if b is None or a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
                module = key.removesuffix(".lora_A.weight")
                raise InputError(path, f"{module}: lora_A/lora_B do not pair up", fix)
    _check_finite(path, state)
    return state, meta


#: a LoRA weight beyond this is a diverged training run, not a relation (trained ones are ~0.01-1)
MAX_LORA_WEIGHT = 1e4


def _check_finite(path: Path, state: dict[str, torch.Tensor]) -> None:
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise InputError(
                path, f"{key} contains NaN or infinite values", "retrain, or use an earlier intact file"
            )
        if value.is_floating_point() and value.numel() and value.abs().max().item() > MAX_LORA_WEIGHT:
            raise InputError(
                path,
                f"{key} holds values up to {value.abs().max().item():.3g} (a diverged training run)",
                "retrain with a lower learning_rate, or use an earlier intact file",
            )


def check_lora_fits(state: dict[str, Any], transformer: Any, path: Path) -> None:
    """Every module of an inference LoRA exists in this transformer with matching in/out sizes."""
    sizes = {}
    for name, module in transformer.named_modules():
        base = getattr(module, "base_layer", module)
        if hasattr(base, "in_features") and hasattr(base, "out_features"):
            sizes[name.replace(".base_layer", "")] = (base.in_features, base.out_features)
    fix = "generate with the model (and size) the LoRA was trained on"
    for key, a in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
        b = state[key.replace(".lora_A.", ".lora_B.")]
        if module not in sizes:
            raise InputError(path, f"the LoRA adapts {module}, which this model does not have", fix)
        if (a.shape[1], b.shape[0]) != sizes[module]:
            raise InputError(
                path,
                f"{module}: the LoRA maps {a.shape[1]} -> {b.shape[0]} features, the model's layer "
                f"{sizes[module][0]} -> {sizes[module][1]}",
                fix,
            )
