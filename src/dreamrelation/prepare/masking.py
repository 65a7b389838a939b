"""`dreamrelation masks`: per-frame subject masks for every clip of a dataset folder.

For each clip: detect both subject words in every frame, segment the boxes, keep the two identities
through the clip (:mod:`~dreamrelation.prepare.tracking`), and write ``masks/<clip>/00000.png ...``
(subject 1 red, subject 2 green, as :mod:`dreamrelation.data.dataset` reads them) plus a preview GIF.
A clip's mask folder appears only once complete (written beside it, then renamed), so a clip that
has it is done and a re-run skips it; a clip that fails gets a message naming the clip and subject.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dreamrelation.data.dataset import (
    DEFAULT_SUBJECT_COLORS,
    MASKS_FOLDER,
    VideoItem,
    list_mask_files,
    scan_dataset,
)
from dreamrelation.data.video import read_video, video_info, write_gif
from dreamrelation.errors import DreamRelationError, InputError
from dreamrelation.files import write_text_atomic
from dreamrelation.prepare.config import MasksConfig
from dreamrelation.prepare.segmenters import Detector, Segmenter
from dreamrelation.prepare.tracking import (
    Detection,
    Tracks,
    filled_masks,
    subject_labels,
    track_subjects,
    with_mask,
)
from dreamrelation.relations import RELATIONS

PREVIEW_FOLDER = "previews"
SUMMARY_FILE = "masks_summary.json"
_ARTICLES = {"a", "an", "the", "one", "another", "other", "some"}


class MaskingError(DreamRelationError):
    """Masks of a clip could not be made; the message names the clip, the subject and what to try."""


@functools.cache
def _caption_patterns() -> list[re.Pattern[str]]:
    patterns = []
    for relation in RELATIONS:
        text = re.escape(relation.template).replace(r"\{a\}", "(?P<a>.+?)").replace(r"\{b\}", "(?P<b>.+?)")
        # Anything after the second subject ("... on a dark background.") is scenery, not a subject.
        patterns.append(re.compile(rf"^{text}(?:\s+(?:on|in|at|near|under|by)\s.*)?\.?$", re.IGNORECASE))
    return patterns


def _head_word(phrase: str) -> str:
    words = [w for w in re.findall(r"[\w-]+", phrase.lower()) if w not in _ARTICLES]
    return " ".join(words)


def subject_words(caption: str) -> tuple[str, str]:
    """The two subject phrases of an NTU-style caption, without articles.

    ``"A person is shaking hands with a person."`` -> ``("person", "person")``;
    ``"a red triangle is hugging a blue circle on a dark background."`` ->
    ``("red triangle", "blue circle")``.
    Matches the 26 relation templates; other captions need the subjects given explicitly.
    """
    text = " ".join(caption.strip().split())
    for pattern in _caption_patterns():
        match = pattern.match(text)
        if match:
            return _head_word(match["a"]), _head_word(match["b"])
    raise ValueError(
        f"cannot tell the two subjects from the caption {caption!r}; pass them, e.g. --subjects 'dog,cat'"
    )


@dataclass
class ClipReport:
    """What happened to one clip."""

    name: str
    status: str  # "done", "skipped" (already had masks) or "failed"
    subjects: tuple[str, str] = ("", "")
    frames: int = 0
    #: per subject: frames where it was not found (filled from the nearest frame where it was)
    missing_frames: list[list[int]] = field(default_factory=lambda: [[], []])
    suspected_swaps: list[int] = field(default_factory=list)
    anchor_frame: int | None = None
    message: str = ""


@dataclass
class MasksSummary:
    reports: list[ClipReport]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.reports)

    @property
    def frames_with_missing_subject(self) -> int:
        return sum(len(set(r.missing_frames[0]) | set(r.missing_frames[1])) for r in self.reports)

    @property
    def suspected_swaps(self) -> int:
        return sum(len(r.suspected_swaps) for r in self.reports)

    def check(self) -> None:
        """Raise :class:`MaskingError` listing every failed clip (with its own message)."""
        failed = [r for r in self.reports if r.status == "failed"]
        if failed:
            lines = "\n".join(f"  {r.message}" for r in failed)
            raise MaskingError(
                f"{len(failed)} of {len(self.reports)} clips got no masks (the others were written):\n{lines}"
            )


def detect_frames(
    frames: np.ndarray, phrases: Sequence[str], detector: Detector, segmenter: Segmenter
) -> list[list[Detection]]:
    """Per frame: the detector's boxes, each with its SAM mask."""
    per_frame = []
    for image_array in frames:
        image = Image.fromarray(image_array)
        detections = detector.detect(image, phrases)
        masks = segmenter.segment(image, [d.box for d in detections])
        if len(masks) != len(detections):
            raise ValueError(f"segmenter returned {len(masks)} masks for {len(detections)} boxes")
        per_frame.append([with_mask(d, m) for d, m in zip(detections, masks, strict=True)])
    return per_frame


