"""Evaluation on real videos: the paper's metrics (relation accuracy by a VLM judge, CLIP-T,
temporal consistency, FVD), its evaluation prompt set, and `dreamrelation evaluate`.

The pure arithmetic is importable without torch or any model::

    from dreamrelation.evaluation import frechet_distance, clip_t, temporal_consistency

The rest loads on first use: ``evaluate_folder(videos_dir, EvaluateConfig(...))`` scores a folder
written by ``dreamrelation generate --prompts`` (see ``manifest``), ``load_prompt_file("paper")``
is the shipped evaluation set. docs/evaluation.md describes the protocol.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from dreamrelation.evaluation.metrics import clip_t, frechet_distance, temporal_consistency

_LAZY = {
    "EvaluateConfig": "evaluate",
    "EvaluationResults": "evaluate",
    "JudgeSettings": "evaluate",
    "FVDSettings": "evaluate",
    "evaluate_folder": "evaluate",
    "write_results": "evaluate",
    "summary_table": "evaluate",
    "read_manifest": "manifest",
    "Manifest": "manifest",
    "PromptEntry": "prompts",
    "load_prompt_file": "prompts",
    "build_eval_set": "prompts",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"dreamrelation.evaluation.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'dreamrelation.evaluation' has no attribute {name!r}")


__all__ = ["clip_t", "frechet_distance", "temporal_consistency", *_LAZY]
