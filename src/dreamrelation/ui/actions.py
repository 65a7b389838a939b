"""What each button of the web UI does, as plain functions of plain values (no Gradio here, so the
tests call them directly). Every step is a call into the library the command line uses: the dataset
scan and previews, ``propose_captions`` (`dreamrelation caption`), ``make_masks`` (`dreamrelation
masks`), the config models with their validation (`--set`), ``build_cache`` + ``Trainer`` (`cache`,
`train`, with their checkpoints), ``generate`` and the report files `benchmark` and `demo` write.

Paths typed on the page are resolved inside the workspace's roots (the folders given to
``dreamrelation ui --root``); anything outside is refused, so the server never reads or serves it.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dreamrelation.config import CacheConfig, GenerateConfig, TrainConfig, load_config
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.ui.jobs import Job, JobBoard, StopRequested

#: the embedded default: the toy world's backbone and its shipped weights
TOY_BACKBONE, TOY_MODEL = "toy", "shipped"
BACKBONES = ("toy", "mochi", "wan", "hunyuan")
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


# ----- where the UI may look --------------------------------------------------------------------
class Workspace:
    """The folders the user chose (``dreamrelation ui --root``): every path the page names must lie
    inside one, and only files inside them are served."""

    def __init__(self, roots: list[str | Path]) -> None:
        self.roots = [Path(root).expanduser().resolve() for root in roots]

    def path(self, text: str | Path | None, what: str) -> Path:
        """``text`` as an absolute path inside a root (relative paths: inside the first root)."""
        text = str(text or "").strip()
        if not text:
            raise ConfigError(f"{what}: empty; give a folder inside {self.describe()}")
        path = Path(text).expanduser()
        path = (path if path.is_absolute() else self.roots[0] / path).resolve()
        if not any(path == root or root in path.parents for root in self.roots):
            raise InputError(
                path,
                f"the {what} is outside the folders this UI may read ({self.describe()})",
                "choose a folder inside them, or restart with `dreamrelation ui --root FOLDER`",
            )
        return path

    def describe(self) -> str:
        return ", ".join(str(root) for root in self.roots)


# ----- 1. data ------------------------------------------------------------------------------------
@dataclass
class ClipView:
    name: str
    #: browser-playable preview of the clip (None when it does not decode)
    preview: Path | None
    caption: str
    #: "captioned", "no caption" or "failed"
    status: str
    mask_preview: Path | None = None
    problem: str = ""


@dataclass
class DataView:
    folder: Path
    relation: str
    clips: list[ClipView]

    @property
    def failed(self) -> list[str]:
        return [c.problem for c in self.clips if c.problem]


def toy_data(ws: Workspace, relation: str = "walking_towards", seed: int = 0, exemplars: int = 20) -> Path:
    """The toy world's exemplars of ``relation`` (as `dreamrelation demo` draws them) as a dataset
    folder with masks, in the first root: ``toy-world/data/<relation>/seed<seed>``."""
    from dreamrelation.data.dataset import RELATION_FILE
    from dreamrelation.toyworld.benchmark import data_template, write_exemplar_folders
    from dreamrelation.toyworld.experiment import ExperimentConfig

    cfg = ExperimentConfig(relation=relation, seed=seed, exemplars=exemplars)
    output = ws.roots[0] / "toy-world"
    write_exemplar_folders(cfg, [relation], [seed], output)
    folder = Path(str(data_template(output, relation)).format(seed=seed))
    if not (folder / RELATION_FILE).is_file():  # the folder is named by its seed; name the relation
        (folder / RELATION_FILE).write_text(relation + "\n", "utf-8")
    return folder


def open_data(ws: Workspace, folder: str | Path) -> DataView:
    """Every clip of a dataset folder with a playable preview, its caption (or none yet) and its mask
    preview; a clip that does not decode, or whose masks are broken, is listed with the reason."""
    from dreamrelation.captioning import folder_relation, list_clips
    from dreamrelation.prepare.previews import clip_preview, mask_preview

    path = ws.path(folder, "data folder")
    if not path.is_dir():
        raise InputError(
            path, "no such folder", "give the folder that holds the clips (<name>.mp4 + <name>.txt)"
        )
    clips = []
    for name, video, caption_path in list_clips(path):
        caption = caption_path.read_text("utf-8-sig").strip() if caption_path.is_file() else ""
        view = ClipView(name, None, caption, "captioned" if caption else "no caption")
        try:
            view.preview = clip_preview(video)
            view.mask_preview = mask_preview(video)
        except InputError as error:
            view.status, view.problem = "failed", str(error)
        clips.append(view)
    try:
        relation = folder_relation(path).name
    except InputError:
        relation = path.name
    return DataView(path, relation, clips)


def save_captions(ws: Workspace, folder: str | Path, captions: dict[str, str]) -> list[Path]:
    """Write the captions a person confirmed or edited (clip name -> caption) as ``<clip>.txt``;
    unchanged ones are left alone."""
    from dreamrelation.captioning import write_caption

    path = ws.path(folder, "data folder")
    written = []
    for name, caption in captions.items():
        current = path / f"{name}.txt"
        before = current.read_text("utf-8-sig").strip() if current.is_file() else ""
        if caption.strip() and " ".join(caption.split()) != before:
            written.append(write_caption(path, name, caption))
    return written


def propose(ws: Workspace, folder: str | Path, model: str, frames: int = 4) -> list[Any]:
    """`dreamrelation caption FOLDER --model MODEL`: proposals for the clips without a caption."""
    from dreamrelation.captioning import load_caption_model, propose_captions

    path = ws.path(folder, "data folder")
    judge = load_caption_model(model)
    return propose_captions(path, judge, num_frames=frames)


def run_masks(ws: Workspace, folder: str | Path, detector: str, segmenter: str) -> Any:
    """`dreamrelation masks --data FOLDER`: Grounding DINO + SAM; failed clips reported, others written."""
    from dreamrelation.devices import resolve_device
    from dreamrelation.prepare.config import MasksConfig
    from dreamrelation.prepare.masking import make_masks
    from dreamrelation.prepare.segmenters import GroundingDinoDetector, SamSegmenter

    path = ws.path(folder, "data folder")
    cfg = load_config(MasksConfig, sets={"data": [str(path)], "detector": detector, "segmenter": segmenter})
    where = resolve_device(cfg.device)
    found = GroundingDinoDetector.from_pretrained(
        cfg.detector, where, box_threshold=cfg.box_threshold, top_k=cfg.top_k
    )
    sam = SamSegmenter.from_pretrained(cfg.segmenter, where)
    return make_masks(cfg, found, sam, raise_on_failure=False)


# ----- 2. train -----------------------------------------------------------------------------------
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


def generate_meaning(name: str) -> str:
    """A `generate` setting's meaning."""
    from dreamrelation.config_docs import describe

    return describe(GenerateConfig, name)


