"""The toy world's prompt set for the benchmark runner (``prompts.set: toy``): prompts drawn per
seed with subjects and backgrounds no default exemplar has, scored by the toy oracle.

Registered with :mod:`dreamrelation.benchmark.prompt_sets` on import (the runner imports it by name
when a config asks for ``toy``), so the generic runner never branches on the toy world.
"""

from __future__ import annotations

import re
from pathlib import Path

from dreamrelation.benchmark.prompt_sets import DrawnPromptSet, register_prompt_set
from dreamrelation.errors import InputError
from dreamrelation.generation.prompts import PromptEntry

#: the name a benchmark config gives this set (``prompts.set``)
PROMPT_SET = "toy"


def toy_prompts(relation: str, count: int | None, seed: int = 0) -> tuple[list, list]:
    """The toy world's evaluation prompts of ``relation`` for benchmark seed ``seed`` (as the toy
    experiment draws them: subjects and backgrounds no default exemplar has, their own noise seeds)
    as prompt entries, and their scenes."""
    from dreamrelation.toyworld.presets.experiment import ExperimentConfig, evaluation_prompts
    from dreamrelation.toyworld.world import subject_phrase

    scenes = evaluation_prompts(ExperimentConfig(relation=relation, eval_prompts=count or 16, seed=seed))
    entries = [
        PromptEntry(
            id=f"{relation}-{k:02d}",
            prompt=p.prompt,
            seed=p.seed % (2**31),
            relation=relation,
            subject1=subject_phrase(p.subjects[0]),
            subject2=subject_phrase(p.subjects[1]),
        )
        for k, p in enumerate(scenes)
    ]
    return entries, scenes


def toy_exemplars(data: Path) -> tuple[list[tuple[str, str]], str | None]:
    """The subjects ``(shape, colour)`` and the background named by a toy dataset folder's captions
    (for the oracle's leakage: what the exemplars looked like)."""

    from dreamrelation.toyworld.world import BACKGROUNDS, COLORS, SHAPES

    subject = re.compile(rf"\ban? ({'|'.join(COLORS)}) ({'|'.join(SHAPES)})\b")
    background = re.compile(rf"\bon an? ({'|'.join(BACKGROUNDS)}) background")
    subjects: list[tuple[str, str]] = []
    backgrounds: set[str] = set()
    for caption in sorted(Path(data).glob("*.txt")):
        text = caption.read_text("utf-8")
        for color, shape in subject.findall(text):
            if (shape, color) not in subjects:
                subjects.append((shape, color))
        backgrounds.update(background.findall(text))
    if not subjects:
        raise InputError(data, "no caption names a toy subject ('a red circle')", "use a toy dataset folder")
    return subjects, (sorted(backgrounds)[0] if len(backgrounds) == 1 else None)


def toy_oracle_metrics(
    videos: Path, relation: str, data: Path, count: int | None, seed: int = 0
) -> dict[str, float]:
    """The toy oracle's scores of a rendered ``toy`` prompt set of benchmark seed ``seed`` (frames
    read back from the MP4s), against the ground-truth renders of the same prompts for the toy FVD."""
    from dreamrelation.evaluation.evaluate import read_frames
    from dreamrelation.generation.manifest import read_manifest
    from dreamrelation.toyworld import oracle
    from dreamrelation.toyworld.presets.experiment import ExperimentConfig, reference_videos

    entries, scenes = toy_prompts(relation, count, seed)
    by_id = {e.id: scene for e, scene in zip(entries, scenes, strict=True)}
    records = read_manifest(videos).videos
    chosen = [by_id[r.entry.id] for r in records]
    exemplar_subjects, exemplar_background = toy_exemplars(data)
    scores = oracle.evaluate(
        [read_frames(r.video) for r in records],
        [p.subjects for p in chosen],
        relation,
        exemplar_subjects,
        exemplar_background,
        reference_videos=reference_videos(ExperimentConfig(relation=relation), chosen),
        prompt_backgrounds=[p.background for p in chosen],
    )
    # every score the oracle gives (the leakage parts and the video count too: the demo reports them);
    # the table keeps those of METRIC_LABELS
    return {f"oracle_{k}": float(v) for k, v in scores.items()}


def _draw(relation: str, count: int | None, seed: int) -> list[PromptEntry]:
    return toy_prompts(relation, count, seed)[0]


def _register() -> None:
    from dreamrelation.toyworld.world import RELATIONS

    register_prompt_set(
        DrawnPromptSet(
            name=PROMPT_SET,
            backbone="toy",
            relations=tuple(RELATIONS),
            min_per_relation=2,  # the oracle's spread needs two
            draw=_draw,
            score=toy_oracle_metrics,
            label="toy, drawn per seed",  # before: seed 0's prompts for every seed
        )
    )


_register()
