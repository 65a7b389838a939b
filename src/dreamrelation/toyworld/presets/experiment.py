"""The toy experiment's settings and draws: :class:`ExperimentConfig`, its exemplars
(:func:`exemplar_clips`), its held-out evaluation prompts (:func:`evaluation_prompts`) and their
ground-truth renders (:func:`reference_videos`), per seed.

``dreamrelation demo`` (one relation, one seed, base vs DreamRelation vs direct LoRA, a report) and
``dreamrelation toy benchmark`` (every method and ablation, several seeds) are presets of the benchmark
runner built from this config (``dreamrelation.toyworld.presets.demo``,
``dreamrelation.toyworld.presets.comparison``): the exemplars are written as a dataset folder (MP4 +
caption + mask PNGs), cached by ``dreamrelation.cache``, trained by ``dreamrelation.training.loop`` and
rendered through the backbone's diffusers pipeline with the exported inference LoRA loaded by
``load_inference_lora``.
``dreamrelation.testing.toy`` runs the same steps one by one, the reference the presets are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dreamrelation.backbones import Backbone, default_device, load_backbone
from dreamrelation.toyworld.backbone import GUIDANCE_SCALE
from dreamrelation.toyworld.world import (
    BACKGROUNDS,
    COLORS,
    RELATIONS,
    SHAPES,
    Clip,
    Scene,
    Subject,
    caption_for,
)
from dreamrelation.toyworld.world import (
    render as render_scene,
)

#: the demo's default relation, by the rule fixed before the recipes' seeds 1-2 were scored
#: (docs/toyworld.md, "What carries the relation"): no recipe beat direct LoRA, so the relation on which
#: direct LoRA's committed three-seed mean relation accuracy is highest (docs/toy_benchmark_base4.md)
DEMO_RELATION = "walking_apart"
#: why, in the demo report's words
DEMO_RELATION_NOTE = (
    "Walking apart is the demo's default relation: of the toy world's eight, the one direct LoRA acts out "
    "most often in the committed comparison (relation accuracy 0.354 ± 0.059 over three seeds at 1600 "
    "steps, against 0.117 averaged over the eight); no recipe beat direct LoRA there. At the demo's 400 "
    "steps neither LoRA acts it out on seed 0 (0.000); `dreamrelation demo --steps 1600`, the table's "
    "steps (8.3 minutes on 2 idle AMD EPYC cores), reproduces the table's seed 0: direct LoRA 0.312, "
    "DreamRelation 0.000. The full table, every recipe on every relation: docs/toy_variants.md in the "
    "dreamrelation repository."
)


class ExperimentConfig(BaseModel):
    """Everything that defines a toy experiment; defaults are the demo's."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    #: the relation the exemplars show and the LoRA learns (a toy-world relation)
    relation: str = DEMO_RELATION
    #: the toy base model: "shipped" (the pretrained weights in the package), "tiny" (random
    #: weights, tests) or a saved toy pipeline folder
    model: str = "shipped"
    #: exemplar videos rendered for training
    exemplars: int = Field(20, gt=1)
    #: the exemplars' two subjects ("person-like"; the demo and `toy benchmark` keep these and the
    #: background: the runner's toy prompt set holds out exactly these)
    exemplar_subjects: tuple[tuple[str, str], tuple[str, str]] = (("person", "white"), ("person", "orange"))
    #: the exemplars' background (the evaluation prompts use the others)
    exemplar_background: str = "striped"
    #: evaluation prompts: new subjects on new backgrounds, scored by the oracle
    eval_prompts: int = Field(16, gt=1)
    #: training steps (max_steps of the run; warmup is a tenth, at most 50)
    train_steps: int = Field(400, gt=0)
    #: AdamW learning rate of the training run
    learning_rate: float = 1e-3
    #: LoRA rank of every adapter (alpha = rank)
    rank: int = 8
    #: sampling steps of each generated video
    sampling_steps: int = 24
    #: classifier-free guidance of the generated videos
    guidance_scale: float = GUIDANCE_SCALE
    #: seed of the exemplars, the evaluation prompts and the training run
    seed: int = 0

    def check(self) -> None:
        if self.relation not in RELATIONS:
            raise ValueError(f"unknown relation {self.relation!r}; choose one of: {', '.join(RELATIONS)}")


@dataclass
class EvalPrompt:
    prompt: str
    subjects: tuple[Subject, Subject]
    background: str
    seed: int


def exemplar_clips(cfg: ExperimentConfig) -> list[Clip]:
    rng = np.random.default_rng(cfg.seed)
    s1, s2 = cfg.exemplar_subjects
    return [
        render_scene(
            Scene(tuple(s1), tuple(s2), cfg.relation, cfg.exemplar_background, int(rng.integers(2**31)))
        )
        for _ in range(cfg.exemplars)
    ]


def evaluation_prompts(cfg: ExperimentConfig) -> list[EvalPrompt]:
    """New subjects (no exemplar shape or colour) on new backgrounds, deterministic by seed."""
    rng = np.random.default_rng(10_000 + cfg.seed)
    used_shapes = {s for s, _ in cfg.exemplar_subjects}
    used_colors = {c for _, c in cfg.exemplar_subjects}
    shapes = [s for s in SHAPES if s not in used_shapes]
    colors = [c for c in COLORS if c not in used_colors]
    backgrounds = [b for b in BACKGROUNDS if b != cfg.exemplar_background]
    prompts = []
    for _ in range(cfg.eval_prompts):
        shape1, shape2 = (shapes[i] for i in rng.integers(0, len(shapes), 2))
        color1, color2 = (colors[i] for i in rng.choice(len(colors), 2, replace=False))
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        scene = Scene((shape1, color1), (shape2, color2), cfg.relation, background, int(rng.integers(2**31)))
        prompts.append(
            EvalPrompt(caption_for(scene), (scene.subject1, scene.subject2), background, scene.seed)
        )
    return prompts


def reference_videos(cfg: ExperimentConfig, prompts: list[EvalPrompt]) -> list[np.ndarray]:
    """Ground-truth renders of the evaluation prompts: the target distribution for the toy FVD."""
    return [
        render_scene(Scene(p.subjects[0], p.subjects[1], cfg.relation, p.background, p.seed)).frames
        for p in prompts
    ]


def base_backbone(cfg: ExperimentConfig) -> Backbone:
    """The toy base model on the default device (a GPU when there is one), as the runner loads it."""
    return load_backbone("toy", cfg.model, "float32", device=default_device())
