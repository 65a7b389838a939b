"""Interpretability tools: Q/K/V subspace analysis read straight from checkpoint files."""

from __future__ import annotations

from dreamrelation.analysis.subspace import (
    DEFAULT_RANKS,
    LAYOUTS,
    PAIRS,
    CheckpointReader,
    analyze_checkpoint,
    detect_family,
    discover_projections,
    open_checkpoint,
    save_report,
    similarity_from_bases,
    subspace_similarity,
    top_left_singular_vectors,
)

__all__ = [
    "DEFAULT_RANKS",
    "LAYOUTS",
    "PAIRS",
    "CheckpointReader",
    "analyze_checkpoint",
    "detect_family",
    "discover_projections",
    "open_checkpoint",
    "save_report",
    "similarity_from_bases",
    "subspace_similarity",
    "top_left_singular_vectors",
]
