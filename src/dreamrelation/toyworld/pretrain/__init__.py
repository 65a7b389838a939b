"""Train the toy base model on generic motions, relations held out (`dreamrelation toy pretrain`).

The toy backbone (:mod:`dreamrelation.toyworld.backbone`) starts from random weights. :func:`pretrain`
trains ALL its transformer weights (no LoRA) the way a video foundation model is trained, on clips
of the toy world rendered on the fly: every shape, colour and background, but only the generic
motions (standing still, drifting together, moving alone, wandering). The relations are never
shown, so the base model draws the prompted subjects yet cannot act out "shaking hands" - which is
what DreamRelation must then teach it from a few exemplars.

Training is flow matching in the backbone's own convention (``add_noise`` / ``flow_target`` /
``model_timestep`` of :class:`~dreamrelation.backbones.base.Backbone`), AdamW with warmup and cosine
decay, caption dropout (so classifier-free guidance works) and an EMA of the weights, which is what
gets saved. Every clip comes from a generator seeded by (seed, step): a run is reproducible.
:func:`evaluate_base` then samples the saved model with the oracle to check it. The command line
over these is in :mod:`dreamrelation.cli.toy`.
"""

from dreamrelation.toyworld.pretrain.config import PretrainConfig, preflight
from dreamrelation.toyworld.pretrain.data import (
    CONTEXT_NOISE_WORDS,
    batch_loader,
    context_noise_caption,
    drop_captions,
    training_clips,
)
from dreamrelation.toyworld.pretrain.evaluation import evaluate_base, evaluation_prompts, sample_videos
from dreamrelation.toyworld.pretrain.loop import VALIDATION_SIGMAS, denoising_errors, pretrain
from dreamrelation.toyworld.run_state import ema_decay_at, learning_rate_at

__all__ = [
    "CONTEXT_NOISE_WORDS",
    "VALIDATION_SIGMAS",
    "PretrainConfig",
    "batch_loader",
    "context_noise_caption",
    "denoising_errors",
    "drop_captions",
    "ema_decay_at",
    "evaluate_base",
    "evaluation_prompts",
    "learning_rate_at",
    "preflight",
    "pretrain",
    "sample_videos",
    "training_clips",
]
