"""A ComfyUI-loadable copy of the inference LoRA: the original checkpoints' key names, fused Q/K/V.

ComfyUI patches its models by the *original* checkpoint names (genmo's Mochi, Wan-Video's Wan2.1,
Tencent's HunyuanVideo, Lightricks' LTX-2), not diffusers' names, so a diffusers-format LoRA silently
does nothing there. Facts read from the public sources (ComfyUI ``comfy/lora.py``, diffusers' conversion
scripts and LoRA converters for these models):

* ComfyUI accepts ``<key>.lora_A.weight`` / ``<key>.lora_B.weight`` (and ``<key>.alpha``; without
  it the update is ``B @ A`` unscaled) and maps ``diffusion_model.<original module>`` to the
  weight ``diffusion_model.<original module>.weight`` for every model, plus, for HunyuanVideo,
  Tencent's names (``img_attn_qkv``) onto its own (``img_attn.qkv``).
* Mochi fuses Q, K, V of each stream into one layer (``attn.qkv_x``, ``attn.qkv_y``, rows in the
  order q, k, v); HunyuanVideo does too (``img_attn_qkv``, ``txt_attn_qkv``), and its single-stream
  blocks fuse q, k, v *and* the MLP input into ``linear1``. Wan keeps them separate.
* LTX-2 (Lightricks' checkpoint, ComfyUI's LTXAV model) names the video attention's projections as
  diffusers does (``transformer_blocks.<i>.attn1.to_q`` ...) and fuses nothing; only the prefix
  changes (``diffusion_model.``, which ComfyUI matches, for our ``transformer.``). Its audio
  attention and audio<->video cross-attention carry no LoRA, so none of their names appear.

A LoRA on parts of a fused layer becomes one LoRA of the fused layer: A is the parts' A matrices
stacked along the rank, B is block-diagonal (part i's B in part i's rows and rank columns, zeros
elsewhere), so ``B @ A`` is exactly the parts' updates stacked along the output (zero rows for the
parts without a LoRA, such as V when only the relation adapter is exported).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from dreamrelation.backbones.layouts import ORIGINAL_LAYOUT, FusedLayer
from dreamrelation.errors import InputError

COMFYUI_LORA = "relation_lora_comfyui.safetensors"
PREFIX = "diffusion_model."


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(re.escape("{i}"), r"(\d+)"))


def locate(backbone: str, module: str) -> tuple[FusedLayer, str, int]:
    """The original layer a diffusers module belongs to: (layer, block index, part position)."""
    if backbone not in ORIGINAL_LAYOUT:
        raise InputError(
            Path(backbone),
            "no ComfyUI layout for this backbone",
            f"ComfyUI export exists for {', '.join(ORIGINAL_LAYOUT)}",
        )
    for layer in ORIGINAL_LAYOUT[backbone]:
        for position, part in enumerate(layer.parts):
            match = _pattern(part).fullmatch(module)
            if match:
                return layer, match.group(1), position
    raise KeyError(module)


def fuse_lora(
    parts: list[tuple[torch.Tensor, torch.Tensor] | None], sizes: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LoRA (A (R, in), B (sum(sizes), R)) whose ``B @ A`` stacks each part's ``B_i @ A_i``
    (zero rows where a part has none): A stacked along the rank, B block-diagonal."""
    present = [p for p in parts if p is not None]
    if not present:
        raise ValueError("a fused layer needs at least one part with a LoRA")
    a = torch.cat([p[0] for p in present], dim=0)
    b = a.new_zeros(sum(sizes), a.shape[0])
    row, col = 0, 0
    for part, size in zip(parts, sizes, strict=True):
        if part is not None:
            part_a, part_b = part
            if part_b.shape[0] != size:
                raise ValueError(f"a part's B has {part_b.shape[0]} rows, its layer slice {size}")
            b[row : row + size, col : col + part_a.shape[0]] = part_b
            col += part_a.shape[0]
        row += size
    return a, b