def default_settings(backbone: str, relation: str = "walking_towards") -> dict[str, Any]:
    """The Train page's starting values of :data:`MAIN_TRAIN_KEYS`: TrainConfig's defaults (the
    paper's), or for the toy backbone the toy preset of `benchmark toy` / `demo`."""
    values = {}
    for key in MAIN_TRAIN_KEYS:
        cls, leaf = _field_path(key)
        values[key] = cls.model_fields[leaf].get_default(call_default_factory=True)
    if backbone == TOY_BACKBONE:
        values.update(toy_preset(relation)["train"])
    return values


def toy_preset(relation: str = "walking_towards") -> dict[str, Any]:
    """The toy world's training, geometry and sampling settings as `dreamrelation demo` uses them,
    flattened to dotted keys, plus a validation render every quarter of the run."""
    from dreamrelation.toyworld.benchmark import toy_benchmark_config
    from dreamrelation.toyworld.experiment import ExperimentConfig, evaluation_prompts

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
    }
    sets.update(MEMORY_RECIPES[form.memory_recipe])
    sets.update({k: v for k, v in ((k, _number(k, v)) for k, v in form.settings.items()) if v is not None})
    if form.validation_prompt.strip() and sets.get("validation_every"):
        sets["validation_prompts"] = [form.validation_prompt.strip()]
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
    return {
        "data": cache["data"][0]["path"],
        "backbone": cache["model"]["backbone"],
        "model": cache["model"]["model"],
        "dtype": cache["model"]["dtype"],
        "method": train["method"],
        **{f"video.{k}": cache["video"][k] for k in ("num_frames", "height", "width")},
        "settings": {key: flat.get(key) for key in MAIN_TRAIN_KEYS},
        "validation_prompt": prompts[0],
    }


def command_lines(output: Path) -> str:
    """The command lines that run (or resume) what the page started, from the YAML files it wrote."""
    return (
        f"dreamrelation cache --config {shlex.quote(str(output / 'ui_cache.yaml'))}\n"
        f"dreamrelation train --config {shlex.quote(str(output / 'ui_train.yaml'))}"
    )


def start_training(board: JobBoard, ws: Workspace, form: TrainForm) -> Job:
    """Validate, claim the output folder (this page's runs and the CLI's lock), write the configs as
    YAML beside the run (so the CLI can resume it), then cache and train in the background."""
    from dreamrelation.checks import output_lock, preflight_cache, preflight_train

    cache_cfg, train_cfg = train_configs(ws, form)
    preflight_cache(cache_cfg)
    job = board.claim("train", train_cfg.output)
    lock = output_lock(train_cfg.output)
    try:
        lock.__enter__()  # refuses while a `dreamrelation train` runs there (the CLI's own check)
    except BaseException:
        job.state = "failed"
        raise
    try:
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
        from dreamrelation.train import Trainer

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


