"""`dreamrelation caption`: proposals from a local VLM of the judge's family (a tiny random LLaVA built
in-process and loaded through ``from_pretrained``, as a hub checkpoint is), in the relation's form."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dreamrelation.cli import app
from dreamrelation.errors import InputError
from dreamrelation.prepare.captions import PROPOSALS_FILE, folder_relation, subject_phrase, write_caption
from dreamrelation.testing.evaluation import write_tiny_vlm
from dreamrelation.toyworld.presets.comparison import write_exemplar_folders
from dreamrelation.toyworld.presets.experiment import ExperimentConfig


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    """Three toy clips of walking towards; the second has lost its caption."""
    write_exemplar_folders(
        ExperimentConfig(relation="walking_towards", exemplars=3), ["walking_towards"], [0], tmp_path
    )
    folder = tmp_path / "data" / "walking_towards" / "seed0"
    (folder / "walking_towards_001.txt").unlink()
    return folder


def test_a_reply_becomes_a_subject_phrase() -> None:
    assert subject_phrase("dog") == "a dog"
    assert subject_phrase("Answer: orange robot.\nmore") == "an orange robot"
    assert subject_phrase("'The man in a red shirt'") == "the man in a red shirt"
    assert subject_phrase("a very long answer that goes on and on") == "a very long answer that goes"
    assert subject_phrase(" ...  ") == ""


def test_the_relation_comes_from_the_option_relation_txt_or_the_folder_name(clips: Path) -> None:
    assert folder_relation(clips, "hugging").name == "hugging"
    with pytest.raises(
        InputError, match="names no known relation.*Fix: write the relation's name in relation.txt"
    ):
        folder_relation(clips)  # "seed0"
    (clips / "relation.txt").write_text("walking_towards\n")
    assert folder_relation(clips).name == "walking_towards"


def test_caption_command_proposes_captions_in_the_relation_form(clips: Path, tmp_path: Path) -> None:
    model = write_tiny_vlm(tmp_path / "vlm")
    args = ["caption", str(clips), "--model", str(model), "--relation", "walking_towards", "--frames", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    proposals = json.loads((clips / PROPOSALS_FILE).read_text())
    assert proposals["relation"] == "walking_towards"
    status = {c["name"]: c["status"] for c in proposals["clips"]}
    assert status == {
        "walking_towards_000": "captioned",
        "walking_towards_001": "proposed",
        "walking_towards_002": "captioned",
    }
    proposed = next(c for c in proposals["clips"] if c["status"] == "proposed")
    # a random model's words, but in the project's form, with both raw replies kept for the person to judge
    assert re.fullmatch(r"An? .+ and an? .+ are walking towards each other\.", proposed["caption"])
    assert all(proposed["replies"])
    assert not (clips / "walking_towards_001.txt").exists()  # a proposal until confirmed
    result = CliRunner().invoke(app, [*args, "--accept"])
    assert result.exit_code == 0, result.output
    assert (clips / "walking_towards_001.txt").read_text() == proposed["caption"] + "\n"
    before = (clips / "walking_towards_000.txt").read_text()
    assert "white person" in before  # an existing caption is never overwritten


def test_a_model_that_is_not_there_offline_is_one_line_naming_it(clips: Path) -> None:
    result = CliRunner().invoke(
        app, ["caption", str(clips), "--model", "nobody/no-such-vlm", "--relation", "hugging"]
    )
    assert result.exit_code == 2
    assert "nobody/no-such-vlm" in result.output and "could not be loaded" in result.output


def test_write_caption_refuses_an_empty_caption(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="clip.txt: the caption is empty"):
        write_caption(tmp_path, "clip", "   ")
    assert write_caption(tmp_path, "clip", "A dog  is hugging\ta cat.") == tmp_path / "clip.txt"
    assert (tmp_path / "clip.txt").read_text() == "A dog is hugging a cat.\n"
    assert write_caption(tmp_path, "clip", "Other.", overwrite=False) is None