def comfyui_state_dict(
    lora: dict[str, torch.Tensor], backbone: str, out_features: dict[str, int]
) -> dict[str, torch.Tensor]:
    """Convert our diffusers-format inference LoRA (``transformer.<module>.lora_A/B.weight``, scale
    folded into B) into ComfyUI's form. ``out_features``: diffusers module -> output size (needed
    for the parts of a fused layer that carry no LoRA)."""
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in lora:
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removesuffix(".lora_A.weight").removeprefix("transformer.")
        modules[module] = (lora[key].float(), lora[key.replace(".lora_A.", ".lora_B.")].float())
    grouped: dict[tuple[FusedLayer, str], dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    for module, pair in modules.items():
        try:
            layer, block, position = locate(backbone, module)
        except KeyError:
            raise InputError(
                Path(module),
                f"this LoRA module has no counterpart in the original {backbone} checkpoint",
                "export only LoRAs trained on the attention projections",
            ) from None
        grouped.setdefault((layer, block), {})[position] = pair
    state: dict[str, torch.Tensor] = {}
    for (layer, block), by_position in sorted(
        grouped.items(), key=lambda kv: (kv[0][0].original, int(kv[0][1]))
    ):
        names = [part.replace("{i}", block) for part in layer.parts]
        sizes = [out_features[name] for name in names]
        a, b = fuse_lora([by_position.get(i) for i in range(len(names))], sizes)
        key = PREFIX + layer.original.replace("{i}", block)
        state[f"{key}.lora_A.weight"] = a.contiguous()
        state[f"{key}.lora_B.weight"] = b.contiguous()
    return state


def linear_out_features(transformer: torch.nn.Module) -> dict[str, int]:
    """Every Linear module's output size (peft wrappers report their base layer's)."""
    sizes = {}
    for name, module in transformer.named_modules():
        base = getattr(module, "base_layer", module)
        if isinstance(base, torch.nn.Linear):
            sizes[name.replace(".base_layer", "")] = base.out_features
    return sizes


def transformer_out_features(backbone: str, model: str) -> dict[str, int]:
    """Output sizes of the transformer of ``model`` without loading its weights (config only)."""
    from dreamrelation.backbones import load_backbone

    if model == "tiny":
        transformer = load_backbone(backbone, "tiny").transformer
        experts = getattr(transformer, "experts", None)  # Wan2.2 A14B: the experts have one shape
        return linear_out_features(next(iter(experts.values())) if experts else transformer)
    import diffusers
    from accelerate import init_empty_weights

    from dreamrelation.backbones.registry import _model_not_loadable, check_model_source

    check_model_source(model, backbone, "transformer")
    local = Path(model) / "transformer" / "config.json"
    try:
        if local.is_file():
            config_path = local
        else:
            from huggingface_hub import hf_hub_download

            config_path = Path(hf_hub_download(model, "transformer/config.json"))
        config = json.loads(config_path.read_text())
        cls = getattr(diffusers, config["_class_name"])
        with init_empty_weights():
            transformer = cls.from_config(config)
    except Exception as exc:  # unreachable, offline, not a diffusers config: one line
        raise _model_not_loadable(model, backbone, exc) from exc
    return linear_out_features(transformer)


def comfyui_file_name(meta: dict[str, object]) -> str:
    """``relation_lora_comfyui.safetensors``; a multi-expert model's later experts (Wan2.2 A14B's
    low-noise one) add the expert's name, as their diffusers files do."""
    from dreamrelation.generation.lora_files import EXPERT_FILES_KEY, EXPERT_KEY

    expert, files = meta.get(EXPERT_KEY), meta.get(EXPERT_FILES_KEY)
    if not expert or not isinstance(files, dict) or next(iter(files)) == expert:
        return COMFYUI_LORA
    return COMFYUI_LORA.replace("_comfyui", f"_{expert}_comfyui")


def write_comfyui_lora(
    lora_path: Path,
    out_features: dict[str, int] | None = None,
    output: Path | None = None,
    model: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Read our inference LoRA file, write its ComfyUI form (default: beside it, named
    ``relation_lora_comfyui.safetensors``). ``out_features`` defaults to the transformer config of
    ``model`` (default: the model named in the file's metadata; only its config is read). The
    input is never the output, and an existing file that is not an earlier export of ours is only
    replaced with ``overwrite``."""
    from dreamrelation.files import atomic_save, refuse_same_file
    from dreamrelation.generation.lora_files import read_inference_lora

    lora_path = Path(lora_path)
    state, meta = read_inference_lora(lora_path)
    name = comfyui_file_name(meta)
    target = Path(output) if output is not None else lora_path.with_name(name)
    if target.is_dir():
        target = target / name
    refuse_same_file(target, lora_path)
    if (target.exists() or target.is_symlink()) and not overwrite and not _our_export(target):
        raise InputError(
            target,
            "exists and is not a ComfyUI export of dreamrelation",
            "choose another -o or pass --overwrite",
        )
    backbone = str(meta.get("dreamrelation.backbone", ""))
    if backbone not in ORIGINAL_LAYOUT:
        raise InputError(
            lora_path,
            f"was trained on {backbone or 'an unknown backbone'}, which ComfyUI export does not cover",
            f"export LoRAs of {', '.join(ORIGINAL_LAYOUT)}",
        )
    if out_features is None:
        config = meta.get("dreamrelation.config") or {}
        if model is None and isinstance(config, dict):
            model = (config.get("model") or {}).get("model")
        if not model:
            raise InputError(lora_path, "its metadata names no model", "pass --model <hub id or folder>")
        out_features = transformer_out_features(backbone, model)
    converted = comfyui_state_dict(state, backbone, out_features)
    text_meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    atomic_save(converted, target, {**text_meta, "dreamrelation.format": "comfyui"})
    return target


def _our_export(path: Path) -> bool:
    """``path`` is a ComfyUI file this command wrote before (safe to replace with a new export)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("dreamrelation.format") == "comfyui"
    except Exception:
        return False
