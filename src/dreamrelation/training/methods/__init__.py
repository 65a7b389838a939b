"""Training methods on one harness: DreamRelation and the paper's baselines (docs/baselines.md).

Each method is one small class (:class:`~dreamrelation.training.methods.base.TrainingMethod`): which
parameters train, how noise levels are drawn, what the loss sees, what is saved and how
``dreamrelation generate`` applies the saved file. ``Trainer`` runs any of them. Submodules are
imported on first use, so ``dreamrelation.config`` can read :mod:`.settings` without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dreamrelation.training.methods.settings import METHOD_DEFAULTS, METHOD_NAMES, MethodName

if TYPE_CHECKING:
    from dreamrelation.training.methods.base import TrainingMethod

_MODULES = {
    "dreamrelation": ("dreamrelation.training.methods.lora", "DreamRelationMethod"),
    "direct_lora": ("dreamrelation.training.methods.lora", "DirectLoraMethod"),
    "dreamrelation_official_optimizer": ("dreamrelation.training.methods.lora", "OfficialOptimizerMethod"),
    "dreamrelation_inference_steps": ("dreamrelation.training.methods.lora", "InferenceStepsMethod"),
    "relation_only": ("dreamrelation.training.methods.lora", "RelationOnlyMethod"),
    "relation_ffn": ("dreamrelation.training.methods.lora", "RelationFfnMethod"),
    "reversion": ("dreamrelation.training.methods.reversion", "ReVersionMethod"),
    "motion_inversion": ("dreamrelation.training.methods.motion_inversion", "MotionInversionMethod"),
    "motion_inversion_rcl": ("dreamrelation.training.methods.motion_inversion", "MotionInversionRclMethod"),
}


def method_class(name: str) -> type[TrainingMethod]:
    """The class implementing method ``name`` (one of :data:`METHOD_NAMES`)."""
    if name not in _MODULES:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)}")
    module, cls = _MODULES[name]
    return getattr(importlib.import_module(module), cls)


__all__ = ["METHOD_DEFAULTS", "METHOD_NAMES", "MethodName", "method_class"]
