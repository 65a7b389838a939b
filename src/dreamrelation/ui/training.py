"""The Train page's functions: the form as the configs `dreamrelation cache` and `train` validate, the
run in a background job (the trainer's own checkpoints; the CLI's lock), and what the page shows of it.

A run started here writes its configs as ``ui_cache.yaml`` / ``ui_train.yaml`` beside it, so that
``dreamrelation train --config RUN/ui_train.yaml`` resumes it, and a reopened page shows its settings.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dreamrelation.config import CacheConfig, TrainConfig, load_config
from dreamrelation.errors import ConfigError
from dreamrelation.ui.jobs import Job, JobBoard, StopRequested
from dreamrelation.ui.workspace import Workspace

#: the embedded default: the toy world's backbone and its shipped weights
TOY_BACKBONE, TOY_MODEL = "toy", "shipped"
#: the main settings the Train page shows (every other key: the "more settings" box, as --set lines)
MAIN_TRAIN_KEYS = (
    "max_steps",
    "learning_rate",
    "warmup_steps",
    "lora.rank",
    "lora.alpha",
    "batch_size",
    "seed",
    "loss.mask_weight",
    "loss.contrastive_weight",
    "checkpoint_every",
    "validation_every",
)
#: docs/memory.md's recipes, as the settings they set
MEMORY_RECIPES: dict[str, dict[str, Any]] = {
    "auto (checkpointing when the geometry is large)": {},
    "80 GB: gradient checkpointing": {"gradient_checkpointing": True},
    "40 GB: checkpointing + FP8 base": {"gradient_checkpointing": True, "fp8_base": True},
    "24 GB: checkpointing + FP8 base + block offload": {
        "gradient_checkpointing": True,
        "fp8_base": True,
        "block_offload": True,
    },
}
LORA_FILES = ("relation_lora.safetensors", "relation_lora_comfyui.safetensors", "triplet.safetensors")


def _field_path(key: str) -> tuple[type, str]:
    """The config model holding a dotted TrainConfig key, and the field's name in it."""
    from dreamrelation.config_docs import _nested_model

    cls: type = TrainConfig
    *parents, leaf = key.split(".")
    for part in parents:
        cls = _nested_model(cls.model_fields[part].annotation)
    return cls, leaf


def setting_meaning(key: str) -> str:
    """A TrainConfig key's meaning, as docs/config.md and --help-config give it."""
    from dreamrelation.config_docs import describe

    cls, leaf = _field_path(key)
    return describe(cls, leaf)


def cache_meaning(name: str) -> str:
    """A `cache` video setting's meaning (``video.<name>``)."""
    from dreamrelation.config import VideoGeometry
    from dreamrelation.config_docs import describe

    return describe(VideoGeometry, name)


def default_settings(backbone: str, relation: str = "walking_towards") -> dict[str, Any]:
    """The Train page's starting values of :data:`MAIN_TRAIN_KEYS`: TrainConfig's defaults (the
    paper's), or for the toy backbone the toy preset of `toy benchmark` / `demo`."""
    values = {}
    for key in MAIN_TRAIN_KEYS:
        cls, leaf = _field_path(key)
        values[key] = cls.model_fields[leaf].get_default(call_default_factory=True)
    if backbone == TOY_BACKBONE:
        values.update(toy_preset(relation)["train"])
    return values


def default_model(backbone: str) -> tuple[str, str]:
    """The Train page's model and weights dtype for a backbone: the toy world's shipped weights in
    float32, Mochi's hub id, else none yet (a hub id or folder to type), in bfloat16."""
    if backbone == TOY_BACKBONE:
        return TOY_MODEL, "float32"
    return ("genmo/mochi-1-preview" if backbone == "mochi" else ""), "bfloat16"


