"""Grounding DINO + SAM plumbing on tiny random checkpoints (shapes, formats, error paths; the weights
are random, so nothing here is about mask quality)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dreamrelation.cli import app
from dreamrelation.data import load_subject_masks
from dreamrelation.errors import InputError
from dreamrelation.prepare.segmenters import GroundingDinoDetector, SamSegmenter, phrase_spans
from dreamrelation.testing.segmenters import save_tiny_grounding_dino, save_tiny_sam
from dreamrelation.toyworld.world import Scene, render, write_dataset_folder


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine two spinning OpenMP
    threads made each Grounding DINO call ~30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return save_tiny_grounding_dino(root / "gdino"), save_tiny_sam(root / "sam")


@pytest.fixture
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))


def test_detector_boxes_phrases_and_scores_follow_the_model_outputs(tiny_models, image):
    detector = GroundingDinoDetector.from_pretrained(str(tiny_models[0]), "cpu", box_threshold=0.0, top_k=5)
    detections = detector.detect(image, ["red circle", "Dog."])
    assert 1 <= len(detections) <= 5
    scores = [d.score for d in detections]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert {d.phrase for d in detections} <= {0, 1}
    for d in detections:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= 60 and 0 <= y0 < y1 <= 40

    # independent recomputation of the best box from the raw model outputs
    inputs = detector.processor(images=image, text="red circle. dog.", return_tensors="pt")
    with torch.no_grad():
        out = detector.model(**inputs)
    assert inputs["input_ids"][0].tolist()[:6] == [2] + detector.processor.tokenizer.convert_tokens_to_ids(
        ["red", "circle", ".", "dog", "."]
    )
    probs = out.logits[0].sigmoid()
    per_phrase = torch.stack([probs[:, [1, 2]].max(1).values, probs[:, [4]].max(1).values], 1)
    best = int(per_phrase.max(1).values.argmax())
    cx, cy, w, h = out.pred_boxes[0, best].tolist()
    expected = [
        max(0, (cx - w / 2) * 60),
        max(0, (cy - h / 2) * 40),
        min(60, (cx + w / 2) * 60),
        min(40, (cy + h / 2) * 40),
    ]
    np.testing.assert_allclose(detections[0].box, expected, rtol=1e-4, atol=1e-3)
    assert detections[0].phrase == int(per_phrase[best].argmax())
    assert detections[0].score == pytest.approx(float(per_phrase[best].max()), abs=1e-6)

    high = GroundingDinoDetector.from_pretrained(str(tiny_models[0]), box_threshold=1.0)
    assert high.detect(image, ["dog"]) == []
    with pytest.raises(ValueError, match="non-empty subject phrase"):
        detector.detect(image, [" "])


def test_phrase_spans_locate_each_phrase_after_cls(tiny_models):
    detector = GroundingDinoDetector.from_pretrained(str(tiny_models[0]))
    tokenizer = detector.processor.tokenizer
    ids = tokenizer("a dog. a red cat.")["input_ids"]
    assert phrase_spans(tokenizer, ["a dog", "a red cat"], ids) == [[1, 2], [4, 5, 6]]
    with pytest.raises(ValueError, match="could not locate"):
        phrase_spans(tokenizer, ["a dog", "a red cat"], ids[:1] + ids[2:])


def test_segmenter_returns_one_mask_per_box_at_image_size(tiny_models, image):
    sam = SamSegmenter.from_pretrained(str(tiny_models[1]), "cpu")
    masks = sam.segment(image, [(1, 2, 30, 20), (10, 5, 50, 35), (0, 0, 60, 40)])
    assert masks.shape == (3, 40, 60) and masks.dtype == bool
    assert sam.segment(image, []).shape == (0, 40, 60)


def test_loading_errors_name_the_source(tiny_models, tmp_path):
    with pytest.raises(InputError, match="detector folder does not exist"):
        GroundingDinoDetector.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="is a 'sam' checkpoint, but the detector must be 'grounding-dino'"):
        GroundingDinoDetector.from_pretrained(str(tiny_models[1]))  # a SAM folder
    with pytest.raises(InputError, match="cannot load the segmenter"):
        SamSegmenter.from_pretrained(str(tmp_path))  # an empty folder
    with pytest.raises(InputError, match="hf download"):
        SamSegmenter.from_pretrained("nobody/no-such-sam")  # offline: not in the cache


def test_masks_command_runs_grounding_dino_and_sam_end_to_end(tiny_models, tmp_path):
    clip = render(Scene(("person", "red"), ("person", "blue"), "shaking_hands", "dark", seed=0, frames=4))
    write_dataset_folder([clip], tmp_path / "data")
    (tmp_path / "data" / "0000.txt").write_text("A person is shaking hands with a person.\n")
    shutil.rmtree(tmp_path / "data" / "masks")
    args = [
        "masks",
        "--data",
        str(tmp_path / "data"),
        "--detector",
        str(tiny_models[0]),
        "--segmenter",
        str(tiny_models[1]),
        "--device",
        "cpu",
        "--set",
        "box_threshold=0",
        "--set",
        "min_overlap=0",
    ]
    # no box can score above 1: the clip fails, by name, and nothing is written
    none = CliRunner().invoke(app, [*args, "--set", "box_threshold=1"])
    assert none.exit_code == 2
    assert "0000: no frame shows both subjects ('person' and 'person')" in " ".join(none.output.split())
    assert not (tmp_path / "data" / "masks").exists() or not any((tmp_path / "data" / "masks").iterdir())
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "done 0000: 4 frames" in done.output and "clips done" in done.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "skipped 0000" in again.output
    masks = load_subject_masks(tmp_path / "data" / "masks" / "0000", range(4), 32, 32)
    assert masks.shape == (2, 4, 32, 32)
    assert (masks.flatten(2).sum(2) > 0).all()
    assert (tmp_path / "data" / "previews" / "0000.gif").is_file()
