"""LoRA methods: DreamRelation's relation LoRA triplet (HMT + RCL) and direct LoRA fine-tuning.

Both are peft adapters on the attention projections and both save the diffusers-format inference
LoRA. Direct LoRA is the same machinery with one adapter on every projection (q, k, v, out) of
every stream, no mask selection and no contrastive loss (``METHOD_DEFAULTS["direct_lora"]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dreamrelation.backbones import Backbone
from dreamrelation.errors import ConfigError
from dreamrelation.generation.comfyui import ORIGINAL_LAYOUT, linear_out_features, write_comfyui_lora
from dreamrelation.generation.lora_files import INFERENCE_LORA, TRIPLET, expert_file_name, save_lora_files
from dreamrelation.seeding import generator
from dreamrelation.training.adapters import (
    INFERENCE_ADAPTERS,
    INFERENCE_DRAW,
    SELECTABLE,
    activate,
    adapters_for_selection,
    add_triplet,
    load_triplet_state_dict,
    triplet_state_dict,
)
from dreamrelation.training.methods.base import TrainingMethod

if TYPE_CHECKING:
    from dreamrelation.cache import CachedDataset
    from dreamrelation.config import TrainConfig


class DreamRelationMethod(TrainingMethod):
    """The relation LoRA triplet with Hybrid Mask Training (the paper's method)."""

    name = "dreamrelation"
    file_name = INFERENCE_LORA

    def __init__(self, config: TrainConfig, backbone: Backbone, dataset: CachedDataset) -> None:
        super().__init__(config, backbone, dataset)
        self.transformer = backbone.transformer
        self.targets = add_triplet(backbone, config.lora, seed=config.seed)
        self.present = list(self.targets)
        self.selectable = [a for a in SELECTABLE if a in self.present]
        if config.hmt.inference_draw:
            self.selectable.append(INFERENCE_DRAW)
        if config.loss.hybrid_masks and any(i.masks is None for i in dataset.items):
            raise ConfigError(
                "hybrid_masks needs subject masks; cache the data with masks or set hybrid_masks: false"
            )
        self._params = [p for n, p in self.transformer.named_parameters() if "lora_" in n]
        for p in self._params:  # adapters train in fp32 even on a bf16 base
            p.data = p.data.float()

    def parameters(self) -> list[torch.nn.Parameter]:
        return self._params

    def select(self, step: int) -> str | None:
        """HMT LoRA selection: one of relation/subject1/subject2 (and the inference draw, with
        ``hmt.inference_draw``) uniformly (same on every process)."""
        if not self.config.loss.hybrid_masks:
            return None
        choice = torch.randint(len(self.selectable), (1,), generator=generator(self.config.seed, 1, step))
        return self.selectable[int(choice)]

    def begin_step(self, step: int) -> str | None:
        selected = self.select(step)
        active = self.present if selected is None else adapters_for_selection(selected, self.present)
        activate(self.transformer, active, inactive=self.config.hmt.inactive_adapters)
        return selected

    def state_dict(self) -> dict[str, torch.Tensor]:
        return triplet_state_dict(self.transformer, self.present)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        load_triplet_state_dict(self.transformer, state)

    def inference_mode(self) -> None:
        activate(self.transformer, [a for a in INFERENCE_ADAPTERS if a in self.present], trainable=False)

    def output_paths(self, output: Path) -> tuple[Path, Path | None]:
        return Path(output) / INFERENCE_LORA, Path(output) / TRIPLET

    def save(self, output: Path, config_json: str) -> tuple[Path, Path | None]:
        lora_path, triplet_path = save_lora_files(
            self.transformer, output, config_json, self.backbone.name, self.present, method=self.name
        )
        # ComfyUI reads the original checkpoint's key names: written beside, where the backbone has them
        # (one file per expert for a model of several, as the diffusers files)
        if self.backbone.name in ORIGINAL_LAYOUT and any(a in self.present for a in INFERENCE_ADAPTERS):
            experts = getattr(self.transformer, "experts", None) or {None: self.transformer}
            for index, (expert, module) in enumerate(experts.items()):
                path = lora_path.with_name(expert_file_name(expert, index))
                write_comfyui_lora(path, linear_out_features(module))
        return lora_path, triplet_path


class DirectLoraMethod(DreamRelationMethod):
    """Plain LoRA (same rank) on all attention projections of both streams; plain loss."""

    name = "direct_lora"


class OfficialOptimizerMethod(DreamRelationMethod):
    """DreamRelation with the authors' optimizer: unselected adapters at scale 0, kept in AdamW."""

    name = "dreamrelation_official_optimizer"


class InferenceStepsMethod(DreamRelationMethod):
    """DreamRelation whose HMT also draws the inference combination (relation + FFN, relation mask)."""

    name = "dreamrelation_inference_steps"


class RelationOnlyMethod(DreamRelationMethod):
    """The relation LoRA alone on Q, K: relation-mask-weighted loss on every step, with RCL."""

    name = "relation_only"


class RelationFfnMethod(DreamRelationMethod):
    """The relation and FFN LoRAs, no subject LoRAs (the ablation "w/o subject LoRAs")."""

    name = "relation_ffn"
