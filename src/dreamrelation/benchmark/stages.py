"""The stages: cache, train, render and evaluate every run of a plan, resumably; results collected from
the run folders."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dreamrelation.benchmark.config import BASE, METRIC_LABELS, BenchmarkConfig
from dreamrelation.benchmark.plan import (
    Plan,
    Run,
    check_finished_stages,
    done_marker,
    generation_settings,
    mark_done,
    plan,
    stage_settings,
    trained_lora,
    video_settings,
)
from dreamrelation.benchmark.prompt_sets import drawn_prompt_set
from dreamrelation.benchmark.tables import write_tables
from dreamrelation.evaluation.evaluate import EvaluateConfig
from dreamrelation.files import write_text_atomic

# ----- the stages -----------------------------------------------------------------------------


@dataclass
class Stages:
    """What each stage calls (the library functions; replaceable to count calls in tests)."""

    build_cache: Callable
    train: Callable
    render: Callable


def default_stages() -> Stages:
    from dreamrelation.cache import build_cache
    from dreamrelation.generation.render import render
    from dreamrelation.training.loop import train

    return Stages(build_cache=build_cache, train=train, render=render)


def _load_backbone(config: BenchmarkConfig):  # noqa: ANN202 - a Backbone
    from dreamrelation.backbones import default_device, load_backbone

    spec = config.model
    return load_backbone(
        spec.backbone, spec.model, spec.dtype, spec.max_sequence_length, config.device or default_device()
    )


def _render_run(plan_: Plan, run: Run, stages: Stages) -> Path:
    """The run's prompts into ``run.folder/videos`` (resumable per video, then marked done)."""
    from dreamrelation.files import file_sha256
    from dreamrelation.generation.manifest import render_prompt_set
    from dreamrelation.generation.render import load_inference_lora

    cfg, videos = plan_.config, run.folder / "videos"
    if done_marker(videos) is not None:
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
        **generation_settings(gen, fps=True),
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
    mark_done(videos, {"videos": len(run.prompts), "settings": video_settings(cfg, run)})
    return videos


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
    keep the file's (a results file copied alone); a run evaluated
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
    from dreamrelation.generation.manifest import read_manifest

    config, evaluators = plan_.config, _Evaluators()
    task = progress.add_task("benchmark", total=2 * len(plan_.runs))
    for name, cache in plan_.caches.items():
        if done_marker(Path(cache.output)) is None:
            progress.update(task, description=f"{name}: cache")
            stages.build_cache(cache, show_progress=False)
            mark_done(Path(cache.output), {"relation": name.split("/")[0], "settings": stage_settings(cache)})
            _release_memory()
    # 1. every training and rendering (the backbone alone on the GPU) ...
    for run in plan_.runs:
        progress.update(task, description=f"{run.label}: train, render")
        if not (run.folder / "evaluation" / "results.json").is_file():
            if run.train is not None and done_marker(run.folder / "train") is None:
                result = stages.train(run.train, show_progress=False)
                lora = Path(result.lora_path).relative_to(Path(run.train.output))
                mark_done(run.folder / "train", {"lora": str(lora), "settings": stage_settings(run.train)})
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
            else:  # a drawn set with no other metric (plan() checked): its own scorer alone scores
                settings = {
                    "config": json.loads(evaluation.model_dump_json()),
                    "generation": read_manifest(videos).settings,
                }
                scores = EvaluationResults(videos, [], [], {}, {}, settings)
            drawn = drawn_prompt_set(config.prompts.set)
            if drawn is not None:  # a drawn set scores its own videos (the toy world: its oracle)
                scores.overall.update(
                    drawn.score(videos, run.relation, run.data, config.prompts.per_relation, run.seed)
                )
            write_results(scores, evaluation_dir)
        progress.advance(task)


def read_results(path: Path) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``results[relation][method][seed][metric]`` of a benchmark's results.json ({} when absent)."""
    if not path.is_file():
        return {}
    return json.loads(path.read_text("utf-8"))
