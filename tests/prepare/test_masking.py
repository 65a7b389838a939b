"""`dreamrelation masks` over dataset folders of toy-world clips, with a colour-key detector.

The toy world paints each subject in one known colour, so a detector/segmenter that keys on those
colours (below) finds each sprite's visible pixels in the decoded video: the written masks must equal
the toy world's own ground truth, with the identity rules applied.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamrelation.data import load_subject_masks
from dreamrelation.prepare.config import MasksConfig
from dreamrelation.prepare.masking import MaskingError, make_masks, subject_words
from dreamrelation.prepare.tracking import Box, Detection, mask_box
from dreamrelation.toyworld.world import COLORS, Scene, render, write_dataset_folder


class ColourKeyDetector:
    """Detector + Segmenter for toy frames: a subject is the pixels of its colour (±40 per channel).

    Phrases naming a colour ("red triangle") find that colour; a phrase without one ("person") finds
    every toy colour present, all labelled with that phrase. ``hide`` drops (phrase, frame) pairs.
    """

    def __init__(self, hide: set[tuple[str, int]] = frozenset()) -> None:
        self.hide = hide
        self.frame = -1

    def _colour_mask(self, image: np.ndarray, color: str) -> np.ndarray:
        return np.abs(image.astype(int) - np.array(COLORS[color])).max(axis=-1) <= 40

    def detect(self, image: Image.Image, phrases: Sequence[str]) -> list[Detection]:
        self.frame += 1
        array = np.asarray(image)
        detections = []
        for index, phrase in enumerate(phrases):
            if (phrase, self.frame % 16) in self.hide:
                continue
            named = [c for c in COLORS if c in phrase.split()]
            for color in named or list(COLORS):
                mask = self._colour_mask(array, color)
                if mask.sum() >= 4:
                    detections.append(Detection(mask_box(mask), 0.9, index))
        self._image = array
        return detections

    def segment(self, image: Image.Image, boxes: Sequence[Box]) -> np.ndarray:
        array = np.asarray(image)
        masks = []
        for box in boxes:
            x0, y0, x1, y1 = (int(v) for v in box)
            inside = np.zeros(array.shape[:2], bool)
            inside[y0:y1, x0:x1] = True
            colours = [c for c in COLORS if (self._colour_mask(array, c) & inside).sum() >= 4]
            best = max(colours, key=lambda c: (self._colour_mask(array, c) & inside).sum())
            masks.append(self._colour_mask(array, best) & inside)
        return np.stack(masks) if masks else np.zeros((0, *array.shape[:2]), bool)


def visible(masks: np.ndarray) -> np.ndarray:
    return np.stack([masks[0] & ~masks[1], masks[1]]).astype(np.float32)


def toy_folder(root: Path, scenes: list[Scene], captions: list[str] | None = None) -> list[np.ndarray]:
    clips = [render(s) for s in scenes]
    for clip, caption in zip(clips, captions or [None] * len(clips), strict=True):
        if caption:
            clip.caption = caption
    write_dataset_folder(clips, root)
    shutil.rmtree(root / "masks")  # the command must make them
    return [visible(c.masks) for c in clips]


def test_subject_words_from_captions():
    assert subject_words("A person is shaking hands with a person.") == ("person", "person")
    assert subject_words("an orange cross is following a blue circle on a dotted background.") == (
        "orange cross",
        "blue circle",
    )
    with pytest.raises(ValueError, match="--subjects"):
        subject_words("Two people do something.")


def test_masks_match_the_toy_ground_truth_and_the_run_is_resumable(tmp_path):
    scenes = [
        Scene(("triangle", "red"), ("circle", "blue"), "hugging", "dark", seed=1),
        Scene(("square", "yellow"), ("cross", "magenta"), "walking_towards", "striped", seed=2),
    ]
    truth = toy_folder(tmp_path / "data", scenes)
    seen = []
    summary = make_masks(
        MasksConfig(data=[tmp_path / "data"]), ColourKeyDetector(), ColourKeyDetector(), on_clip=seen.append
    )
    # ColourKeyDetector is stateless across detect/segment apart from its frame counter
    assert [r.status for r in summary.reports] == ["done", "done"]
    for index, expected in enumerate(truth):
        written = load_subject_masks(tmp_path / "data" / "masks" / f"{index:04d}", range(16), 32, 32)
        np.testing.assert_array_equal(written.numpy(), expected)
        assert (tmp_path / "data" / "previews" / f"{index:04d}.gif").is_file()
    with Image.open(tmp_path / "data" / "previews" / "0000.gif") as gif:
        assert gif.size == (2 * 32 * 8, 32 * 8)  # frame | overlay, enlarged 8x
    data = json.loads((tmp_path / "data" / "masks_summary.json").read_text())
    assert data["clips_done"] == 2 and data["frames_with_missing_subject"] == 0
    assert data["clips"][0]["subjects"] == ["red triangle", "blue circle"]

    again = make_masks(MasksConfig(data=[tmp_path / "data"]), ColourKeyDetector(), ColourKeyDetector())
    assert [r.status for r in again.reports] == ["skipped", "skipped"]


def test_same_words_make_the_leftmost_subject_red(tmp_path):
    scene = Scene(("person", "green"), ("person", "orange"), "walking_apart", "grey", seed=4)
    truth = toy_folder(tmp_path / "d", [scene], ["A person is walking apart from a person."])[0]
    make_masks(
        MasksConfig(data=[tmp_path / "d"], subjects=("person", "person")),
        ColourKeyDetector(),
        ColourKeyDetector(),
    )
    written = load_subject_masks(tmp_path / "d" / "masks" / "0000", range(16), 32, 32).numpy()
    left = 0 if mask_box(truth[0, 0] > 0)[0] < mask_box(truth[1, 0] > 0)[0] else 1
    np.testing.assert_array_equal(written[0], truth[left])
    np.testing.assert_array_equal(written[1], truth[1 - left])


def test_a_clip_with_a_subject_missing_too_often_is_named_and_gets_no_masks(tmp_path):
    scenes = [
        Scene(("triangle", "red"), ("circle", "blue"), "hugging", "dark", seed=1),
        Scene(("square", "yellow"), ("cross", "magenta"), "walking_towards", "dark", seed=2),
    ]
    toy_folder(tmp_path / "data", scenes)
    # "blue circle" vanishes in 5 of 16 frames of every clip; only clip 0 has a blue circle.
    detector = ColourKeyDetector(hide={("blue circle", f) for f in (2, 3, 4, 5, 6)})
    with pytest.raises(MaskingError) as info:
        make_masks(MasksConfig(data=[tmp_path / "data"]), detector, ColourKeyDetector())
    message = str(info.value)
    assert "1 of 2 clips got no masks" in message
    assert "0000: subject 2 ('blue circle') not found in 5 of 16 frames (2, 3, 4, 5, 6)" in message
    assert not (tmp_path / "data" / "masks" / "0000").exists()  # nothing half-written, nothing black
    assert len(list((tmp_path / "data" / "masks" / "0001").glob("*.png"))) == 16
    # with a looser rule the same clip is written, its missing frames filled and reported
    summary = make_masks(
        MasksConfig(data=[tmp_path / "data"], max_missing_fraction=0.5),
        ColourKeyDetector(hide={("blue circle", f) for f in (2, 3, 4, 5, 6)}),
        ColourKeyDetector(),
    )
    assert [r.status for r in summary.reports] == ["done", "skipped"]
    assert summary.reports[0].missing_frames == [[], [2, 3, 4, 5, 6]]
    # a later run skips both clips but its summary keeps what the first runs found
    again = make_masks(MasksConfig(data=[tmp_path / "data"]), ColourKeyDetector(), ColourKeyDetector())
    assert [r.status for r in again.reports] == ["skipped", "skipped"]
    assert again.frames_with_missing_subject == 5
    assert (
        json.loads((tmp_path / "data" / "masks_summary.json").read_text())["frames_with_missing_subject"] == 5
    )
    written = load_subject_masks(tmp_path / "data" / "masks" / "0000", range(16), 32, 32).numpy()
    assert written.reshape(2, 16, -1).sum(axis=2).min() > 0  # no frame without a subject
