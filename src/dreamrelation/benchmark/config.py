"""`benchmark run`'s config: relations, rows (methods and named variants), seeds, prompts, generation and
evaluation settings, checked before any work (docs/benchmark.md)."""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dreamrelation.benchmark.prompt_sets import drawn_prompt_set
from dreamrelation.config import ModelSpec, Seed
from dreamrelation.evaluation.evaluate import EvaluateConfig
from dreamrelation.training.methods.settings import METHOD_NAMES, MethodName

BASE = "base"
SEED_STRIDE = 1_000_000
DONE = "DONE.json"

#: the table's columns (the overall numbers of `dreamrelation evaluate`)
METRIC_LABELS: dict[str, str] = {
    "relation_accuracy": "Relation accuracy ↑",
    "clip_t": "CLIP-T ↑",
    "temporal_consistency": "Temporal consistency ↑",
    "fvd": "FVD ↓",
    # the toy world's oracle (toy backbone with the `toy` prompt set)
    "oracle_relation_accuracy": "Oracle relation accuracy ↑",
    "oracle_subject_fidelity": "Oracle subject fidelity ↑",
    "oracle_appearance_leakage": "Oracle appearance leakage ↓",
    "oracle_temporal_consistency": "Oracle temporal consistency ↑",
    "oracle_toy_fvd": "Oracle toy FVD ↓",
}
#: keys of ``ModelSpec``/cache/training settings the runner sets itself
RUNNER_CACHE_KEYS = ("model", "data", "output", "device")
RUNNER_TRAIN_KEYS = ("model", "cache", "output", "method", "seed")
#: the placeholder of a per-seed dataset folder in ``relations[].data``
SEED_FIELD = "seed"
#: a variant's name is a folder name under runs/<relation>/
_ROW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RelationData(_Strict):
    """One relation of the table and its exemplar videos."""

    #: the relation (name, NTU code or id of the shared table, e.g. shaking_hands or A058)
    name: str
    #: its dataset folder (videos, captions, masks; docs/data.md); with ``{seed}`` in the path
    #: (data/hugging/seed{seed}) each benchmark seed trains on its own folder, cached separately
    data: Path
    #: real videos for FVD (default: evaluation.reference)
    reference: Path | None = None

    @field_validator("data")
    @classmethod
    def _only_the_seed_placeholder(cls, data: Path) -> Path:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(str(data)) if f is not None]
        except ValueError as exc:
            raise ValueError(f"{data}: {exc} (the only placeholder is {{{SEED_FIELD}}})") from None
        unknown = sorted({f for f in fields if f != SEED_FIELD})
        if unknown:
            raise ValueError(f"{data}: unknown placeholder {unknown}; the only one is {{{SEED_FIELD}}}")
        return data

    @property
    def per_seed(self) -> bool:
        return f"{{{SEED_FIELD}}}" in str(self.data)

    def data_for(self, seed: int) -> Path:
        """The dataset folder that benchmark seed ``seed`` trains on."""
        return Path(str(self.data).format(seed=seed)) if self.per_seed else self.data


class Variant(_Strict):
    """A named row of the table: a training method with its own training settings (an ablation, a
    LoRA placement), e.g. ``wo_hmt: {method: dreamrelation, train: {loss.hybrid_masks: false}}``."""

    #: the training method it runs
    method: MethodName
    #: TrainConfig settings over ``train`` and ``method_train[method]`` (dotted or nested keys)
    train: dict[str, Any] = Field(default_factory=dict)


class PromptSettings(_Strict):
    """The prompts every run renders and the evaluation scores."""

    #: "paper" (the shipped set, filtered to the benchmark's relations), "toy" (the toy world's
    #: held-out subjects and backgrounds, scored by its oracle too) or a JSON/JSONL prompt file
    set: str = "paper"
    #: keep only the first N prompts of each relation (quick runs); None keeps all (paper: 40, toy: 16)
    per_relation: int | None = Field(None, gt=0)


class GenerationSettings(_Strict):
    """How every run renders its prompts (as `dreamrelation generate`; paper settings)."""

    #: sampling steps (paper: 64)
    num_inference_steps: int = Field(64, gt=0)
    #: classifier-free guidance (paper: 6.0)
    guidance_scale: float = 6.0
    #: frames per video; must fit the VAE (Mochi 6k+1, Wan and HunyuanVideo 4k+1)
    num_frames: int = Field(61, gt=0)
    #: video height (a multiple of 8)
    height: int = Field(480, gt=0)
    #: video width (a multiple of 8)
    width: int = Field(848, gt=0)
    #: frame rate of the written videos
    fps: int = Field(30, gt=0)
    #: strength of the trained LoRA (1.0: as trained)
    lora_scale: float = 1.0
    #: write the videos losslessly (H.264 RGB, qp 0) so the metrics read back the exact rendered
    #: pixels (lossy yuv420p smears the toy world's 32x32 sprites); files are larger
    lossless: bool = False


