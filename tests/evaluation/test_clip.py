"""CLIP-T and temporal consistency through a tiny random CLIP loaded by from_pretrained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dreamrelation.errors import InputError
from dreamrelation.evaluation.clip import ClipScorer
from dreamrelation.testing.evaluation import write_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_scores_equal_a_hand_computation_on_the_model_towers(tiny_clip: Path) -> None:
    scorer = ClipScorer(str(tiny_clip), device="cpu", batch_size=2)  # batches of 2 over 5 frames
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 40, 56, 3), dtype=np.uint8)
    prompt = "A dog is shaking hands with a cat."
    got = scorer.score(frames, prompt)

    model, processor = scorer.model, scorer.processor
    with torch.no_grad():
        pixels = processor(images=list(frames), return_tensors="pt")["pixel_values"]
        assert pixels.shape == (5, 3, 32, 32)  # resized + centre-cropped by the processor
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        tokens = processor(text=[prompt], return_tensors="pt")
        text = model.text_projection(model.text_model(**tokens).pooler_output)[0]
    image = torch.nn.functional.normalize(image, dim=-1)
    text = torch.nn.functional.normalize(text, dim=-1)
    assert got["clip_t"] == pytest.approx(float((image @ text).mean()), abs=1e-5)
    assert got["temporal_consistency"] == pytest.approx(
        float((image[:-1] * image[1:]).sum(-1).mean()), abs=1e-5
    )


def test_a_still_video_is_perfectly_consistent(tiny_clip: Path) -> None:
    scorer = ClipScorer(str(tiny_clip), device="cpu")
    frame = np.random.default_rng(1).integers(0, 255, (1, 32, 32, 3), dtype=np.uint8)
    result = scorer.score(np.repeat(frame, 4, axis=0), "a cat")
    assert result["temporal_consistency"] == pytest.approx(1.0, abs=1e-5)
    assert "temporal_consistency" not in scorer.score(frame, "a cat")  # one frame: undefined, not 0


def test_a_missing_checkpoint_is_an_input_error_naming_the_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope: CLIP processor folder does not exist"):
        ClipScorer(str(tmp_path / "nope"), device="cpu")


def test_a_checkpoint_of_another_architecture_is_refused_not_randomly_filled(tmp_path: Path) -> None:
    from dreamrelation.testing.evaluation import write_tiny_vlm

    # CLIPModel.from_pretrained loads a LLaVA folder (its vision tower is a CLIP) and fills the
    # text tower and projections at random; the scorer must not turn that into numbers
    folder = write_tiny_vlm(tmp_path / "llava")
    with pytest.raises(
        InputError, match=r"llava: is not a complete CLIP model checkpoint: \d+ weights missing"
    ):
        ClipScorer(str(folder), device="cpu")
