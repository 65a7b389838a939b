"""The Relation LoRA triplet on peft: named adapters, per-adapter placement, cheap switching.

``relation`` (Q, K), ``subject1``/``subject2`` (V) and ``ffn`` (attention output projections) are
separate peft adapters. Text and vision tokens use different projection modules in MM-DiT, so each
adapter automatically has separate text and vision weights. Activating a subset with
:func:`activate` makes peft skip the others in the forward pass and freezes them, so they get no
gradient and AdamW (which skips parameters whose ``grad`` is None) neither moves nor decays them.
With ``inactive="zero_scaled"`` (the authors' code) every adapter is computed and trainable, the
others at scale 0: their output is exactly the base's, their gradient is zero (not None), and AdamW's
momentum and weight decay keep moving them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer

from dreamrelation.backbones import Backbone
from dreamrelation.training.adapter_config import (
    INFERENCE_ADAPTERS,
    INFERENCE_DRAW,
    SELECTABLE,
    TripletConfig,
)


def adapter_targets(backbone: Backbone, config: TripletConfig) -> dict[str, list[str]]:
    """adapter -> the full module names it is injected into, for this backbone."""
    targets = {}
    for adapter in config.present():
        names: list[str] = []
        for role in config.placement[adapter]:
            names += backbone.projection_modules(role, config.streams)
        if not names:
            raise ValueError(
                f"adapter {adapter!r} with roles {config.placement[adapter]} matches no module of "
                f"{backbone.name} (streams {config.streams or 'all'})"
            )
        targets[adapter] = sorted(set(names))
    return targets


def add_triplet(backbone: Backbone, config: TripletConfig, seed: int | None = None) -> dict[str, list[str]]:
    """Inject the triplet into ``backbone.transformer`` (frozen base) and return the targets.

    With ``seed``, the adapters' random initialisation (peft's Kaiming A) is drawn from that seed
    without touching the global random state, so the same seed gives the same LoRA on any model.
    """
    if seed is not None:
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return add_triplet(backbone, config)
    transformer = backbone.transformer
    transformer.requires_grad_(False)
    targets = adapter_targets(backbone, config)
    for adapter, modules in targets.items():
        rank = config.rank_of(adapter)
        lora = LoraConfig(
            r=rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            # A regex is matched in full by peft: exact module names, nothing else.
            target_modules="|".join(re.escape(m) for m in modules),
            init_lora_weights=True,
        )
        with warnings.catch_warnings():
            # several named adapters on one model is the point here, not a mistake
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            transformer.add_adapter(lora, adapter_name=adapter)
    activate(transformer, list(targets))
    return targets


def lora_layers(module: torch.nn.Module) -> Iterable[tuple[str, BaseTunerLayer]]:
    for name, sub in module.named_modules():
        if isinstance(sub, BaseTunerLayer):
            yield name, sub


def _full_scaling(layer: BaseTunerLayer) -> dict[str, float]:
    """The layer's own alpha/r per adapter, recorded before any adapter is scaled to 0."""
    if not hasattr(layer, "_dreamrelation_scaling"):
        layer._dreamrelation_scaling = dict(layer.scaling)
    return layer._dreamrelation_scaling


def activate(
    transformer: torch.nn.Module,
    adapters: Sequence[str],
    trainable: bool = True,
    inactive: Literal["frozen", "zero_scaled"] = "frozen",
) -> None:
    """Make exactly ``adapters`` contribute to the output and, if ``trainable``, train.

    ``inactive="frozen"``: the others are skipped in the forward pass and get no gradient.
    ``inactive="zero_scaled"``: every adapter is computed and trainable, the others at scale 0.
    """
    adapters = list(adapters)
    for _, layer in lora_layers(transformer):
        full = _full_scaling(layer)
        if inactive == "zero_scaled" and trainable:
            # peft's set_adapter also flips requires_grad: every adapter of the layer trains
            layer.set_adapter(list(full))
            for adapter, scale in full.items():
                layer.scaling[adapter] = scale if adapter in adapters else 0.0
            continue
        layer.scaling.update(full)
        # peft's set_adapter also flips requires_grad: active -> True, inactive -> False.
        layer.set_adapter(adapters)
        if not trainable:
            for p in layer.parameters():
                p.requires_grad_(False)


def adapters_for_selection(selected: str, present: Sequence[str]) -> list[str]:
    """The LoRA selection strategy (HMT): which adapters run and train when ``selected`` is drawn.

    relation -> relation + both subject LoRAs + ffn; subject_i -> subject_i + ffn;
    :data:`INFERENCE_DRAW` -> relation + ffn (the inference adapters).
    """
    if selected == INFERENCE_DRAW:
        wanted = list(INFERENCE_ADAPTERS)
    elif selected in SELECTABLE:
        wanted = ["relation", "subject1", "subject2", "ffn"] if selected == "relation" else [selected, "ffn"]
    else:
        raise ValueError(
            f"cannot select {selected!r}; choose from {', '.join((*SELECTABLE, INFERENCE_DRAW))}"
        )
    return [a for a in wanted if a in present]


def selection_mask(selected: str) -> str:
    """The mask a selection's loss is weighted by: its own, the relation mask for the inference draw."""
    return "relation" if selected == INFERENCE_DRAW else selected


def adapter_parameters(transformer: torch.nn.Module, adapter: str) -> dict[str, torch.nn.Parameter]:
    """All LoRA parameters of one adapter, keyed by their full parameter name."""
    marker = f".{adapter}."
    return {
        name: p
        for name, p in transformer.named_parameters()
        if ("lora_A" in name or "lora_B" in name) and marker in name
    }


def triplet_state_dict(transformer: torch.nn.Module, adapters: Sequence[str]) -> dict[str, torch.Tensor]:
    """Plain peft-style weights of the given adapters: ``<module>.lora_A.<adapter>.weight`` etc."""
    state = {}
    for adapter in adapters:
        for name, p in adapter_parameters(transformer, adapter).items():
            state[name.replace(".base_layer", "")] = p.detach().to("cpu", copy=True)
    return state


def load_triplet_state_dict(transformer: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`triplet_state_dict`; every key must land on an existing parameter."""
    params = {name.replace(".base_layer", ""): p for name, p in transformer.named_parameters()}
    missing = [k for k in state if k not in params]
    if missing:
        raise KeyError(f"{len(missing)} adapter weights have no matching parameter, e.g. {missing[:3]}")
    with torch.no_grad():
        for key, value in state.items():
            params[key].copy_(value.to(params[key].dtype))


def merged_lora(
    transformer: torch.nn.Module, adapters: Sequence[str]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Combine adapters into one plain LoRA per module: module -> (A (r, in), B (out, r)).

    Each adapter's scaling (alpha / r) is folded into B, and adapters sharing a module are stacked
    along the rank, so ``W + B @ A`` equals the sum of the adapters' updates exactly.
    """
    merged: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for name, layer in lora_layers(transformer):
        for adapter in adapters:
            if adapter not in layer.lora_A:
                continue
            a = layer.lora_A[adapter].weight.detach().float().cpu()
            b = layer.lora_B[adapter].weight.detach().float().cpu() * _full_scaling(layer)[adapter]
            lists = merged.setdefault(name, ([], []))
            lists[0].append(a)
            lists[1].append(b)
    return {name: (torch.cat(a_list, 0), torch.cat(b_list, 1)) for name, (a_list, b_list) in merged.items()}
