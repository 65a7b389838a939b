"""`dreamrelation evaluate`: score a folder of generated videos (read through its manifest) with
the paper's metrics, per video, per relation and overall.

``evaluate_folder(videos, config)`` is the library entry point (the benchmark runner calls it;
loaded models can be passed in to reuse them across folders); ``write_results`` writes
``results.json``, ``per_video.csv`` and ``summary.csv``; ``summary_table`` is the terminal table.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dreamrelation.errors import ConfigError, InputError
from dreamrelation.evaluation.clip import DEFAULT_CLIP_MODEL
from dreamrelation.evaluation.fvd import DEFAULT_VIDEOMAE_MODEL
from dreamrelation.evaluation.metrics import frechet_distance
from dreamrelation.files import write_text_atomic

Metric = Literal["relation_accuracy", "clip", "fvd"]
ALL_METRICS: tuple[str, ...] = ("relation_accuracy", "clip", "fvd")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class JudgeSettings(_Strict):
    """The relation judge. Default: the paper's Qwen-VL-Max through DashScope's OpenAI-compatible
    endpoint, key in $DASHSCOPE_API_KEY."""

    #: "openai": any OpenAI-compatible chat endpoint; "local": a transformers image-text-to-text model
    backend: Literal["openai", "local"] = "openai"
    #: base URL of the OpenAI-compatible endpoint (openai backend)
    url: str = "https://dashscope.aliyuncs.com/compatible-mode/v1"
    #: endpoint model name (openai backend; default qwen-vl-max), or hub id / folder (local backend;
    #: default Qwen/Qwen2.5-VL-7B-Instruct)
    model: str | None = None
    #: the NAME of the environment variable that holds the key (the key itself is never stored)
    api_key_env: str = Field("DASHSCOPE_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    #: frames shown to the judge, sampled evenly over the video
    num_frames: int = Field(8, gt=0)
    #: answer cache folder (default: $XDG_CACHE_HOME/dreamrelation/judge)
    cache: Path | None = None
    #: seconds to wait for one answer
    timeout: float = Field(120.0, gt=0)
    #: retries on 429, 5xx, timeouts and refused connections
    max_retries: int = Field(5, ge=0)
    #: first back-off in seconds, doubled at each retry (a server's Retry-After wins)
    backoff: float = Field(1.0, ge=0)
    #: weights dtype of the local judge ("auto": bfloat16 on GPU, float32 on CPU)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    def model_name(self) -> str:
        if self.model:
            return self.model
        return "qwen-vl-max" if self.backend == "openai" else "Qwen/Qwen2.5-VL-7B-Instruct"


class FVDSettings(_Strict):
    #: video features: "i3d" (the standard FVD protocol) or "videomae" (a transformers model)
    extractor: Literal["i3d", "videomae"] = "i3d"
    #: local I3D weights (.safetensors or weights_only .pt); needed for extractor i3d
    i3d_weights: Path | None = None
    #: I3D output used as the feature: the 400 logits (common FVD) or the 1024-d pooled features
    i3d_feature: Literal["logits", "pool"] = "logits"
    #: hub id or folder of the VideoMAE model (extractor videomae)
    videomae_model: str = DEFAULT_VIDEOMAE_MODEL
    #: frames per video fed to the extractor
    num_frames: int = Field(16, gt=0)
    #: which frames: spread evenly over the video, or the first ones
    sampling: Literal["even", "first"] = "even"


class EvaluateConfig(_Strict):
    """`dreamrelation evaluate`: metrics of a generated folder (and FVD against a reference one)."""

    #: metrics to compute (default: relation_accuracy and clip, plus fvd when reference is set)
    metrics: list[Metric] | None = None
    #: folder of reference (real) videos for FVD
    reference: Path | None = None
    #: where results go (default: VIDEOS/evaluation)
    output: Path | None = None
    #: CLIP checkpoint (hub id or folder) for CLIP-T and temporal consistency
    clip_model: str = DEFAULT_CLIP_MODEL
    #: the relation-accuracy judge
    judge: JudgeSettings = JudgeSettings()
    #: FVD feature extractor
    fvd: FVDSettings = FVDSettings()
    #: device for the models (None: cuda when available, else cpu)
    device: str | None = None

    @model_validator(mode="after")
    def _fvd_needs_reference_videos(self) -> EvaluateConfig:
        if "fvd" in self.chosen_metrics() and self.reference is None:
            raise ValueError("fvd needs reference videos: set reference (--reference DIR)")
        return self

    @model_validator(mode="after")
    def _fvd_needs_its_weights(self) -> EvaluateConfig:
        if "fvd" in self.chosen_metrics() and self.fvd.extractor == "i3d" and self.fvd.i3d_weights is None:
            raise ValueError(
                "FVD with I3D needs local weights: set fvd.i3d_weights (--i3d-weights FILE), "
                "or use fvd.extractor videomae (--fvd videomae)"
            )
        return self

    def chosen_metrics(self) -> list[str]:
        if self.metrics is not None:
            return [m for m in ALL_METRICS if m in self.metrics]
        return ["relation_accuracy", "clip"] + (["fvd"] if self.reference is not None else [])


@dataclass
class EvaluationResults:
    videos_dir: Path
    metrics: list[str]
    per_video: list[dict]
    per_relation: dict[str, dict]
    overall: dict
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "videos": str(self.videos_dir),
            "metrics": self.metrics,
            "overall": self.overall,
            "per_relation": self.per_relation,
            "per_video": self.per_video,
            "settings": self.settings,
        }


def read_frames(path: Path) -> np.ndarray:
    """Every frame of a video at its own size, uint8 (F, H, W, 3); errors name the file."""
    from dreamrelation.data import read_video, video_info

    info = video_info(path)
    return read_video(path, info.num_frames, info.height, info.width).numpy()


def make_judge(settings: JudgeSettings, device: str | None = None):  # noqa: ANN201 - a Judge
    from dreamrelation.evaluation.judge import LocalVLMJudge, OpenAIChatJudge

    if settings.backend == "local":
        return LocalVLMJudge(settings.model_name(), device=device, dtype=settings.dtype)
    return OpenAIChatJudge(
        settings.url,
        settings.model_name(),
        settings.api_key_env,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        backoff=settings.backoff,
    )


def make_fvd_extractor(settings: FVDSettings, device: str | None = None):  # noqa: ANN201
    from dreamrelation.evaluation.fvd import I3DFeatures, VideoMAEFeatures

    if settings.extractor == "i3d":
        return I3DFeatures(
            settings.i3d_weights,
            num_frames=settings.num_frames,
            feature=settings.i3d_feature,
            sampling=settings.sampling,
            device=device,
        )
    return VideoMAEFeatures(settings.videomae_model, device=device)


def reference_videos(folder: Path) -> list[Path]:
    """The videos of a reference folder: its manifest's, else every video file directly in it."""
    from dreamrelation.data import VIDEO_EXTENSIONS
    from dreamrelation.generation.manifest import MANIFEST_NAME, read_manifest

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "reference folder not found", "give a folder of real videos (--reference)")
    if (folder / MANIFEST_NAME).is_file():
        return [r.video for r in read_manifest(folder).videos]
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if len(videos) < 2:
        raise InputError(folder, f"holds {len(videos)} video(s)", "FVD needs at least 2 reference videos")
    return videos


