"""Checking a pretrained toy base with the oracle: sample held-out prompts, score subject presence."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dreamrelation.generation.render import render_batch, to_uint8
from dreamrelation.toyworld.backbone import (
    GUIDANCE_SCALE,
    NUM_INFERENCE_STEPS,
    ToyBackbone,
)
from dreamrelation.toyworld.oracle import (
    MIN_PRESENT_FRACTION,
    NONE,
    classify_relation,
    subject_fidelity,
    track_subjects,
)
from dreamrelation.toyworld.protocol import CALIBRATION_PROMPT_SEED
from dreamrelation.toyworld.world import (
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    GENERIC_MOTIONS,
    RELATIONS,
    Subject,
    render,
    sample_scenes,
)

# ----------------------------------------------------------------------------- evaluation


def evaluation_prompts(
    n_per_relation: int = 5, seed: int = CALIBRATION_PROMPT_SEED
) -> list[tuple[str, str, tuple[Subject, Subject]]]:
    """(relation, prompt, subjects) for ``n_per_relation`` random subject pairs of every relation and
    generic motion; a separate seed from training, so the exact (subjects, background) combos are new."""
    rng = np.random.default_rng(seed)
    items = []
    for relation in (*RELATIONS, *GENERIC_MOTIONS):
        for scene in sample_scenes(relation, n_per_relation, rng):
            items.append((relation, render(scene).caption, (scene.subject1, scene.subject2)))
    return items


@torch.no_grad()
def sample_videos(
    backbone: ToyBackbone,
    prompts: list[str],
    *,
    num_inference_steps: int = NUM_INFERENCE_STEPS,
    guidance_scale: float = GUIDANCE_SCALE,
    seed: int = 0,
    batch_size: int = 8,
    frames: int = DEFAULT_FRAMES,
    size: int = DEFAULT_SIZE,
) -> list[np.ndarray]:
    """(F, H, W, 3) uint8 videos through the real pipeline; video i uses generator seed ``seed + i``."""
    videos: list[np.ndarray] = []
    for begin in range(0, len(prompts), batch_size):
        chunk = prompts[begin : begin + batch_size]
        frames_float = render_batch(
            backbone,
            chunk,
            [seed + begin + i for i in range(len(chunk))],
            num_frames=frames,
            height=size,
            width=size,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            show_progress=False,
        )
        videos.extend(to_uint8(frames_float))
    return videos


def subject_presence(videos: list[np.ndarray], prompts_subjects: list[tuple[Subject, Subject]]) -> float:
    """Fraction of videos where the oracle tracks BOTH prompted colours in at least half the frames
    (the precondition for classifying a relation; subject fidelity also demands the shapes)."""
    return float(
        np.mean(
            [
                all(track.present.mean() >= MIN_PRESENT_FRACTION for track in track_subjects(video, subjects))
                for video, subjects in zip(videos, prompts_subjects, strict=True)
            ]
        )
    )


def evaluate_base(
    backbone: ToyBackbone,
    n_per_relation: int = 5,
    num_inference_steps: int = NUM_INFERENCE_STEPS,
    guidance_scale: float = GUIDANCE_SCALE,
    seed: int = 0,
    include_generic: bool = True,
    prompt_seed: int = CALIBRATION_PROMPT_SEED,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Oracle check of a base model on fresh prompts.

    ``subject_fidelity`` and ``relation_accuracy`` are measured on the relation prompts
    (``n_per_relation`` x 8 videos): the base must draw the subjects but, never having seen a relation,
    rarely act it out. ``generic_subject_fidelity`` is measured on the generic-motion prompts.
    """
    items = evaluation_prompts(n_per_relation, prompt_seed)
    if not include_generic:
        items = [item for item in items if item[0] in RELATIONS]
    videos = sample_videos(
        backbone,
        [prompt for _, prompt, _ in items],
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        seed=seed,
        batch_size=batch_size,
    )
    relation_items = [
        (video, item) for video, item in zip(videos, items, strict=True) if item[0] in RELATIONS
    ]
    generic_items = [
        (video, item) for video, item in zip(videos, items, strict=True) if item[0] not in RELATIONS
    ]
    predicted = [classify_relation(video, subjects) for video, (_, _, subjects) in relation_items]
    hits = [p == relation for p, (_, (relation, _, _)) in zip(predicted, relation_items, strict=True)]
    metrics: dict[str, Any] = {
        "n_relation_videos": len(relation_items),
        "subject_fidelity": subject_fidelity(
            [video for video, _ in relation_items], [item[2] for _, item in relation_items]
        ),
        "relation_accuracy": float(np.mean(hits)),
        "predicted_none_fraction": float(np.mean([p == NONE for p in predicted])),
        "subject_presence": subject_presence(
            [video for video, _ in relation_items], [item[2] for _, item in relation_items]
        ),
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "seed": seed,
        "prompt_seed": prompt_seed,
    }
    if generic_items:
        metrics["n_generic_videos"] = len(generic_items)
        metrics["generic_subject_fidelity"] = subject_fidelity(
            [video for video, _ in generic_items], [item[2] for _, item in generic_items]
        )
    return metrics