def check_tracks(tracks: Tracks, name: str, words: tuple[str, str], max_missing_fraction: float) -> None:
    """Raise :class:`MaskingError` naming the clip and subject when a subject is missing too often."""
    if tracks.anchor_frame is None:
        raise MaskingError(
            f"{name}: no frame shows both subjects ({words[0]!r} and {words[1]!r}); "
            "check the subject words (--subjects) or lower box_threshold"
        )
    for subject in (0, 1):
        missing = tracks.missing_frames(subject)
        if len(missing) > max_missing_fraction * tracks.num_frames:
            shown = ", ".join(map(str, missing[:12])) + (", ..." if len(missing) > 12 else "")
            raise MaskingError(
                f"{name}: subject {subject + 1} ({words[subject]!r}) not found in {len(missing)} of "
                f"{tracks.num_frames} frames ({shown}); more than max_missing_fraction="
                f"{max_missing_fraction}. Check the word, lower box_threshold, or drop this clip"
            )


def label_image(labels: np.ndarray, colors: Sequence[Sequence[int]] = DEFAULT_SUBJECT_COLORS) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) uint8 mask PNG content: subject i in colors[i-1], black elsewhere."""
    image = np.zeros((*labels.shape, 3), dtype=np.uint8)
    for index, color in enumerate(colors):
        image[labels == index + 1] = color
    return image


def write_mask_folder(labels: np.ndarray, mask_dir: Path) -> Path:
    """Write (F, H, W) labels as mask_dir/00000.png ...; the folder appears only when complete."""
    partial = mask_dir.parent / f".{mask_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    try:
        for index, frame_labels in enumerate(labels):
            Image.fromarray(label_image(frame_labels)).save(partial / f"{index:05d}.png")
        if mask_dir.exists():
            shutil.rmtree(mask_dir)
        os.replace(partial, mask_dir)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return mask_dir


def preview_frames(frames: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each frame beside itself with subject 1 tinted red and subject 2 green (half opacity)."""
    tint = label_image(labels).astype(np.float32)
    shown = frames.astype(np.float32)
    painted = labels[..., None] > 0
    overlay = np.where(painted, 0.5 * shown + 0.5 * tint, shown).astype(np.uint8)
    return np.concatenate([frames, overlay], axis=2)


def _done(item: VideoItem, mask_dir: Path) -> str | None:
    """None if the clip still needs masks; else why it counts as done (or an error to report)."""
    if not mask_dir.is_dir():
        return None
    frames = video_info(item.video_path).num_frames
    count = len(list_mask_files(mask_dir))
    if count != frames:
        raise MaskingError(
            f"{mask_dir}: has {count} mask PNGs but {item.video_path.name} has {frames} frames; "
            "delete the folder (or use overwrite) to redo it"
        )
    return "already has masks"