def _fvd_features(extractor, frames: np.ndarray, path: Path, settings: FVDSettings) -> np.ndarray:  # noqa: ANN001
    """The extractor's features of one video; a video shorter than its clip names itself and the fix."""
    needed = getattr(extractor, "num_frames", 0)  # an extractor of its own may take any length
    if len(frames) < needed:
        if settings.extractor == "i3d":
            fix = (
                f"render at least {needed} frames, or lower fvd.num_frames to {len(frames)} or less "
                "(then FVD is not the standard 16-frame protocol)"
            )
        else:
            fix = f"render at least {needed} frames, or use a VideoMAE checkpoint with fewer frames"
        raise InputError(path, f"has {len(frames)} frames, but FVD ({extractor.name}) takes {needed}", fix)
    return extractor(frames)


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else None


def _summarise(rows: list[dict]) -> dict:
    judged = [r for r in rows if "judge_answer" in r]
    summary: dict = {"n_videos": len(rows)}
    if judged:
        # an unparseable reply counts as "relation not shown" (the judge did not say yes)
        summary["relation_accuracy"] = sum(r["judge_answer"] == "yes" for r in judged) / len(judged)
        summary["n_judged"] = len(judged)
        summary["n_unparsed"] = sum(r["judge_answer"] == "unparsed" for r in judged)
    for key in ("clip_t", "temporal_consistency"):
        value = _mean([r.get(key) for r in rows])
        if value is not None:
            summary[key] = value
    return summary


