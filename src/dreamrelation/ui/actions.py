"""What each button of the web UI does, as plain functions of plain values (no Gradio here, so the
tests call them directly). Every step is a call into the library the command line uses: the dataset
scan and previews, ``propose_captions`` (`dreamrelation caption`), ``make_masks`` (`dreamrelation
masks`), the config models with their validation (`--set`), ``build_cache`` + ``Trainer`` (`cache`,
`train`, with their checkpoints; :mod:`.training`), ``generate`` and the report files `benchmark` and
`demo` write. This module is the page's one namespace: the Train page's functions are imported here.

Paths typed on the page are resolved inside the workspace's roots (the folders given to
``dreamrelation ui --root``, :mod:`.workspace`); anything outside is refused, so the server never reads
or serves it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamrelation.config import GenerateConfig, load_config
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.ui.jobs import Job, JobBoard
from dreamrelation.ui.training import (  # noqa: F401 - the page's one namespace
    LORA_FILES,
    MAIN_TRAIN_KEYS,
    MEMORY_RECIPES,
    TOY_BACKBONE,
    TOY_MODEL,
    TrainForm,
    TrainView,
    _number,
    cache_meaning,
    command_lines,
    default_model,
    default_settings,
    saved_form,
    setting_meaning,
    start_training,
    stop_training,
    toy_preset,
    train_configs,
    training_view,
)
from dreamrelation.ui.workspace import Workspace  # noqa: F401


def backbone_names() -> list[str]:
    """Every registered backbone, the toy world's first (the page's default), then the registry's order."""
    from dreamrelation.backbones import BACKBONES

    return [TOY_BACKBONE, *(name for name in BACKBONES if name != TOY_BACKBONE)]


@dataclass
class ImageInputs:
    """What the pages offer for a backbone's image-to-video form."""

    #: it has one: the Train page's first-frame box and the images are shown
    image_to_video: bool
    #: it has nothing else: the first-frame box is set and fixed, and an image is required
    image_only: bool
    #: one line saying which of the two forms the backbone has
    note: str

    def first_frame_box(self) -> dict[str, Any]:
        """The Train page's first-frame box (as Gradio update keywords): shown where the backbone has
        the form, set and fixed where it has no other, cleared where it has none."""
        box: dict[str, Any] = {"visible": self.image_to_video, "interactive": not self.image_only}
        if self.image_only or not self.image_to_video:
            box["value"] = self.image_only
        return box

    def image_field(self) -> dict[str, Any]:
        """An image input: shown where the backbone has the form; cleared where it has none (a hidden
        image would still be sent, and refused)."""
        return {"visible": True} if self.image_to_video else {"visible": False, "value": None}


def image_inputs(backbone: str) -> ImageInputs:
    """The backbone's forms (``Backbone.image_to_video`` / ``text_to_video``), as the pages show them."""
    from dreamrelation.backbones import BACKBONES, backbone_class

    cls = backbone_class(backbone)
    if not cls.image_to_video:
        able = ", ".join(name for name, c in BACKBONES.items() if c.image_to_video)
        note = f"{backbone} renders from text only; from a still image: {able}."
    elif cls.text_to_video:
        note = f"{backbone} renders from text, or from a still image as the first frame (optional)."
    else:
        note = f"{backbone} is image-to-video only: every video starts from a still image (required)."
    return ImageInputs(cls.image_to_video, not cls.text_to_video, note)


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
    from dreamrelation.toyworld.presets.comparison import data_template, write_exemplar_folders
    from dreamrelation.toyworld.presets.experiment import ExperimentConfig

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
    from dreamrelation.prepare.captions import folder_relation, list_clips
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
    from dreamrelation.prepare.captions import write_caption

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
    from dreamrelation.prepare.captions import load_caption_model, propose_captions

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


def generate_meaning(name: str) -> str:
    """A `generate` setting's meaning."""
    from dreamrelation.config_docs import describe

    return describe(GenerateConfig, name)


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
    #: image-to-video: the still image both videos start from (a path, e.g. the page's upload)
    image: str = ""


def generate_side_by_side(board: JobBoard, ws: Workspace, form: GenerateForm) -> tuple[Path, Path]:
    """The prompt rendered by the base model and by base + LoRA from the same noise (same seed), as
    `dreamrelation generate` renders it without and with ``--lora`` (both from ``form.image`` when one
    is given, as ``--image``); returns the two MP4s."""
    from dreamrelation.backbones import default_device, load_backbone
    from dreamrelation.generation.render import generate
    from dreamrelation.preflight import preflight_generate

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
        "image": form.image.strip() or None,
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
    """A `benchmark run` / `toy benchmark` / `demo` output folder: its table, plots and videos (the
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
            "give the --output folder of a finished `benchmark run`, `toy benchmark` or `demo`",
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