def mask_clip(
    item: VideoItem,
    words: tuple[str, str],
    detector: Detector,
    segmenter: Segmenter,
    config: MasksConfig,
    root: Path,
) -> ClipReport:
    info = video_info(item.video_path)
    frames = read_video(item.video_path, info.num_frames, info.height, info.width).numpy()
    same_words = words[0] == words[1]
    phrases = [words[0]] if same_words else list(words)
    detections = detect_frames(frames, phrases, detector, segmenter)
    tracks = track_subjects(detections, same_words, config.min_overlap, config.swap_ratio)
    check_tracks(tracks, item.name, words, config.max_missing_fraction)
    masks, _ = filled_masks(tracks, info.height, info.width)
    labels = subject_labels(masks)
    write_mask_folder(labels, root / MASKS_FOLDER / item.name)
    if config.preview:
        # small clips are enlarged (nearest) so the preview is at least ~256 px tall
        scale = max(1, 256 // info.height)
        write_gif(preview_frames(frames, labels), root / PREVIEW_FOLDER / f"{item.name}.gif", scale=scale)
    return ClipReport(
        item.name,
        "done",
        words,
        info.num_frames,
        [tracks.missing_frames(0), tracks.missing_frames(1)],
        tracks.suspected_swaps,
        tracks.anchor_frame,
    )


def make_masks(
    config: MasksConfig,
    detector: Detector,
    segmenter: Segmenter,
    on_clip: Callable[[ClipReport], None] | None = None,
    raise_on_failure: bool = True,
) -> MasksSummary:
    """Masks for every clip of every dataset folder; failed clips are reported, the rest written.

    Writes ``<data>/masks_summary.json``; raises :class:`MaskingError` at the end if a clip failed
    (after doing all the others, so a re-run with other settings only redoes the failed ones), or
    with ``raise_on_failure=False`` returns the summary and leaves :meth:`MasksSummary.check` to the caller.
    """
    reports: list[ClipReport] = []
    for root in config.data:
        items = scan_dataset(root, require_masks=False)
        earlier = _earlier_reports(Path(root) / SUMMARY_FILE)
        folder_reports = []
        for item in items:
            mask_dir = Path(root) / MASKS_FOLDER / item.name
            try:
                try:
                    words = config.subjects or subject_words(item.caption)
                except ValueError as error:
                    raise MaskingError(f"{item.name}: {error}") from error
                words = (_head_word(words[0]), _head_word(words[1]))
                if not config.overwrite and _done(item, mask_dir):
                    # keep what the run that made them found (missing frames, swaps) in the summary
                    report = earlier.get(item.name) or ClipReport(item.name, "skipped", words)
                    report.status, report.message = "skipped", "already has masks"
                else:
                    report = mask_clip(item, words, detector, segmenter, config, Path(root))
            except (MaskingError, InputError) as error:
                report = ClipReport(item.name, "failed", message=str(error))
            folder_reports.append(report)
            if on_clip is not None:
                on_clip(report)
        _write_summary(Path(root) / SUMMARY_FILE, folder_reports)
        reports.extend(folder_reports)
    summary = MasksSummary(reports)
    if raise_on_failure:
        summary.check()
    return summary


def _earlier_reports(path: Path) -> dict[str, ClipReport]:
    """Per-clip reports of the last run's summary, if it is there and readable (else none)."""
    try:
        clips = json.loads(path.read_text(encoding="utf-8"))["clips"]
        return {c["name"]: ClipReport(**{**c, "subjects": tuple(c["subjects"])}) for c in clips}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_summary(path: Path, reports: Sequence[ClipReport]) -> None:
    data = {
        "clips_done": sum(r.status == "done" for r in reports),
        "clips_skipped": sum(r.status == "skipped" for r in reports),
        "clips_failed": sum(r.status == "failed" for r in reports),
        "frames_with_missing_subject": MasksSummary(list(reports)).frames_with_missing_subject,
        "suspected_identity_swaps": MasksSummary(list(reports)).suspected_swaps,
        "clips": [asdict(r) for r in reports],
    }
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