def evaluate_folder(
    videos: str | Path,
    config: EvaluateConfig,
    *,
    judge=None,  # noqa: ANN001 - a loaded Judge to reuse
    clip=None,  # noqa: ANN001 - a loaded ClipScorer to reuse
    fvd_extractor=None,  # noqa: ANN001 - a loaded feature extractor to reuse
    show_progress: bool = True,
) -> EvaluationResults:
    """Score every video listed in ``videos/manifest.json``; nothing is skipped silently: a video
    that cannot be read stops the run with its name."""
    from rich.progress import Progress

    from dreamrelation.evaluation.judge import (
        AnswerCache,
        default_cache_dir,
        judge_video,
        question_for,
    )
    from dreamrelation.files import file_sha256
    from dreamrelation.generation.manifest import read_manifest

    videos = Path(videos)
    manifest = read_manifest(videos)
    metrics = config.chosen_metrics()
    if not metrics:
        raise ConfigError("no metric chosen; pick from relation_accuracy, clip, fvd")
    for record in manifest.videos:  # every file checked before any model loads
        if not record.video.is_file():
            raise InputError(
                record.video,
                "listed in the manifest but missing",
                "rerun `dreamrelation generate --prompts` (it resumes)",
            )
    references = reference_videos(config.reference) if "fvd" in metrics else []
    if "relation_accuracy" in metrics and not any(r.entry.relation for r in manifest.videos):
        raise InputError(
            videos / "manifest.json",
            "no video names a relation",
            "add 'relation' to the entries, or drop relation_accuracy",
        )
    if "relation_accuracy" in metrics and judge is None:
        judge = make_judge(config.judge, config.device)
    if "clip" in metrics and clip is None:
        from dreamrelation.evaluation.clip import ClipScorer

        clip = ClipScorer(config.clip_model, device=config.device)
    if "fvd" in metrics and fvd_extractor is None:
        fvd_extractor = make_fvd_extractor(config.fvd, config.device)
    cache = AnswerCache(config.judge.cache or default_cache_dir())

    rows: list[dict] = []
    generated_features: list[np.ndarray] = []
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("evaluating", total=len(manifest.videos) + len(references))
        for record in manifest.videos:
            entry = record.entry
            row: dict = {
                "id": entry.id,
                "video": str(record.video.relative_to(videos)),
                "prompt": entry.prompt,
                "relation": entry.relation or "",
                "seed": entry.seed,
            }
            frames = read_frames(record.video)
            if clip is not None:
                row.update(clip.score(frames, entry.prompt))
            question = question_for(entry, config.judge.num_frames) if judge is not None else None
            if question is not None:
                verdict = judge_video(
                    judge,
                    cache,
                    record.video,
                    frames,
                    question,
                    config.judge.num_frames,
                    file_sha256(record.video),
                )
                row["judge_answer"] = {True: "yes", False: "no", None: "unparsed"}[verdict.answer]
                row["judge_reply"] = verdict.reply
            if fvd_extractor is not None:
                generated_features.append(_fvd_features(fvd_extractor, frames, record.video, config.fvd))
            rows.append(row)
            progress.advance(task)
        reference_features = []
        for path in references:
            reference_features.append(_fvd_features(fvd_extractor, read_frames(path), path, config.fvd))
            progress.advance(task)

    per_relation: dict[str, dict] = {}
    by_relation: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["relation"]:
            by_relation[row["relation"]].append(row)
    from dreamrelation.relations import RELATIONS

    order = {r.name: i for i, r in enumerate(RELATIONS)}
    for name in sorted(by_relation, key=lambda n: order.get(n, len(order))):
        per_relation[name] = _summarise(by_relation[name])
    overall = _summarise(rows)
    if per_relation and "relation_accuracy" in metrics:
        # the paper averages over relations; with 40 prompts each this equals the pooled mean
        accuracies = [s["relation_accuracy"] for s in per_relation.values() if "relation_accuracy" in s]
        overall["relation_accuracy_mean_over_relations"] = float(np.mean(accuracies))
    if fvd_extractor is not None:
        if len(generated_features) < 2:
            raise InputError(videos, "FVD needs at least 2 generated videos", "generate more videos")
        overall["fvd"] = frechet_distance(np.stack(generated_features), np.stack(reference_features))
        overall["fvd_extractor"] = fvd_extractor.name
        overall["n_reference"] = len(references)
    settings = {
        "config": json.loads(config.model_dump_json()),
        "judge": getattr(judge, "name", None),
        "clip_model": getattr(clip, "name", None),
        "generation": manifest.settings,
    }
    return EvaluationResults(videos, metrics, rows, per_relation, overall, settings)


