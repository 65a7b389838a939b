"""Loading a model a user named: a missing folder, an undownloaded hub id and a checkpoint with
missing weights each give an InputError naming the folder or id and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from dreamrelation.errors import InputError
from dreamrelation.evaluation.fvd import VideoMAEFeatures
from dreamrelation.pretrained import load_pretrained, require_all_weights, resolve_source
from dreamrelation.testing.evaluation import write_tiny_videomae


def test_a_hub_id_is_passed_through_and_a_path_must_be_a_folder(tmp_path: Path) -> None:
    assert resolve_source("detector", "IDEA-Research/grounding-dino-tiny") == (
        "IDEA-Research/grounding-dino-tiny",
        None,
    )
    assert resolve_source("detector", str(tmp_path)) == (str(tmp_path), tmp_path)
    with pytest.raises(InputError, match="missing: detector folder does not exist"):
        resolve_source("detector", str(tmp_path / "missing"))


def test_a_load_failure_says_how_to_get_the_model() -> None:
    def offline(source: str) -> None:
        raise OSError(f"We couldn't connect to 'https://huggingface.co' to load {source}")

    with pytest.raises(
        InputError, match=r"org/model: cannot load the CLIP model \(OSError: We couldn't"
    ) as info:
        load_pretrained("CLIP model", "org/model", offline, "openai/clip-vit-base-patch32")
    assert "hf download org/model" in info.value.fix and "openai/clip-vit-base-patch32" in info.value.fix


def test_missing_weights_are_refused_and_a_complete_checkpoint_passes() -> None:
    require_all_weights("SAM", "facebook/sam-vit-base", {"missing_keys": []}, "facebook/sam-vit-base")
    with pytest.raises(
        InputError, match=r"is not a complete SAM checkpoint: 2 weights missing \(a.weight, b.bias"
    ):
        require_all_weights(
            "SAM", "some/sam", {"missing_keys": ["b.bias", "a.weight"]}, "facebook/sam-vit-base"
        )


def test_a_partial_videomae_download_is_refused_not_randomly_filled(tmp_path: Path) -> None:
    folder = write_tiny_videomae(tmp_path / "videomae")
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    dropped = sorted(tensors)[-1]
    del tensors[dropped]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(InputError, match=r"videomae: is not a complete VideoMAE model checkpoint: 1 weights"):
        VideoMAEFeatures(str(folder), device="cpu")
