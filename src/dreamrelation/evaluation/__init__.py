"""Evaluation on real videos: the paper's metrics (relation accuracy by a VLM judge, CLIP-T,
temporal consistency, FVD), its evaluation prompt set, and `dreamrelation evaluate`.

The pure arithmetic is importable without loading any model::

    from dreamrelation.evaluation import frechet_distance, clip_t, temporal_consistency
"""

from dreamrelation.evaluation.metrics import clip_t, frechet_distance, temporal_consistency

__all__ = ["clip_t", "frechet_distance", "temporal_consistency"]