PER_VIDEO_COLUMNS = (
    "id",
    "video",
    "relation",
    "seed",
    "prompt",
    "judge_answer",
    "clip_t",
    "temporal_consistency",
    "judge_reply",
)
SUMMARY_COLUMNS = (
    "scope",
    "n_videos",
    "relation_accuracy",
    "n_unparsed",
    "clip_t",
    "temporal_consistency",
    "fvd",
)


def _csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_results(results: EvaluationResults, output: str | Path) -> list[Path]:
    """``results.json`` (everything), ``per_video.csv`` and ``summary.csv`` (overall + per relation)."""
    output = Path(output)
    paths = [output / "results.json", output / "per_video.csv", output / "summary.csv"]
    write_text_atomic(paths[0], json.dumps(results.to_json(), indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(paths[1], _csv(results.per_video, PER_VIDEO_COLUMNS))
    summary = [{"scope": "all", **results.overall}]
    summary += [{"scope": name, **values} for name, values in results.per_relation.items()]
    write_text_atomic(paths[2], _csv(summary, SUMMARY_COLUMNS))
    return paths


def _fmt(value: object, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summary_table(results: EvaluationResults):  # noqa: ANN201 - a rich Table
    """Per relation and overall, at most 80 columns wide."""
    from rich.table import Table

    table = Table(title=f"evaluation of {results.videos_dir.name}", title_justify="left")
    for column, justify in (
        ("relation", "left"),
        ("n", "right"),
        ("rel. acc", "right"),
        ("CLIP-T", "right"),
        ("temp. cons", "right"),
    ):
        table.add_column(column, justify=justify, max_width=24 if column == "relation" else None)
    scopes = list(results.per_relation.items()) + [("all", results.overall)]
    for name, values in scopes:
        table.add_row(
            name,
            str(values["n_videos"]),
            _fmt(values.get("relation_accuracy")),
            _fmt(values.get("clip_t")),
            _fmt(values.get("temporal_consistency")),
            end_section=name == scopes[-2][0] if len(scopes) > 1 else False,
        )
    if "fvd" in results.overall:
        table.caption = (
            f"FVD {results.overall['fvd']:.1f} ({results.overall['fvd_extractor']}, "
            f"{results.overall['n_reference']} reference videos)"
        )
    return table
