"""The plan: every stage's config (cache, training, rendering, evaluation) built and checked before any
work, and the output folder's markers (a stage marked done is skipped on a rerun)."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from dreamrelation.benchmark.config import (
    BASE,
    DONE,
    RUNNER_CACHE_KEYS,
    RUNNER_TRAIN_KEYS,
    SEED_STRIDE,
    BenchmarkConfig,
    GenerationSettings,
)
from dreamrelation.benchmark.prompt_sets import drawn_prompt_set
from dreamrelation.config import CacheConfig, TrainConfig
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.evaluation.evaluate import EvaluateConfig
from dreamrelation.files import write_text_atomic

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
    from dreamrelation.generation.prompts import load_prompt_file

    count = config.prompts.per_relation
    drawn = drawn_prompt_set(config.prompts.set)
    if drawn is not None:  # drawn per seed (the toy world's, as its experiments always were)
        return {
            (item.name, seed): drawn.draw(item.name, count, seed)
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
    drawn = drawn_prompt_set(config.prompts.set)
    if not config.evaluation.chosen_metrics() and drawn is None:
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
                    if method == "reversion":
                        from dreamrelation.backbones import backbone_class

                        templates = backbone_class(config.model.backbone).caption_templates
                        if templates is not None:  # captions follow the backbone's own templates, not NTU's
                            user.setdefault("reversion", {}).setdefault(
                                "relation_template", templates.get(item.name)
                            )
                    where = f"train ({row})" if row == method else f"train (variant {row} of {method})"
                    train = _build(TrainConfig, user, fixed, where, RUNNER_TRAIN_KEYS)
                offset = 0 if drawn is not None else SEED_STRIDE * seed
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
    return folder / "train" / done_marker(folder / "train")["lora"]


def done_marker(folder: Path) -> dict | None:
    path = folder / DONE
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


def mark_done(folder: Path, info: dict) -> None:
    write_text_atomic(folder / DONE, json.dumps(info, indent=1) + "\n")


def stage_settings(config: BaseModel) -> dict:
    """A stage's settings as stored in its marker (output folders left out: a moved benchmark
    folder still resumes)."""
    return {k: v for k, v in json.loads(config.model_dump_json()).items() if k not in ("output", "cache")}


def generation_settings(generation: GenerationSettings, **exclude: bool) -> dict:
    # ``lossless`` only when set: folders rendered before the setting existed still resume
    left_out = {k for k, v in exclude.items() if v} | ({"lossless"} if not generation.lossless else set())
    return generation.model_dump(exclude=left_out)


def video_settings(config: BenchmarkConfig, run: Run) -> dict:
    settings = {
        "model": config.model.model_dump(),
        "generation": generation_settings(config.generation),
        "seed": run.seed,
    }
    drawn = drawn_prompt_set(config.prompts.set)
    if drawn is not None:
        settings["prompts"] = drawn.label
    return settings


def check_finished_stages(plan_: Plan) -> None:
    """Refuse to resume over stages finished with other settings (they would be skipped and the
    table would mix them); runs before any work."""
    stale: list[tuple[Path, str]] = []

    def compare(folder: Path, stored: object, current: object, what: str) -> None:
        if stored is not None and stored != current:
            stale.append((folder, what))

    for cache in plan_.caches.values():
        done = done_marker(Path(cache.output))
        compare(Path(cache.output), done and done.get("settings"), stage_settings(cache), "cache")
    for run in plan_.runs:
        if run.train is not None:
            done = done_marker(run.folder / "train")
            compare(
                run.folder / "train", done and done.get("settings"), stage_settings(run.train), "training"
            )
        done = done_marker(run.folder / "videos")
        current = video_settings(plan_.config, run)
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
