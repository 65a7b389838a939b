"""The interface between ``Trainer`` and a training method.

The trainer owns the loop (data order, noise, the flow-matching prediction, the reconstruction
loss, RCL with its memory bank, the optimizer, checkpoints); a method decides what trains and the
few places where methods differ. Defaults reproduce DreamRelation's loop exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from dreamrelation.backbones import Backbone

if TYPE_CHECKING:
    from dreamrelation.cache import CachedDataset
    from dreamrelation.config import TrainConfig

#: safetensors metadata keys every method file carries
METHOD_KEY = "dreamrelation.method"
BACKBONE_KEY = "dreamrelation.backbone"
CONFIG_KEY = "dreamrelation.config"


class TrainingMethod(ABC):
    """One method's trainable state and its hooks into the training step."""

    name: ClassVar[str]
    #: the file written into the run folder that ``generate --lora`` loads
    file_name: ClassVar[str]
    #: runs the text encoders at every step (the others train from the cached embeddings alone)
    needs_text_encoders: ClassVar[bool] = False

    def __init__(self, config: TrainConfig, backbone: Backbone, dataset: CachedDataset) -> None:
        self.config = config
        self.backbone = backbone
        self.dataset = dataset

    # ----- what trains ----------------------------------------------------------------------
    @abstractmethod
    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable parameters, in a fixed order (the optimizer's)."""

    # ----- the training step -----------------------------------------------------------------
    def begin_step(self, step: int) -> str | None:
        """Prepare the model for ``step``; return the adapter selected for a masked loss (or None)."""
        return None

    def step_label(self, selected: str | None) -> str:
        """What the progress bar and history show for a step."""
        return selected or "all"

    def sample_sigma(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Noise levels σ ∈ [0, 1] of one batch (uniform; σ = 1 is pure noise)."""
        return torch.rand(batch_size, generator=generator)

    def conditioning(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Text conditioning of the batch (default: the cached embeddings)."""
        return batch["text"]

    def loss_inputs(
        self, prediction: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the reconstruction loss compares (default: prediction and target as they are)."""
        return prediction, target

    def extra_losses(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Weighted method-specific loss terms added to the total (name -> scalar)."""
        return {}

    # ----- state -------------------------------------------------------------------------------
    @abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The trained tensors (checkpoints)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state_dict`."""

    def inference_mode(self) -> None:
        """Make the model generate as the saved file will (validation during training); most
        methods already do."""
        return None

    def output_paths(self, output: Path) -> tuple[Path, Path | None]:
        """Where :meth:`save` writes (known on every process, written by the main one)."""
        return Path(output) / self.file_name, None

    @abstractmethod
    def save(self, output: Path, config_json: str) -> tuple[Path, Path | None]:
        """Write the file ``dreamrelation generate --lora`` loads (+ an optional second file)."""

    @staticmethod
    def apply_file(backbone: Backbone, path: Path, meta: dict[str, Any], scale: float = 1.0) -> str | None:
        """Apply a saved file to ``backbone`` for generation (non-LoRA methods; LoRA files go through
        diffusers' ``load_lora_weights`` in :func:`dreamrelation.generation.render.load_inference_lora`).
        Returns the text prompts must contain to use what was learned, if any."""
        raise NotImplementedError(f"{path}: LoRA files are loaded by load_inference_lora")

    def metadata(self, config_json: str) -> dict[str, str]:
        return {
            "format": "pt",
            METHOD_KEY: self.name,
            BACKBONE_KEY: self.backbone.name,
            CONFIG_KEY: config_json,
        }