# ----- 3. generate --------------------------------------------------------------------------------
@dataclass
class GenerateForm:
    run: str
    prompt: str
    backbone: str = TOY_BACKBONE
    model: str = TOY_MODEL
    dtype: str = "float32"
    seed: int = 0
    steps: int = 24
    guidance: float = 6.0
    num_frames: int = 16
    height: int = 32
    width: int = 32
    #: a LoRA file (default: the run folder's relation_lora.safetensors)
    lora: str = ""


def generate_side_by_side(board: JobBoard, ws: Workspace, form: GenerateForm) -> tuple[Path, Path]:
    """The prompt rendered by the base model and by base + LoRA from the same noise (same seed), as
    `dreamrelation generate` renders it without and with ``--lora``; returns the two MP4s."""
    from dreamrelation.backbones import default_device, load_backbone
    from dreamrelation.checks import preflight_generate
    from dreamrelation.generate import generate

    run = ws.path(form.run, "run folder")
    lora = ws.path(form.lora, "LoRA file") if form.lora.strip() else run / "relation_lora.safetensors"
    if not lora.is_file():
        raise InputError(
            lora, "no LoRA file there yet", "train first (Train page), or give the LoRA file's path"
        )
    if not form.prompt.strip():
        raise ConfigError(
            "prompt: empty; write what to render, e.g. 'a red circle is hugging a blue square.'"
        )
    output = run / "ui_generate" / time.strftime("%Y%m%d-%H%M%S")
    common = {
        "model.backbone": form.backbone,
        "model.model": form.model.strip(),
        "model.dtype": form.dtype,
        "prompts": [form.prompt.strip()],
        "seed": _number("seed", form.seed),
        "num_inference_steps": form.steps,
        "guidance_scale": form.guidance,
        "num_frames": form.num_frames,
        "height": form.height,
        "width": form.width,
        "fps": 8,
    }
    base_cfg = load_config(GenerateConfig, sets={**common, "output": str(output / "base")})
    lora_cfg = load_config(GenerateConfig, sets={**common, "output": str(output / "lora"), "lora": str(lora)})
    preflight_generate(lora_cfg)
    job = board.claim("generate", output)

    def work(job: Job) -> tuple[Path, Path]:
        spec = base_cfg.model
        job.phase = "load"
        backbone = load_backbone(
            spec.backbone, spec.model, spec.dtype, spec.max_sequence_length, default_device()
        )
        job.phase = "base"
        base = generate(base_cfg, backbone, show_progress=False)[0]
        job.phase = "lora"
        with_lora = generate(lora_cfg, backbone, show_progress=False)[0]
        # one folder per model; the files are named by it too, so the two downloads tell apart
        return base.rename(base.with_name(f"base_{base.name}")), with_lora.rename(
            with_lora.with_name(f"lora_{with_lora.name}")
        )

    return board.run_here(job, work)


# ----- 4. compare ---------------------------------------------------------------------------------
@dataclass
class CompareView:
    folder: Path
    kind: str
    table: str
    plots: list[Path]
    videos: list[tuple[Path, str]]


def open_results(ws: Workspace, folder: str | Path, max_videos: int = 12) -> CompareView:
    """A `benchmark run` / `benchmark toy` / `demo` output folder: its table, plots and videos (the
    rendered MP4s as browser-playable previews beside them)."""
    from dreamrelation.prepare.previews import clip_preview

    path = ws.path(folder, "results folder")
    if not path.is_dir():
        raise InputError(
            path, "no such folder", "give the --output folder of `dreamrelation benchmark` or `demo`"
        )
    kind = "demo" if (path / "report.html").is_file() else "benchmark"
    tables = [p for p in (path / "benchmark.md", path / "toy_benchmark.md") if p.is_file()]
    if not tables:
        raise InputError(
            path,
            "holds no benchmark.md (the table `dreamrelation benchmark` and `demo` write)",
            "give the --output folder of a finished `benchmark run`, `benchmark toy` or `demo`",
        )
    plots = sorted(p for p in path.glob("*.png"))
    plots += sorted((path / "analysis").glob("*.png")) if (path / "analysis").is_dir() else []
    videos = [(p, p.stem.replace("_", " ")) for p in sorted(path.glob("*.gif"))]
    for mp4 in sorted(path.glob("runs/**/videos/*.mp4")):
        if len(videos) >= max_videos:
            break
        label = " / ".join(mp4.relative_to(path / "runs").parts[:-2] + (mp4.stem,))
        try:  # the runner writes lossless RGB H.264, which browsers do not play
            videos.append((clip_preview(mp4), label))
        except InputError:
            continue
    return CompareView(path, kind, tables[0].read_text("utf-8"), plots, videos[:max_videos])
