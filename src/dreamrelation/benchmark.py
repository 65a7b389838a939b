"""`dreamrelation benchmark run CONFIG.yaml`: the paper's comparison as one resumable runner.

For every relation (a dataset folder) the runner caches the videos once, trains every (method,
seed), renders the evaluation prompts with each trained file and with the base model (the ``base``
row), scores each folder with ``dreamrelation.evaluation`` and writes the table: mean ± std over
seeds, per relation and averaged over relations, as Markdown, CSV and a PNG plot. With the toy
backbone and the ``toy`` prompt set, the toy world's oracle scores every run as well.

Output layout (every stage leaves a marker written atomically, so a rerun skips it)::

    OUT/cache/<relation>/              the cache (+ DONE.json); OUT/cache/<relation>/seed<k>/ when the
                                       relation's dataset folder depends on the seed ({seed} in data)
    OUT/runs/<relation>/<method>/seed<k>/train/        training output (+ DONE.json)
    OUT/runs/<relation>/<method>/seed<k>/videos/       rendered prompts (+ manifest.json, DONE.json)
    OUT/runs/<relation>/<method>/seed<k>/evaluation/   results.json, per_video.csv, summary.csv
    OUT/results.json, OUT/benchmark.md, OUT/benchmark.csv, OUT/benchmark.png

Benchmark seed ``k`` seeds training and shifts every prompt's noise seed by ``k * SEED_STRIDE``, so
seed 0 renders the shipped set's own seeds and the base row has a seed spread too. The ``toy`` set
instead draws its prompts per seed, as the toy world's experiments always have (new subjects,
backgrounds and noise seeds for each seed; no shift).

A row of the table is a training method or a named variant of one (``variants``: the method plus
its own training settings, e.g. an ablation).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dreamrelation.config import CacheConfig, ModelSpec, TrainConfig
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.evaluation.evaluate import EvaluateConfig
from dreamrelation.files import atomic_target, write_text_atomic
from dreamrelation.methods.settings import METHOD_NAMES, MethodName

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
#: the prompt set of the toy world: new subjects and backgrounds per relation (toy backbone only)
TOY_PROMPTS = "toy"
#: keys of ``ModelSpec``/cache/training settings the runner sets itself
RUNNER_CACHE_KEYS = ("model", "data", "output", "device")
RUNNER_TRAIN_KEYS = ("model", "cache", "output", "method", "seed")
#: the placeholder of a per-seed dataset folder in ``relations[].data``
SEED_FIELD = "seed"
#: a variant's name is a folder name under runs/<relation>/
_ROW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
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
        if self.prompts.set == TOY_PROMPTS:
            from dreamrelation.toyworld.world import RELATIONS as TOY_RELATIONS

            if self.model.backbone != "toy":
                raise ValueError("prompts.set toy needs model.backbone toy")
            unknown = [n for n in names if n not in TOY_RELATIONS]
            if unknown:
                raise ValueError(
                    f"relations: the toy world has no {unknown}; it has {', '.join(TOY_RELATIONS)}"
                )
            if self.prompts.per_relation == 1:
                raise ValueError("prompts.per_relation: the toy oracle needs at least 2 prompts")
        return self


def load_benchmark_config(path: str | Path) -> BenchmarkConfig:
    from dreamrelation.config import load_config

    return load_config(BenchmarkConfig, path)


# ----- the plan: every stage's config, built and checked before any work ----------------------


@dataclass
class Run:
    relation: str
    method: str  # a row: a training method, a variant's name, or BASE
    seed: int
    folder: Path
    train: TrainConfig | None
    data: Path  # the dataset folder this seed trains on (the toy oracle reads its captions)
    prompts: list  # PromptEntry list rendered by this run
    noise_offset: int  # added to every prompt's noise seed

    @property
    def label(self) -> str:
        return f"{self.relation} / {self.method} / seed {self.seed}"


@dataclass
class Plan:
    config: BenchmarkConfig
    output: Path
    relations: list[str]
    caches: dict[str, CacheConfig]  # "<relation>" or "<relation>/seed<k>" -> its cache
    evaluation: dict[str, EvaluateConfig]
    runs: list[Run]


def _set_dotted(data: dict, key: str, value: object) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _nested(settings: dict) -> dict:
    """``{"lora.rank": 8}`` and ``{"lora": {"rank": 8}}`` alike, as nested dicts (a copy)."""
    data: dict = {}
    for key, value in settings.items():
        if "." in key:
            _set_dotted(data, key, copy.deepcopy(value))
        else:
            _merge(data, {key: value})
    return data


def _merge(into: dict, settings: dict) -> dict:
    """Deep merge of nested ``settings`` into ``into`` (later values win, dicts merge)."""
    for key, value in settings.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def _build(cls: type, user: dict, fixed: dict[str, object], where: str, owned: Sequence[str]) -> Any:
    data = _nested(user)
    taken = [k for k in data if k in owned]
    if taken:
        raise ConfigError(f"{where}: {taken} are set by the benchmark runner; remove them")
    for key, value in fixed.items():
        _set_dotted(data, key, value)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: invalid {cls.__name__}:\n{exc}") from None


def _prompts(config: BenchmarkConfig) -> dict[tuple[str, int], list]:
    """(relation, seed) -> its PromptEntry list, checked."""
    from dreamrelation.evaluation.prompts import load_prompt_file

    count = config.prompts.per_relation
    if config.prompts.set == TOY_PROMPTS:  # drawn per seed, as the toy world's experiments are
        return {
            (item.name, seed): toy_prompts(item.name, count, seed)[0]
            for item in config.relations
            for seed in config.seeds
        }
    names = ",".join(item.name for item in config.relations)
    try:
        entries = load_prompt_file(config.prompts.set, names)
    except KeyError as exc:
        raise ConfigError(f"prompts.set: {exc}") from None
    prompts = {}
    for item in config.relations:
        chosen = [e for e in entries if e.relation == item.name][:count]
        if not chosen:
            raise InputError(
                Path(config.prompts.set), f"has no prompt for relation {item.name}", "add prompts for it"
            )
        reversion = any(config.training_method(m) == "reversion" for m in config.methods)
        if reversion and any(e.subject1 is None or e.subject2 is None for e in chosen):
            raise InputError(
                Path(config.prompts.set),
                "reversion prompts are '<subject1> <token> <subject2>'; some entries lack subject1/2",
                "add subject1 and subject2 to every entry, or drop reversion",
            )
        prompts.update({(item.name, seed): chosen for seed in config.seeds})
    return prompts


def plan(config: BenchmarkConfig, output: str | Path, *, check_data: bool = True) -> Plan:
    """Every cache, training and evaluation config and every prompt, checked; raises before work
    (``check_data=False``: the dataset folders need not exist, for writing tables only)."""
    output = Path(output)
    spec = config.model.model_dump()
    model_keys = {f"model.{k}": v for k, v in spec.items()}
    for item in config.relations if check_data else []:
        for data in dict.fromkeys(item.data_for(seed) for seed in config.seeds):
            if not data.is_dir():
                raise InputError(
                    data, f"dataset folder of relation {item.name} not found", "fix relations[].data"
                )
    if not config.evaluation.chosen_metrics() and config.prompts.set != TOY_PROMPTS:
        raise ConfigError(
            "evaluation.metrics is empty: nothing would score the runs; pick relation_accuracy, clip, fvd"
        )
    prompts = _prompts(config)
    caches, evaluation, runs = {}, {}, []
    for item in config.relations:
        for seed in config.seeds:
            key = f"{item.name}/seed{seed}" if item.per_seed else item.name
            if key in caches:
                continue
            caches[key] = _build(
                CacheConfig,
                config.cache,
                {
                    **model_keys,
                    "data": [{"path": str(item.data_for(seed)), "relation": item.name}],
                    "output": str(output / "cache" / key),
                    "device": config.device,
                },
                "cache",
                RUNNER_CACHE_KEYS,
            )
        reference = item.reference or config.evaluation.reference
        try:
            evaluation[item.name] = EvaluateConfig.model_validate(
                {
                    "device": config.device,
                    **config.evaluation.model_dump(exclude_unset=True),
                    "reference": reference,
                }
            )
        except ValidationError as exc:
            where = "" if reference else " (FVD's real videos: relations[].reference or evaluation.reference)"
            raise ConfigError(f"evaluation ({item.name}){where}:\n{exc}") from None
        rows = ([BASE] if config.base else []) + list(config.methods)
        for seed in config.seeds:
            cache_dir = caches[f"{item.name}/seed{seed}" if item.per_seed else item.name].output
            for row in rows:
                folder = run_folder(output, item.name, row, seed)
                train = None
                if row != BASE:
                    method = config.training_method(row)
                    user = _merge(_nested(config.train), _nested(config.method_train.get(method, {})))
                    if row in config.variants:
                        user = _merge(user, _nested(config.variants[row].train))
                    fixed = {
                        **model_keys,
                        "cache": [str(cache_dir)],
                        "output": str(folder / "train"),
                        "method": method,
                        "seed": seed,
                    }
                    if config.model.backbone == "toy" and method == "reversion":
                        from dreamrelation.toyworld.world import RELATIONS as TOY_RELATIONS

                        # toy captions follow the toy world's templates, not NTU's
                        user.setdefault("reversion", {}).setdefault(
                            "relation_template", TOY_RELATIONS.get(item.name)
                        )
                    where = f"train ({row})" if row == method else f"train (variant {row} of {method})"
                    train = _build(TrainConfig, user, fixed, where, RUNNER_TRAIN_KEYS)
                offset = 0 if config.prompts.set == TOY_PROMPTS else SEED_STRIDE * seed
                runs.append(
                    Run(
                        item.name,
                        row,
                        seed,
                        folder,
                        train,
                        item.data_for(seed),
                        prompts[(item.name, seed)],
                        offset,
                    )
                )
    relations = [item.name for item in config.relations]
    return Plan(config, output, relations, caches, evaluation, runs)


# ----- markers and files ----------------------------------------------------------------------


def run_folder(output: str | Path, relation: str, row: str, seed: int) -> Path:
    """Where a run keeps its ``train``, ``videos`` and ``evaluation`` folders."""
    return Path(output) / "runs" / relation / row / f"seed{seed}"


def trained_lora(folder: Path) -> Path:
    """The LoRA file of a run's finished training (named in its DONE marker)."""
    return folder / "train" / _done(folder / "train")["lora"]


