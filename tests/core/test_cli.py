"""The command line end to end on the tiny Mochi: cache -> train -> generate."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from dreamrelation.cli import app

TINY = ["--backbone", "mochi", "--model", "tiny", "--dtype", "float32"]


def test_help_lists_every_stage() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("cache", "train", "generate", "analyze"):
        assert command in result.output


def test_cache_train_generate(make_dataset, tmp_path: Path) -> None:
    runner = CliRunner()
    data = make_dataset()
    r = runner.invoke(
        app,
        [
            "cache",
            "--data",
            str(data),
            "--output",
            str(tmp_path / "cache"),
            *TINY,
            "--num-frames",
            "13",
            "--height",
            "32",
            "--width",
            "32",
        ],
    )
    assert r.exit_code == 0, r.output
    config = tmp_path / "train.yaml"
    config.write_text("lora: {rank: 4, alpha: 4}\nwarmup_steps: 0\ncheckpoint_every: 2\n")
    r = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(config),
            "--cache",
            str(tmp_path / "cache"),
            "--output",
            str(tmp_path / "run"),
            *TINY,
            "--max-steps",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    lora = tmp_path / "run" / "relation_lora.safetensors"
    assert lora.is_file()
    r = runner.invoke(
        app,
        [
            "generate",
            "--lora",
            str(lora),
            "--prompt",
            "a cat is shaking hands with a dog.",
            "--output",
            str(tmp_path / "out"),
            *TINY,
            "--steps",
            "2",
            "--num-frames",
            "7",
            "--height",
            "16",
            "--width",
            "16",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (
        len(list((tmp_path / "out").glob("*.mp4"))) == 1 and len(list((tmp_path / "out").glob("*.gif"))) == 1
    )


def test_bad_config_key_fails_before_work(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("learning_rte: 0.1\n")
    r = CliRunner().invoke(app, ["train", "--config", str(config), "--cache", "x", "--output", "y"])
    assert r.exit_code == 2
    assert "learning_rte" in r.output


def test_missing_caption_exits_with_a_message(make_dataset, tmp_path: Path) -> None:
    data = make_dataset()
    (data / "clip0.txt").unlink()
    r = CliRunner().invoke(
        app,
        [
            "cache",
            "--data",
            str(data),
            "--output",
            str(tmp_path / "c"),
            *TINY,
            "--num-frames",
            "13",
            "--height",
            "32",
            "--width",
            "32",
        ],
    )
    assert r.exit_code == 2
    assert "clip0.txt" in r.output
