"""The toy experiment's steps called one by one, without the benchmark runner: the independent
computation the toy presets (`dreamrelation demo`, `dreamrelation toy benchmark`) are checked against.

Exemplars -> dataset folder -> cache -> :class:`~dreamrelation.training.loop.Trainer` -> render each prompt
through the backbone's pipeline -> the oracle on the frames in memory (no video file in between), with
the settings the toy experiment always used. This was the demo's and the toy benchmark's own loop
before both became presets of the runner; the presets must give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dreamrelation.backbones import Backbone
from dreamrelation.config import CacheConfig, TrainConfig, load_config
from dreamrelation.toyworld.presets.experiment import (
    EvalPrompt,
    ExperimentConfig,
    base_backbone,
    evaluation_prompts,
    exemplar_clips,
    reference_videos,
)
from dreamrelation.toyworld.world import RELATIONS, write_dataset_folder


def toy_train_config(cfg: ExperimentConfig, method: str, cache: Path, output: Path) -> TrainConfig:
    """The toy experiment's training settings for ``method`` (a TrainConfig method)."""
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
    if method == "reversion":  # toy captions follow the toy world's templates
        overrides["reversion.relation_template"] = RELATIONS[cfg.relation]
    return load_config(TrainConfig, **overrides)


def toy_cache(cfg: ExperimentConfig, workdir: Path) -> Path:
    """The exemplars written as a dataset folder under ``workdir`` and cached; returns the cache."""
    from dreamrelation.cache import build_cache

    clips = exemplar_clips(cfg)
    data = workdir / "data" / cfg.relation
    write_dataset_folder(clips, data, [f"{cfg.relation}_{i:03d}" for i in range(len(clips))])
    frames, size = clips[0].frames.shape[0], clips[0].frames.shape[1]
    overrides = {
        "model.backbone": "toy",
        "model.model": cfg.model,
        "model.dtype": "float32",
        "data": [{"path": str(data)}],
        "output": str(workdir / "cache"),
        "video.num_frames": frames,
        "video.height": size,
        "video.width": size,
    }
    build_cache(load_config(CacheConfig, **overrides), show_progress=False)
    return workdir / "cache"


def toy_videos(backbone: Backbone, cfg: ExperimentConfig, prompts: Sequence[EvalPrompt]) -> list[np.ndarray]:
    """Each prompt rendered with its own noise seed, as uint8 frames."""
    from dreamrelation.generation.render import render, to_uint8

    return [
        to_uint8(
            render(
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
        )
        for p in prompts
    ]


def toy_reference_metrics(
    cfg: ExperimentConfig, methods: Sequence[str], workdir: Path, base: bool = True
) -> dict[str, dict[str, float]]:
    """Every oracle score of the base model (``base``) and of each of ``methods`` trained on ``cfg``'s
    exemplars: ``{"base" | method: scores}``."""
    from dreamrelation.generation.render import load_inference_lora
    from dreamrelation.toyworld import oracle
    from dreamrelation.training.loop import Trainer

    workdir = Path(workdir)
    cache = toy_cache(cfg, workdir)
    prompts = evaluation_prompts(cfg)
    reference = reference_videos(cfg, prompts)
    backbones = {"base": base_backbone(cfg)} if base else {}
    for method in methods:
        result = Trainer(toy_train_config(cfg, method, cache, workdir / method)).run(show_progress=False)
        backbones[method] = base_backbone(cfg)
        load_inference_lora(backbones[method], result.lora_path)
    return {
        row: oracle.evaluate(
            toy_videos(backbone, cfg, prompts),
            [p.subjects for p in prompts],
            cfg.relation,
            [tuple(s) for s in cfg.exemplar_subjects],
            cfg.exemplar_background,
            reference_videos=reference,
            prompt_backgrounds=[p.background for p in prompts],
        )
        for row, backbone in backbones.items()
    }