def toy_preset(relation: str = "walking_towards") -> dict[str, Any]:
    """The toy world's training, geometry and sampling settings as `dreamrelation demo` uses them,
    flattened to dotted keys, plus a validation render every quarter of the run."""
    from dreamrelation.toyworld.presets.comparison import toy_benchmark_config
    from dreamrelation.toyworld.presets.experiment import ExperimentConfig, evaluation_prompts

    experiment = ExperimentConfig(relation=relation)
    preset = toy_benchmark_config(experiment, [relation], [0], ["dreamrelation"], Path("."))
    train = {k: v for k, v in _flatten(preset["train"]).items()}
    train["validation_every"] = max(1, train["max_steps"] // 4)
    generation = preset["generation"]
    return {
        "train": train,
        "video": preset["cache"]["video"],
        "validation": {
            "validation_prompts": [evaluation_prompts(experiment)[0].prompt],
            "validation_steps": generation["num_inference_steps"],
            "validation_guidance": generation["guidance_scale"],
        },
        "generation": generation,
        "prompt": evaluation_prompts(experiment)[0].prompt,
    }


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "placement":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass
class TrainForm:
    """What the Train page sends: the same settings `dreamrelation cache` + `train` take."""

    data: str
    output: str
    backbone: str = TOY_BACKBONE
    model: str = TOY_MODEL
    method: str = "dreamrelation"
    dtype: str = "float32"
    num_frames: int = 16
    height: int = 32
    width: int = 32
    memory_recipe: str = next(iter(MEMORY_RECIPES))
    settings: dict[str, Any] = field(default_factory=dict)
    validation_prompt: str = ""
    #: image-to-video: learn the relation with each clip's first frame as the condition (`--first-frame`)
    first_frame: bool = False
    #: the still image the validation videos start from (image-to-video; a path, e.g. the page's upload)
    validation_image: str = ""
    #: more settings, one `key=value` per line (any TrainConfig key, as `--set`)
    extra: str = ""


def _number(key: str, value: Any) -> Any:
    """Form values arrive as numbers or text; an empty box means the default (None: unset)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value.is_integer() and key not in ("learning_rate", "lora.alpha"):
        cls, leaf = _field_path(key)
        if "int" in str(cls.model_fields[leaf].annotation):
            return int(value)
    return value


def train_configs(ws: Workspace, form: TrainForm) -> tuple[CacheConfig, TrainConfig]:
    """The cache and training configs of a form, validated as the CLI validates them: a bad value is
    refused naming the setting, before any work."""
    from dreamrelation.config_keys import check_keys, parse_sets

    data = ws.path(form.data, "data folder")
    output = ws.path(form.output, "output folder")
    if form.memory_recipe not in MEMORY_RECIPES:
        raise ConfigError(f"memory recipe {form.memory_recipe!r}: choose one of {', '.join(MEMORY_RECIPES)}")
    model = {"model.backbone": form.backbone, "model.model": form.model.strip(), "model.dtype": form.dtype}
    cache = load_config(
        CacheConfig,
        sets={
            **model,
            "data": [{"path": str(data)}],
            "output": str(output / "cache"),
            "video.num_frames": form.num_frames,
            "video.height": form.height,
            "video.width": form.width,
        },
    )
    try:
        extra = parse_sets(line.strip() for line in form.extra.splitlines() if line.strip())
    except Exception as error:  # noqa: BLE001 - parse_sets' own message names the line
        raise ConfigError(f"more settings: {error}") from None
    check_keys(TrainConfig, extra)
    sets: dict[str, Any] = {
        **model,
        "cache": [str(cache.output)],
        "output": str(output),
        "method": form.method,
        "first_frame": bool(form.first_frame),
    }
    sets.update(MEMORY_RECIPES[form.memory_recipe])
    sets.update({k: v for k, v in ((k, _number(k, v)) for k, v in form.settings.items()) if v is not None})
    if form.validation_prompt.strip() and sets.get("validation_every"):
        sets["validation_prompts"] = [form.validation_prompt.strip()]
        if form.validation_image.strip():
            sets["validation_image"] = form.validation_image.strip()
        if form.backbone == TOY_BACKBONE:
            sets.update({k: v for k, v in toy_preset()["validation"].items() if k != "validation_prompts"})
    else:
        sets["validation_every"] = None
    sets.update(extra)
    return cache, load_config(TrainConfig, sets=sets)


def saved_form(ws: Workspace, output: str | Path) -> dict[str, Any] | None:
    """The settings a run folder was started with from the page (its ui_cache.yaml and ui_train.yaml),
    as the Train page's fields, so a reopened page shows the run it is watching; None when absent."""
    path = ws.path(output, "output folder")
    files = path / "ui_cache.yaml", path / "ui_train.yaml"
    if not all(f.is_file() for f in files):
        return None
    cache, train = (yaml.safe_load(f.read_text("utf-8")) for f in files)
    flat = _flatten(train)
    prompts = train.get("validation_prompts") or [""]
    image = train.get("validation_image")
    return {
        "data": cache["data"][0]["path"],
        "backbone": cache["model"]["backbone"],
        "model": cache["model"]["model"],
        "dtype": cache["model"]["dtype"],
        "method": train["method"],
        **{f"video.{k}": cache["video"][k] for k in ("num_frames", "height", "width")},
        "settings": {key: flat.get(key) for key in MAIN_TRAIN_KEYS},
        "validation_prompt": prompts[0],
        "first_frame": bool(train.get("first_frame")),
        "validation_image": image if image and Path(image).is_file() else None,
    }


def command_lines(output: Path) -> str:
    """The command lines that run (or resume) what the page started, from the YAML files it wrote."""
    return (
        f"dreamrelation cache --config {shlex.quote(str(output / 'ui_cache.yaml'))}\n"
        f"dreamrelation train --config {shlex.quote(str(output / 'ui_train.yaml'))}"
    )


def start_training(board: JobBoard, ws: Workspace, form: TrainForm) -> Job:
    """Validate, claim the output folder (this page's runs and the CLI's lock), write the configs as
    YAML beside the run (so the CLI can resume it), then cache and train in the background.

    A validation image is copied into the run folder (``validation_image.png``, ...) and the YAML names
    the copy: the page's upload lives in Gradio's cache, which a later `dreamrelation train` may not find.
    """
    from dreamrelation.files import output_lock
    from dreamrelation.preflight import (
        check_backbone,
        check_first_frame,
        check_validation_image,
        preflight_cache,
        preflight_train,
    )

    cache_cfg, train_cfg = train_configs(ws, form)
    preflight_cache(cache_cfg)
    # the image checks of preflight_train, now rather than after the cache is built
    backbone = check_backbone(train_cfg.model)
    check_first_frame(backbone, train_cfg)
    if train_cfg.validation_every:
        check_validation_image(backbone, train_cfg, (cache_cfg.video.height, cache_cfg.video.width))
    job = board.claim("train", train_cfg.output)
    lock = output_lock(train_cfg.output)
    try:
        lock.__enter__()  # refuses while a `dreamrelation train` runs there (the CLI's own check)
    except BaseException:
        job.state = "failed"
        raise
    try:
        if train_cfg.validation_image is not None:
            train_cfg = _keep_validation_image(train_cfg)
        for name, cfg in (("ui_cache.yaml", cache_cfg), ("ui_train.yaml", train_cfg)):
            text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
            (train_cfg.output / name).write_text(text, "utf-8")
    except BaseException:
        job.state = "failed"
        lock.__exit__(None, None, None)
        raise
    job.total = train_cfg.max_steps
    job.message = "started; the same run from the command line:\n" + command_lines(train_cfg.output)

    def work(job: Job) -> Any:
        from dreamrelation.cache import build_cache
        from dreamrelation.training.loop import Trainer

        job.phase = "cache"
        build_cache(cache_cfg, show_progress=False)
        preflight_train(train_cfg)  # needs the cache (it checks the cache's model against the run's)
        job.phase = "load"
        trainer = Trainer(train_cfg)

        def on_step(record: dict[str, Any]) -> None:
            job.records = trainer.history  # (a resumed run's history starts with the earlier steps)
            job.on_step(trainer.step)

        job.phase = "train"
        try:
            result = trainer.run(show_progress=False, on_step=on_step)
        except StopRequested:
            trainer.save()
            trainer.close()
            job.message = (
                f"stopped at step {trainer.step}; checkpoint saved in {trainer.checkpoint_root}. "
                "Resume: press "
                "Start with the same settings, or from the command line:\n" + command_lines(train_cfg.output)
            )
            raise
        job.records = result.history
        job.step = len(result.history)
        job.message = f"done: {len(result.history)} steps; LoRA in {result.lora_path}"
        return result

    return board.start(job, work, on_exit=lambda: lock.__exit__(None, None, None))


def _keep_validation_image(config: TrainConfig) -> TrainConfig:
    """The config with its validation image copied into the run folder (left as it is when it is
    that copy already: a run restarted from its saved settings)."""
    import shutil

    from dreamrelation.files import atomic_target

    source = Path(config.validation_image)
    kept = config.output / f"validation_image{source.suffix.lower() or '.png'}"
    if source.resolve() != kept.resolve():
        with atomic_target(kept, kept.suffix) as temp:  # never a torn copy under the name the YAML gives
            shutil.copyfile(source, temp)
    return config.model_copy(update={"validation_image": kept})


def stop_training(board: JobBoard, ws: Workspace, output: str | Path) -> str:
    path = ws.path(output, "output folder")
    job = board.get(path)
    if job is None or not job.running:
        return f"{path}: no run of this page is training there"
    job.request_stop()
    return f"stopping after this step; a checkpoint is saved in {path / 'checkpoints'}"


@dataclass
class TrainView:
    state: str
    phase: str
    step: int
    total: int
    eta: str
    message: str
    #: (step, loss, reconstruction, contrastive) per step, for the loss curves
    losses: list[tuple[int, float, float, float]]
    validation_videos: list[Path]
    lora_files: list[Path]
    #: the adapter(s) the last step trained (Hybrid Mask Training's draw), as the CLI's bar shows it
    adapter: str = "-"

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def training_view(board: JobBoard, ws: Workspace, output: str | Path) -> TrainView:
    """What the Train page shows about a run folder: the page's job when there is one, else what a
    finished (or CLI) run left on disk (history.json, validation videos, LoRA files)."""
    from dreamrelation.prepare.previews import clip_preview

    path = ws.path(output, "output folder")
    job = board.get(path)
    records: list[dict[str, Any]] = list(job.records) if job is not None else []
    if not records and (path / "history.json").is_file():
        records = json.loads((path / "history.json").read_text("utf-8"))
    losses = [
        (
            int(r.get("step", i + 1)),
            float(r["loss"]),
            float(r.get("reconstruction", r["loss"])),
            float(r.get("contrastive", 0.0)),
        )
        for i, r in enumerate(records)
        if "loss" in r
    ]
    rendered = sorted((path / "validation").glob("step-*/*.mp4")) if (path / "validation").is_dir() else []
    videos = [clip_preview(video) for video in rendered]  # enlarged: a 32 px video is a dot on the page
    loras = [path / name for name in LORA_FILES if (path / name).is_file()]
    adapter = str(records[-1].get("adapter", "-")) if records else "-"
    if job is None:
        state = "done" if loras else ("not started" if not losses else "stopped")
        return TrainView(state, "-", len(losses), len(losses), "-", "", losses, videos, loras, adapter)
    eta = _clock(job.eta_seconds()) if job.running else "-"
    return TrainView(
        job.state, job.phase, job.step, job.total, eta, job.message, losses, videos, loras, adapter
    )
