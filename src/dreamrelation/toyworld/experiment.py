"""One DreamRelation experiment in the toy world: exemplars -> cache -> train -> generate -> oracle.

:class:`ExperimentConfig` holds the toy experiment's settings; :func:`exemplar_clips` and
:func:`evaluation_prompts` draw its exemplars and held-out prompts per seed. ``dreamrelation demo``
runs one experiment with the helpers below (one seed, a report); ``dreamrelation benchmark toy``
(every method and ablation, several seeds) is a preset of the benchmark runner built from the same
config (``dreamrelation.toyworld.benchmark``). The real data path is exercised: exemplars are written
as a dataset folder (MP4 + caption + mask PNGs), cached by ``dreamrelation.cache``, trained by
``dreamrelation.train`` and rendered through the backbone's diffusers pipeline with the exported
inference LoRA loaded by ``load_lora_weights``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dreamrelation.backbones import Backbone, default_device, load_backbone
from dreamrelation.cache import build_cache
from dreamrelation.config import CacheConfig, TrainConfig, load_config
from dreamrelation.generate import load_inference_lora, render, to_uint8
from dreamrelation.toyworld import oracle
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
    write_dataset_folder,
)
from dreamrelation.toyworld.world import (
    render as render_scene,
)


class ExperimentConfig(BaseModel):
    """Everything that defines a toy experiment; defaults are the demo's."""

    model_config = ConfigDict(extra="forbid")

    relation: str = "shaking_hands"
    model: str = "shipped"
    exemplars: int = Field(20, gt=1)
    #: the exemplars' two subjects ("person-like") and their one background
    exemplar_subjects: tuple[tuple[str, str], tuple[str, str]] = (("person", "white"), ("person", "orange"))
    exemplar_background: str = "striped"
    eval_prompts: int = Field(16, gt=1)
    train_steps: int = Field(400, gt=0)
    learning_rate: float = 1e-3
    rank: int = 8
    sampling_steps: int = 24
    guidance_scale: float = GUIDANCE_SCALE
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


def prepare_cache(cfg: ExperimentConfig, workdir: Path, backbone: Backbone | None = None) -> Path:
    clips = exemplar_clips(cfg)
    data = workdir / "data" / cfg.relation
    write_dataset_folder(clips, data, [f"{cfg.relation}_{i:03d}" for i in range(len(clips))])
    frames, size = clips[0].frames.shape[0], clips[0].frames.shape[1]
    cache_cfg = load_config(
        CacheConfig,
        **{
            "model.backbone": "toy",
            "model.model": cfg.model,
            "model.dtype": "float32",
            "data": [{"path": str(data)}],
            "output": str(workdir / "cache"),
            "video.num_frames": frames,
            "video.height": size,
            "video.width": size,
        },
    )
    build_cache(cache_cfg, backbone=backbone, show_progress=False)
    return workdir / "cache"


def train_config(cfg: ExperimentConfig, method: str, cache: Path, output: Path) -> TrainConfig:
    """The experiment's training settings for ``method`` (a TrainConfig method)."""
    overrides = {
        "model.backbone": "toy",
        "model.model": cfg.model,
        "model.dtype": "float32",
        "cache": [str(cache)],
        "output": str(output),
        "max_steps": cfg.train_steps,
        "learning_rate": cfg.learning_rate,
        "warmup_steps": min(50, cfg.train_steps // 10),
        "checkpoint_every": cfg.train_steps,
        "lora.rank": cfg.rank,
        "lora.alpha": float(cfg.rank),
        "seed": cfg.seed,
        "resume": "never",
        "method": method,
    }
    if overrides.get("method") == "reversion":  # toy captions follow the toy world's templates
        overrides["reversion.relation_template"] = RELATIONS[cfg.relation]
    return load_config(TrainConfig, **overrides)


def generate_videos(
    backbone: Backbone,
    cfg: ExperimentConfig,
    prompts: list[EvalPrompt],
    on_video: Callable[[], None] | None = None,
) -> list[np.ndarray]:
    videos = []
    for p in prompts:
        frames = render(
            backbone,
            p.prompt,
            num_frames=16,
            height=32,
            width=32,
            num_inference_steps=cfg.sampling_steps,
            guidance_scale=cfg.guidance_scale,
            seed=p.seed % (2**31),
            show_progress=False,
        )
        videos.append(to_uint8(frames))
        if on_video is not None:
            on_video()
    return videos


def evaluate_videos(
    cfg: ExperimentConfig, videos: list[np.ndarray], prompts: list[EvalPrompt], reference: list[np.ndarray]
) -> dict[str, float]:
    return oracle.evaluate(
        videos,
        [p.subjects for p in prompts],
        cfg.relation,
        [tuple(s) for s in cfg.exemplar_subjects],
        cfg.exemplar_background,
        reference_videos=reference,
        prompt_backgrounds=[p.background for p in prompts],
    )


def base_backbone(cfg: ExperimentConfig) -> Backbone:
    """The toy base model on the default device (a GPU when there is one: the benchmark's generation
    then runs there, as its training does through accelerate)."""
    return load_backbone("toy", cfg.model, "float32", device=default_device())


def backbone_with_lora(cfg: ExperimentConfig, lora: Path) -> Backbone:
    backbone = base_backbone(cfg)
    load_inference_lora(backbone, lora)
    return backbone


def save_json(data: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
