"""A folder of generated videos and its ``manifest.json``: what `generate --prompts` writes and
what `evaluate` reads.

Format (``"format": "dreamrelation.videos/1"``)::

    {"format": "dreamrelation.videos/1",
     "settings": {... how the videos were rendered: backbone, model, LoRA, steps, guidance ...},
     "videos": [{"id": "A058-00", "video": "A058-00.mp4", "prompt": "A robot is shaking hands
                 with a teddy bear.", "seed": 5800, "relation": "shaking_hands",
                 "subject1": "a robot", "subject2": "a teddy bear"}, ...]}

``video`` is relative to the folder. Videos made elsewhere are evaluated by writing such a file
by hand (``settings`` may be empty; ``relation`` is needed for relation accuracy only).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dreamrelation.errors import InputError
from dreamrelation.files import inside, write_text_atomic
from dreamrelation.generation.prompts import PromptEntry, entry_from_json

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "dreamrelation.videos/1"


@dataclass(frozen=True)
class VideoRecord:
    entry: PromptEntry
    video: Path  # absolute

    def to_json(self, folder: Path) -> dict:
        data = self.entry.to_json()
        data.pop("ntu_caption", None)
        return {"video": str(self.video.relative_to(folder)), **data}


@dataclass
class Manifest:
    folder: Path
    videos: list[VideoRecord]
    settings: dict = field(default_factory=dict)

    def write(self) -> Path:
        """Atomically (tmp + rename) write ``folder/manifest.json``."""
        path = self.folder / MANIFEST_NAME
        payload = {
            "format": MANIFEST_FORMAT,
            "settings": self.settings,
            "videos": [record.to_json(self.folder) for record in self.videos],
        }
        return write_text_atomic(path, json.dumps(payload, indent=1, ensure_ascii=False) + "\n")


def video_filename(entry_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", entry_id).strip("._") or "video"


def read_manifest(folder: str | Path) -> Manifest:
    """Read and check ``folder/manifest.json``; errors name the file and the fix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(
            folder, "videos folder not found", "give the --output folder of `dreamrelation generate`"
        )
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise InputError(
            path,
            "no manifest in the videos folder",
            "render the folder with `dreamrelation generate --prompts FILE --output DIR`, or write a "
            'manifest.json listing {"video", "prompt", "relation", "seed"} per video (docs/evaluation.md)',
        )
    try:
        data = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(path, f"is not valid JSON ({exc})", "regenerate it or fix it by hand") from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise InputError(path, 'has no "videos" list', "see docs/evaluation.md for the manifest format")
    records = []
    for index, item in enumerate(data["videos"]):
        if not isinstance(item, dict) or not isinstance(item.get("video"), str):
            raise InputError(
                path, f'video {index} has no "video" file name', "add it (relative to the folder)"
            )
        item = dict(item)
        video = folder / item["video"]
        inside(folder, item.pop("video"), f"{path}: video {index}")  # never a file outside the folder
        item.setdefault("id", video.stem)
        records.append(VideoRecord(entry_from_json(item, index, path), video))
    if not records:
        raise InputError(path, "lists no videos", "generate some first")
    return Manifest(folder, records, data.get("settings") or {})


@dataclass
class RenderSummary:
    rendered: list[Path]
    skipped: list[Path]
    manifest: Path


def render_prompt_set(
    render_one: Callable[[PromptEntry], np.ndarray],
    entries: list[PromptEntry],
    output: str | Path,
    settings: dict,
    *,
    fps: int = 30,
    lossless: bool = False,
    show_progress: bool = True,
) -> RenderSummary:
    """Render every entry with its own seed into ``output/<id>.mp4`` and write the manifest first,
    so an interrupted run resumes: videos already there (written atomically) are skipped. A folder
    rendered with other settings is refused rather than mixed. ``lossless``: see ``write_video``."""
    from dreamrelation.data import write_video

    output = Path(output)
    path = output / MANIFEST_NAME
    if path.is_file():
        previous = json.loads(path.read_text("utf-8")).get("settings")
        if previous != settings:
            changed = sorted(
                k for k in set(previous or {}) | set(settings) if (previous or {}).get(k) != settings.get(k)
            )
            raise InputError(
                path,
                f"the folder holds videos rendered with other settings ({', '.join(changed)} differ)",
                "use another --output folder, or delete this one to start over",
            )
    records = [VideoRecord(e, output / f"{video_filename(e.id)}.mp4") for e in entries]
    if len({r.video for r in records}) != len(records):
        raise InputError(
            output, "two prompts map to the same video file name", "give the prompts distinct ids"
        )
    manifest = Manifest(output, records, settings)
    manifest_path = manifest.write()
    rendered: list[Path] = []
    todo = [r for r in records if not r.video.is_file()]
    skipped = [r.video for r in records if r.video.is_file()]
    from rich.progress import Progress

    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("rendering", total=len(todo))
        for record in todo:
            frames = render_one(record.entry)
            write_video(frames, record.video, fps=fps, lossless=lossless)
            rendered.append(record.video)
            progress.advance(task)
    return RenderSummary(rendered, skipped, manifest_path)
