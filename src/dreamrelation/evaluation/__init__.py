"""Evaluation on real videos: the paper's metrics (relation accuracy by a VLM judge, CLIP-T,
temporal consistency, FVD), its evaluation prompt set, and `dreamrelation evaluate`.

The pure arithmetic is importable without torch or any model::

    from dreamrelation.evaluation import frechet_distance, clip_t, temporal_consistency

The rest loads on first use: ``evaluate_folder(videos_dir, EvaluateConfig(...))`` scores a folder
written by ``dreamrelation generate --prompts`` (see ``manifest``), ``load_prompt_file("paper")``
is the shipped evaluation set (both kept in :mod:`dreamrelation.generation`, which writes them).
docs/evaluation.md describes the protocol.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from dreamrelation.evaluation.metrics import clip_t, frechet_distance, temporal_consistency

_EVALUATE = "dreamrelation.evaluation.evaluate"
_LAZY = {
    "EvaluateConfig": _EVALUATE,
    "EvaluationResults": _EVALUATE,
    "JudgeSettings": _EVALUATE,
    "FVDSettings": _EVALUATE,
    "evaluate_folder": _EVALUATE,
    "write_results": _EVALUATE,
    "summary_table": _EVALUATE,
    "read_manifest": "dreamrelation.generation.manifest",
    "Manifest": "dreamrelation.generation.manifest",
    "PromptEntry": "dreamrelation.generation.prompts",
    "load_prompt_file": "dreamrelation.generation.prompts",
    "build_eval_set": "dreamrelation.generation.prompts",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dreamrelation.evaluation' has no attribute {name!r}")


__all__ = ["clip_t", "frechet_distance", "temporal_consistency", *_LAZY]