class BenchmarkEvaluation(EvaluateConfig):
    """``evaluation`` of a benchmark: EvaluateConfig, except that FVD's reference videos may come
    per relation (``relations[].reference``) instead; ``plan`` checks each relation's own config."""

    @model_validator(mode="after")
    def _fvd_needs_reference_videos(self) -> BenchmarkEvaluation:  # overrides EvaluateConfig's check
        return self


class BenchmarkConfig(_Strict):
    """`dreamrelation benchmark run`: relations x methods x seeds, evaluated into one table."""

    model: ModelSpec = ModelSpec()
    #: the relations, one table each (and one averaged over them)
    relations: list[RelationData] = Field(min_length=1)
    #: the rows: training methods (dreamrelation, direct_lora, reversion, motion_inversion,
    #: motion_inversion_rcl) and names from ``variants``, each once
    methods: list[str] = Field(min_length=1)
    #: named variants of a method usable in ``methods``: {name: {method, train}}
    variants: dict[str, Variant] = Field(default_factory=dict)
    #: one run per seed: its training seed and its sampling noise (toy prompts: its own prompt draw);
    #: the tables report mean ± std over the seeds
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    #: add the untrained base model as the ``base`` row
    base: bool = True
    #: CacheConfig settings (e.g. video.num_frames); model, data and output are the runner's
    cache: dict[str, Any] = Field(default_factory=dict)
    #: TrainConfig settings for every method (e.g. max_steps); each method's defaults fill the rest
    train: dict[str, Any] = Field(default_factory=dict)
    #: TrainConfig settings for one method only, over ``train``
    method_train: dict[MethodName, dict[str, Any]] = Field(default_factory=dict)
    prompts: PromptSettings = PromptSettings()
    generation: GenerationSettings = GenerationSettings()
    #: EvaluateConfig settings of the scoring (reference: the real videos for FVD of every relation
    #: that names none in relations[].reference)
    evaluation: BenchmarkEvaluation = BenchmarkEvaluation()
    #: device for caching, rendering and scoring (None: cuda when available, else cpu); training
    #: uses accelerate's
    device: str | None = None

    @field_validator("methods", "seeds")
    @classmethod
    def _unique(cls, values: list) -> list:
        if len(set(values)) != len(values):
            raise ValueError(f"{values} repeats an entry")
        return values

    @model_validator(mode="after")
    def _rows_known(self) -> BenchmarkConfig:
        for name in self.variants:
            if name in METHOD_NAMES or name == BASE:
                raise ValueError(f"variants: {name!r} is the name of a method; give the variant its own name")
            if not _ROW_NAME.fullmatch(name):
                raise ValueError(f"variants: {name!r} is not a folder name (letters, digits, _ . -)")
        unknown = [m for m in self.methods if m not in METHOD_NAMES and m not in self.variants]
        if unknown:
            variants = (
                f"; variants: {', '.join(self.variants)}" if self.variants else " (or define it in variants)"
            )
            raise ValueError(f"methods: unknown {unknown}; methods: {', '.join(METHOD_NAMES)}{variants}")
        return self

    def training_method(self, row: str) -> str:
        """The training method behind a row of ``methods``."""
        return self.variants[row].method if row in self.variants else row

    @model_validator(mode="after")
    def _relations_known(self) -> BenchmarkConfig:
        from dreamrelation.relations import get_relation

        names = []
        for item in self.relations:
            try:
                item.name = get_relation(item.name).name
            except KeyError as exc:
                raise ValueError(f"relations: {exc.args[0]}") from None
            names.append(item.name)
        if len(set(names)) != len(names):
            raise ValueError(f"relations: {names} names a relation twice")
        drawn = drawn_prompt_set(self.prompts.set)
        if drawn is not None:
            if self.model.backbone != drawn.backbone:
                raise ValueError(f"prompts.set {drawn.name} needs model.backbone {drawn.backbone}")
            unknown = [n for n in names if n not in drawn.relations]
            if unknown:
                known = ", ".join(drawn.relations)
                raise ValueError(f"relations: the {drawn.name} prompt set has no {unknown}; it has {known}")
            if self.prompts.per_relation is not None and self.prompts.per_relation < drawn.min_per_relation:
                raise ValueError(
                    f"prompts.per_relation: the {drawn.name} prompt set's scorer needs at least "
                    f"{drawn.min_per_relation} prompts"
                )
        return self


def load_benchmark_config(path: str | Path) -> BenchmarkConfig:
    from dreamrelation.config import load_config

    return load_config(BenchmarkConfig, path)