def _done(folder: Path) -> dict | None:
    path = folder / DONE
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


def _mark_done(folder: Path, info: dict) -> None:
    write_text_atomic(folder / DONE, json.dumps(info, indent=1) + "\n")


def _settings(config: BaseModel) -> dict:
    """A stage's settings as stored in its marker (output folders left out: a moved benchmark
    folder still resumes)."""
    return {k: v for k, v in json.loads(config.model_dump_json()).items() if k not in ("output", "cache")}


def _generation_settings(generation: GenerationSettings, **exclude: bool) -> dict:
    # ``lossless`` only when set: folders rendered before the setting existed still resume
    left_out = {k for k, v in exclude.items() if v} | ({"lossless"} if not generation.lossless else set())
    return generation.model_dump(exclude=left_out)


def _video_settings(config: BenchmarkConfig, run: Run) -> dict:
    settings = {
        "model": config.model.model_dump(),
        "generation": _generation_settings(config.generation),
        "seed": run.seed,
    }
    if config.prompts.set == TOY_PROMPTS:
        settings["prompts"] = "toy, drawn per seed"  # before: seed 0's prompts for every seed
    return settings


def check_finished_stages(plan_: Plan) -> None:
    """Refuse to resume over stages finished with other settings (they would be skipped and the
    table would mix them); runs before any work."""
    stale: list[tuple[Path, str]] = []

    def compare(folder: Path, stored: object, current: object, what: str) -> None:
        if stored is not None and stored != current:
            stale.append((folder, what))

    for cache in plan_.caches.values():
        done = _done(Path(cache.output))
        compare(Path(cache.output), done and done.get("settings"), _settings(cache), "cache")
    for run in plan_.runs:
        if run.train is not None:
            done = _done(run.folder / "train")
            compare(run.folder / "train", done and done.get("settings"), _settings(run.train), "training")
        done = _done(run.folder / "videos")
        current = _video_settings(plan_.config, run)
        compare(run.folder / "videos", done and done.get("settings"), current, "generation")
        results = run.folder / "evaluation" / "results.json"
        if results.is_file():
            stored = json.loads(results.read_text("utf-8")).get("settings", {}).get("config")
            compare(
                results, stored, json.loads(plan_.evaluation[run.relation].model_dump_json()), "evaluation"
            )
    if stale:
        folder, what = stale[0]
        raise InputError(
            folder,
            f"was made with other {what} settings than this config ({len(stale)} finished stage(s) differ)",
            "use another --output folder, or delete the stale folders to redo them",
        )


# ----- the stages -----------------------------------------------------------------------------


@dataclass
class Stages:
    """What each stage calls (the library functions; replaceable to count calls in tests)."""

    build_cache: Callable
    train: Callable
    render: Callable


def default_stages() -> Stages:
    from dreamrelation.cache import build_cache
    from dreamrelation.generate import render
    from dreamrelation.train import train

    return Stages(build_cache=build_cache, train=train, render=render)


def _load_backbone(config: BenchmarkConfig):  # noqa: ANN202 - a Backbone
    from dreamrelation.backbones import default_device, load_backbone

    spec = config.model
    return load_backbone(
        spec.backbone, spec.model, spec.dtype, spec.max_sequence_length, config.device or default_device()
    )


def _render_run(plan_: Plan, run: Run, stages: Stages) -> Path:
    """The run's prompts into ``run.folder/videos`` (resumable per video, then marked done)."""
    from dreamrelation.evaluation.judge import file_sha256
    from dreamrelation.evaluation.manifest import render_prompt_set
    from dreamrelation.generate import load_inference_lora

    cfg, videos = plan_.config, run.folder / "videos"
    if _done(videos) is not None:
        return videos
    backbone = _load_backbone(cfg)
    token, lora_hash = None, None
    if run.method != BASE:
        lora = trained_lora(run.folder)
        token = load_inference_lora(backbone, lora, cfg.generation.lora_scale)
        lora_hash = file_sha256(lora)
    gen = cfg.generation
    settings = {
        "backbone": cfg.model.backbone,
        "model": cfg.model.model,
        "dtype": cfg.model.dtype,
        "method": run.method,
        "lora_sha256": lora_hash,
        "benchmark_seed": run.seed,
        **_generation_settings(gen, fps=True),
    }

    def render_one(entry) -> np.ndarray:  # noqa: ANN001 - a PromptEntry
        # the manifest keeps the natural prompt (CLIP-T and the judge read it); ReVersion renders
        # the relation as its learned token
        prompt = entry.prompt if token is None else f"{entry.subject1} {token} {entry.subject2}."
        return stages.render(
            backbone,
            prompt[0].upper() + prompt[1:],
            num_frames=gen.num_frames,
            height=gen.height,
            width=gen.width,
            num_inference_steps=gen.num_inference_steps,
            guidance_scale=gen.guidance_scale,
            seed=entry.seed + run.noise_offset,
            show_progress=False,
        )

    render_prompt_set(
        render_one, run.prompts, videos, settings, fps=gen.fps, lossless=gen.lossless, show_progress=False
    )
    _mark_done(videos, {"videos": len(run.prompts), "settings": _video_settings(cfg, run)})
    return videos


def toy_prompts(relation: str, count: int | None, seed: int = 0) -> tuple[list, list]:
    """The toy world's evaluation prompts of ``relation`` for benchmark seed ``seed`` (as the toy
    experiment draws them: subjects and backgrounds no default exemplar has, their own noise seeds)
    as prompt entries, and their scenes."""
    from dreamrelation.evaluation.prompts import PromptEntry
    from dreamrelation.toyworld.experiment import ExperimentConfig, evaluation_prompts
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
    import re

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
    from dreamrelation.evaluation.manifest import read_manifest
    from dreamrelation.toyworld import oracle
    from dreamrelation.toyworld.experiment import ExperimentConfig, reference_videos

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


def _release_memory() -> None:
    """Drop the stage's models before the next one loads (a 10B backbone twice does not fit)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Evaluators:
    """Judge, CLIP and FVD models loaded once and reused by every run."""

    def __init__(self) -> None:
        self.judge = self.clip = self.fvd = None

    def evaluate(self, videos: Path, config: EvaluateConfig) -> dict:
        from dreamrelation.evaluation.evaluate import evaluate_folder, make_fvd_extractor, make_judge

        metrics = config.chosen_metrics()
        if "relation_accuracy" in metrics and self.judge is None:
            self.judge = make_judge(config.judge, config.device)
        if "clip" in metrics and self.clip is None:
            from dreamrelation.evaluation.clip import ClipScorer

            self.clip = ClipScorer(config.clip_model, device=config.device)
        if "fvd" in metrics and self.fvd is None:
            self.fvd = make_fvd_extractor(config.fvd, config.device)
        return evaluate_folder(
            videos, config, judge=self.judge, clip=self.clip, fvd_extractor=self.fvd, show_progress=False
        )


def run_benchmark(
    config: BenchmarkConfig,
    output: str | Path,
    *,
    command: str = "",
    show_progress: bool = True,
    stages: Stages | None = None,
    report_only: bool = False,
) -> dict[str, dict[str, tuple[float, float]]]:
    """Run every stage not yet done, then write the tables; returns the relation-averaged summary
    (``report_only``: the tables of the results already in ``output``, running nothing)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    plan_ = plan(config, output, check_data=not report_only)  # every check before any work
    check_finished_stages(plan_)
    stages = stages or default_stages()
    out = plan_.output
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not report_only:
        write_text_atomic(out / "config.json", config.model_dump_json(indent=1) + "\n")
        console = Console(stderr=True, quiet=not show_progress)
        with Progress(
            TextColumn("[bold]{task.description:<48}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not show_progress,
        ) as progress:
            _run_stages(plan_, stages, progress)
    results = collect_results(plan_)
    if not report_only:
        write_text_atomic(out / "results.json", json.dumps(results, indent=1) + "\n")
    minutes = (time.perf_counter() - started) / 60
    return write_tables(plan_, results, command, minutes)


def collect_results(plan_: Plan) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``results[relation][method][seed][metric]`` of the plan's output folder: every run's own
    evaluation, over the numbers of the folder's results.json. Runs without an evaluation of their own
    keep the file's (a results file copied alone, or one of the old `benchmark toy`); a run evaluated
    after the file was last written (an invocation stopped before its end, or another process's) counts
    too, so ``--report-only`` reports what is on disk."""
    results = read_results(plan_.output / "results.json")
    for run in plan_.runs:
        path = run.folder / "evaluation" / "results.json"
        if path.is_file():
            overall = json.loads(path.read_text("utf-8"))["overall"]
            metrics = {k: float(v) for k, v in overall.items() if k in METRIC_LABELS and v is not None}
            results.setdefault(run.relation, {}).setdefault(run.method, {})[str(run.seed)] = metrics
    return results


def _run_stages(plan_: Plan, stages: Stages, progress) -> None:  # noqa: ANN001 - a rich Progress
    from dreamrelation.evaluation.evaluate import EvaluationResults, write_results
    from dreamrelation.evaluation.manifest import read_manifest

    config, evaluators = plan_.config, _Evaluators()
    task = progress.add_task("benchmark", total=2 * len(plan_.runs))
    for name, cache in plan_.caches.items():
        if _done(Path(cache.output)) is None:
            progress.update(task, description=f"{name}: cache")
            stages.build_cache(cache, show_progress=False)
            _mark_done(Path(cache.output), {"relation": name.split("/")[0], "settings": _settings(cache)})
            _release_memory()
    # 1. every training and rendering (the backbone alone on the GPU) ...
    for run in plan_.runs:
        progress.update(task, description=f"{run.label}: train, render")
        if not (run.folder / "evaluation" / "results.json").is_file():
            if run.train is not None and _done(run.folder / "train") is None:
                result = stages.train(run.train, show_progress=False)
                lora = Path(result.lora_path).relative_to(Path(run.train.output))
                _mark_done(run.folder / "train", {"lora": str(lora), "settings": _settings(run.train)})
                _release_memory()
            _render_run(plan_, run, stages)
            _release_memory()
        progress.advance(task)
    # 2. ... then every evaluation (judge, CLIP and FVD models loaded once)
    for run in plan_.runs:
        progress.update(task, description=f"{run.label}: evaluate")
        evaluation_dir, videos = run.folder / "evaluation", run.folder / "videos"
        if not (evaluation_dir / "results.json").is_file():
            evaluation = plan_.evaluation[run.relation]
            if evaluation.chosen_metrics():
                scores = evaluators.evaluate(videos, evaluation)
            else:  # the toy set with no other metric (plan() checked): the oracle alone scores
                settings = {
                    "config": json.loads(evaluation.model_dump_json()),
                    "generation": read_manifest(videos).settings,
                }
                scores = EvaluationResults(videos, [], [], {}, {}, settings)
            if config.prompts.set == TOY_PROMPTS:
                scores.overall.update(
                    toy_oracle_metrics(videos, run.relation, run.data, config.prompts.per_relation, run.seed)
                )
            write_results(scores, evaluation_dir)
        progress.advance(task)


#: the old `benchmark toy` named the oracle's metrics without the ``oracle_`` prefix (the committed
#: docs/toy_benchmark*_results.json); read as the oracle's
_OLD_TOY_METRICS = (
    "relation_accuracy",
    "subject_fidelity",
    "appearance_leakage",
    "temporal_consistency",
    "toy_fvd",
)


def read_results(path: Path) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``results[relation][method][seed][metric]`` of a benchmark's results.json ({} when absent);
    the old `benchmark toy` layout is read too (its oracle metrics get the ``oracle_`` prefix)."""
    if not path.is_file():
        return {}
    results = json.loads(path.read_text("utf-8"))
    for methods in results.values():
        for seeds in methods.values():
            for seed, metrics in seeds.items():
                if "toy_fvd" in metrics:  # the old layout: only the oracle's metrics, unprefixed
                    seeds[seed] = {f"oracle_{k}": float(metrics[k]) for k in _OLD_TOY_METRICS if k in metrics}
    return results


# ----- the table ------------------------------------------------------------------------------


def summarize(
    results: dict[str, dict[str, dict[str, float]]],
    methods: Sequence[str],
    seeds: Sequence[int],
    metrics: Sequence[str] = tuple(METRIC_LABELS),
) -> dict[str, dict[str, tuple[float, float]]]:
    """One relation's results[method][seed] -> {method: {metric: (mean, std over seeds)}}."""
    summary = {}
    for method in methods:
        runs = [results[method][str(s)] for s in seeds if str(s) in results.get(method, {})]
        summary[method] = {
            m: (float(np.mean([r[m] for r in runs])), float(np.std([r[m] for r in runs])))
            for m in metrics
            if runs and all(m in r for r in runs)
        }
    return summary


def average_over_relations(
    results: dict[str, dict[str, dict[str, dict[str, float]]]],
    relations: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    metrics: Sequence[str] = tuple(METRIC_LABELS),
) -> dict[str, dict[str, tuple[float, float]]]:
    """{method: {metric: (mean, std)}} of the relation-averaged metric: for each seed the mean over
    ``relations`` (a seed counts only once every relation has it), then mean and std over seeds, so
    the std is the seed spread of the paper-style averaged number."""
    summary = {}
    for method in methods:
        per_seed = [
            [results[r][method][str(s)] for r in relations]
            for s in seeds
            if all(str(s) in results.get(r, {}).get(method, {}) for r in relations)
        ]
        summary[method] = {}
        for metric in metrics:
            if not per_seed or not all(metric in run for runs in per_seed for run in runs):
                continue
            values = [float(np.mean([run[metric] for run in runs])) for runs in per_seed]
            summary[method][metric] = (float(np.mean(values)), float(np.std(values)))
    return summary


def markdown_table(summary: dict[str, dict[str, tuple[float, float]]], labels: dict[str, str]) -> list[str]:
    """``| method | metric … |`` rows of mean ± std; a metric a method lacks is shown as –."""
    lines = ["| method | " + " | ".join(labels.values()) + " |", "|---" * (len(labels) + 1) + "|"]
    for method, metrics in summary.items():
        cells = [f"{metrics[m][0]:.3f} ± {metrics[m][1]:.3f}" if m in metrics else "–" for m in labels]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def write_tables(
    plan_: Plan, results: dict, command: str, minutes: float
) -> dict[str, dict[str, tuple[float, float]]]:
    """``benchmark.md``, ``benchmark.csv`` and ``benchmark.png`` in the output folder."""
    import torch

    from dreamrelation.devices import default_device, machine_description

    cfg, out = plan_.config, plan_.output
    relations = plan_.relations
    methods = ([BASE] if cfg.base else []) + list(cfg.methods)
    present = [
        m
        for m in METRIC_LABELS
        if any(m in run for r in results.values() for s in r.values() for run in s.values())
    ]
    labels = {m: METRIC_LABELS[m] for m in present}
    per_relation = {r: summarize(results.get(r, {}), methods, cfg.seeds, present) for r in relations}
    averaged = average_over_relations(results, relations, methods, cfg.seeds, present)
    device = torch.device(cfg.device) if cfg.device else default_device()
    gen = cfg.generation
    lines = [
        f"# Benchmark: {len(relations)} relation{'s' if len(relations) != 1 else ''} on {cfg.model.backbone}",
        "",
        *([f"Command: `{command}`  "] if command else []),
        f"Model `{cfg.model.model}` ({cfg.model.dtype}); methods {', '.join(methods)}; seeds {cfg.seeds} "
        f"(mean ± std over seeds, the population std: ± 0.000 with one seed); prompts `{cfg.prompts.set}`"
        + (f", first {cfg.prompts.per_relation} per relation" if cfg.prompts.per_relation else "")
        + f"; sampling {gen.num_inference_steps} steps, CFG {gen.guidance_scale:g}, "
        f"{gen.num_frames}x{gen.height}x{gen.width}.  ",
        f"Machine: {machine_description(device)}; this invocation ran {minutes:.1f} min.",
        "",
        f"## Averaged over {', '.join(relations)}",
        "",
        *markdown_table(averaged, labels),
        "",
    ]
    for relation, summary in per_relation.items():
        lines += [f"## {relation}", "", *markdown_table(summary, labels), ""]
    write_text_atomic(out / "benchmark.md", "\n".join(lines))
    rows = [
        {
            "relation": scope,
            "method": method,
            "n_seeds": _n_seeds(results, scope, relations, method, cfg.seeds),
        }
        | {f"{m}_mean": v[0] for m, v in values.items()}
        | {f"{m}_std": v[1] for m, v in values.items()}
        for scope, summary in [("averaged", averaged), *per_relation.items()]
        for method, values in summary.items()
    ]
    columns = ["relation", "method", "n_seeds"] + [f"{m}_{s}" for m in present for s in ("mean", "std")]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "benchmark.csv", buffer.getvalue())
    plot(averaged, labels, out / "benchmark.png", title=f"averaged over {len(relations)} relation(s)")
    return averaged


def _n_seeds(results: dict, scope: str, relations: list[str], method: str, seeds: Sequence[int]) -> int:
    names = relations if scope == "averaged" else [scope]
    return sum(all(str(s) in results.get(r, {}).get(method, {}) for r in names) for s in seeds)


def plot(
    summary: dict[str, dict[str, tuple[float, float]]], labels: dict[str, str], path: Path, title: str
) -> Path:
    """One bar panel per metric: each method's mean with its seed std as error bar (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(labels) or ["none"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    methods = list(summary)
    for ax, metric in zip(axes[0], metrics, strict=True):
        means = [summary[m].get(metric, (np.nan, 0.0))[0] for m in methods]
        stds = [summary[m].get(metric, (np.nan, 0.0))[1] for m in methods]
        ax.bar(range(len(methods)), means, yerr=stds, capsize=3, color="#4c72b0")
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
        ax.set_title(labels.get(metric, metric), fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        with atomic_target(path, ".png") as temp:
            fig.savefig(temp, dpi=100)
    finally:
        plt.close(fig)
    return path


__all__ = [
    "METHOD_NAMES",
    "BenchmarkConfig",
    "RelationData",
    "Variant",
    "average_over_relations",
    "collect_results",
    "load_benchmark_config",
    "markdown_table",
    "plan",
    "read_results",
    "run_benchmark",
    "summarize",
]
