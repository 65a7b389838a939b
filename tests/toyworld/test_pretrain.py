"""Toy pretraining on any device: rendering workers, the bf16 policy, the time budget, validation,
checkpoints and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dreamrelation.backbones import load_backbone
from dreamrelation.cli import app
from dreamrelation.devices import native_bf16, use_bf16_autocast
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.toyworld import run_state as checkpoint_module
from dreamrelation.toyworld.backbone import ToyBackbone, toy_tokenizer, toy_vocabulary
from dreamrelation.toyworld.pretrain import (
    CONTEXT_NOISE_WORDS,
    VALIDATION_SIGMAS,
    PretrainConfig,
    batch_loader,
    denoising_errors,
    pretrain,
    training_clips,
)
from dreamrelation.toyworld.run_state import Schedule, check_resume_settings
from dreamrelation.toyworld.world import BACKGROUNDS, COLORS, GENERIC_MOTIONS, RELATIONS, SHAPES

pytestmark = pytest.mark.filterwarnings("ignore:In CPU autocast")


def test_rendering_workers_give_the_same_batches_as_the_loop() -> None:
    config = PretrainConfig(output=Path("unused"), batch_size=2, steps=3, seed=4, workers=2)
    for step, (videos, captions) in enumerate(batch_loader(config)):
        expected, expected_captions = training_clips(step, config)
        assert np.array_equal(videos.numpy(), expected) and captions == expected_captions
    # a resumed run's loader starts at its step
    resumed = list(batch_loader(config, first_step=1))
    assert len(resumed) == 2 and resumed[0][1] == training_clips(1, config)[1]


def test_context_noise_words_are_known_tokens_that_no_caption_uses_and_name_nothing() -> None:
    tokenizer = toy_tokenizer()
    ids = [tokenizer(word, add_special_tokens=False).input_ids for word in CONTEXT_NOISE_WORDS]
    assert all(len(i) == 1 and i[0] != tokenizer.unk_token_id for i in ids)
    named = set(toy_vocabulary()) | set(COLORS) | set(SHAPES) | set(BACKGROUNDS)
    named |= {w for t in (*RELATIONS, *GENERIC_MOTIONS) for w in t.split("_")}
    assert named.isdisjoint(CONTEXT_NOISE_WORDS)


def test_caption_context_noise_changes_only_captions_and_keeps_subjects_and_background() -> None:
    plain = PretrainConfig(output=Path("unused"), batch_size=16, seed=2)
    noisy = plain.model_copy(update={"caption_context_noise": 0.5})
    videos, captions = training_clips(5, plain)
    noisy_videos, noisy_captions = training_clips(5, noisy)
    assert np.array_equal(videos, noisy_videos)
    changed = [(c, n) for c, n in zip(captions, noisy_captions, strict=True) if c != n]
    subject_and_background_words = {"a", "an", "on", "background.", *COLORS, *SHAPES}
    subject_and_background_words |= {w for b in BACKGROUNDS.values() for w in b.split()}
    assert 3 <= len(changed) <= 13  # about half of 16
    for caption, noisy_caption in changed:
        # "a red circle is moving while a blue square stands still on a dark background." ->
        # "dog a red circle of cat a blue square at on a dark background."
        words = noisy_caption.split()
        assert words[-4:] == caption.split()[-4:]  # "on a dark background."
        kept = [w for w in words if w not in CONTEXT_NOISE_WORDS]
        assert kept == [w for w in caption.split() if w in subject_and_background_words]
        assert len(kept) < len(words)  # at least one word between the subjects


def test_a_checkpoint_from_before_a_setting_existed_resumes_as_its_default(tmp_path: Path) -> None:
    config = PretrainConfig(output=tmp_path, batch_size=2)
    older = json.loads(config.model_dump_json())
    del older["caption_context_noise"]
    (tmp_path / "state.json").write_text(json.dumps({"config": older}))
    assert check_resume_settings(tmp_path, config)
    with pytest.raises(ConfigError, match=r"other settings \(caption_context_noise\)"):
        check_resume_settings(tmp_path, config.model_copy(update={"caption_context_noise": 0.3}))


def test_bf16_autocast_only_where_asked_or_native() -> None:
    cpu = torch.device("cpu")
    assert use_bf16_autocast("bf16", cpu) and not use_bf16_autocast("off", cpu)
    assert use_bf16_autocast("auto", cpu) == native_bf16(cpu)
    with pytest.raises(ValueError, match="autocast"):
        PretrainConfig(output=Path("unused"), autocast="fp8")


def test_unknown_size_or_relation_motion_is_refused_before_any_work() -> None:
    with pytest.raises(ValueError, match="patch1_4x192"):
        PretrainConfig(output=Path("unused"), size="huge")
    with pytest.raises(ValueError, match="generic motions only"):
        PretrainConfig(output=Path("unused"), motions=("hugging",))


def test_time_budget_sets_the_schedule_length(tmp_path: Path) -> None:
    record = pretrain(
        tmp_path / "budget",
        steps=100_000,
        size="tiny",
        batch_size=2,
        time_budget_s=4.0,
        warmup_steps=2,
        show_progress=False,
        threads=1,
    )
    # stopped by the budget, long after the throughput probe (steps 10..60)
    assert 60 < record["steps"] < 100_000
    assert record["wall_time_s"] < 12
    assert record["clips_seen"] == 2 * record["steps"]
    assert record["device"] == "cpu" and record["machine"]


def test_denoising_errors_grow_with_the_noise_level() -> None:
    errors = denoising_errors(ToyBackbone.tiny(), n_clips=4)
    assert list(errors) == [f"{s:g}" for s in VALIDATION_SIGMAS]
    values = list(errors.values())
    assert all(np.isfinite(values)) and values == sorted(values)


RESUME = {
    "size": "tiny",
    "batch_size": 2,
    "warmup_steps": 1,
    "caption_dropout": 0.5,  # captions are dropped in the resumed steps too (their RNG is restored)
    "save_dtype": "float32",
    "threads": 1,
    "device": "cpu",
    "seed": 3,
    "show_progress": False,
}


def _checkpoint_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "checkpoint" / "state.safetensors"))


def test_a_stopped_and_resumed_run_ends_on_the_weights_of_a_straight_run(tmp_path: Path) -> None:
    straight = pretrain(tmp_path / "straight", steps=4, **RESUME)
    assert straight["finished"] and straight["steps"] == 4

    partial = pretrain(tmp_path / "staged", steps=4, run_steps=2, **RESUME)
    assert partial == {"finished": False, "steps": 2, "total_steps": 4, "wall_time_s": partial["wall_time_s"]}
    assert sorted(p.name for p in (tmp_path / "staged").iterdir()) == ["checkpoint"]  # no pipeline yet
    # a changed setting is refused in one line naming it (lr and seed would mix two runs' weights)
    with pytest.raises(ConfigError, match=r"other settings \(learning_rate, seed\)"):
        pretrain(tmp_path / "staged", steps=4, **{**RESUME, "seed": 4}, learning_rate=1e-3)
    resumed = pretrain(tmp_path / "staged", steps=4, **RESUME)  # the same call again: resumes at step 2

    assert resumed["finished"] and resumed["steps"] == 4
    assert [run["from_step"] for run in resumed["runs"]] == [0, 2]  # the lineage, one entry a call
    assert all(run["argv"] and run["machine"] for run in resumed["runs"])
    assert resumed["loss_curve"] == straight["loss_curve"]
    assert resumed["validation_denoising_mse"] == straight["validation_denoising_mse"]
    # the saved (EMA) pipeline, and the raw weights, EMA, optimizer moments and RNG state behind it
    saved = load_backbone("toy", str(tmp_path / "straight")).transformer.state_dict()
    staged = load_backbone("toy", str(tmp_path / "staged")).transformer.state_dict()
    assert saved.keys() == staged.keys() and all(torch.equal(saved[k], staged[k]) for k in saved)
    a, b = _checkpoint_tensors(tmp_path / "straight"), _checkpoint_tensors(tmp_path / "staged")
    assert {k.split(".")[0] for k in a} == {"model", "ema", "optimizer", "extra"}
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    recipe = json.loads((tmp_path / "staged" / "recipe.json").read_text())
    assert recipe["runs"] == resumed["runs"] and recipe["steps"] == 4
    # the same call once more finds the final checkpoint: it only saves the same pipeline again
    again = pretrain(tmp_path / "staged", steps=4, **RESUME)
    assert [run["from_step"] for run in again["runs"]] == [0, 2, 4] and again["steps"] == 4
    again_saved = load_backbone("toy", str(tmp_path / "staged")).transformer.state_dict()
    assert all(torch.equal(again_saved[k], saved[k]) for k in saved)


def test_a_resume_may_end_sooner_and_keeps_the_budgets_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pretrain(tmp_path / "cut", steps=6, run_steps=2, **RESUME)
    cut = pretrain(tmp_path / "cut", steps=3, **RESUME)  # a lower --steps: the decay is re-fitted
    assert cut["finished"] and cut["steps"] == 3
    assert [run["planned_steps"] for run in cut["runs"]] == [6, 3]

    # The time budget: a clock the test drives. 40 s were spent by an earlier call, and steps 15..65
    # of this one take 1 s each: the 200 s budget has 100 s left at step 65, so the run is 165 long.
    now = [1000.0]
    monkeypatch.setattr(checkpoint_module.time, "perf_counter", lambda: now[0])
    schedule = Schedule(10_000, 200.0, first_step=5, elapsed_s=40.0)
    assert schedule.pending and schedule.fixed_total is None and schedule.total == 10_000
    now[0] = 1010.0
    assert not schedule.observe(14) and not schedule.observe(15)
    now[0] = 1060.0
    assert schedule.observe(65) and schedule.total == schedule.fixed_total == 165
    # a resume keeps that length (no new probe), and a lower --steps shortens it
    resumed = Schedule(10_000, 200.0, first_step=80, fixed_total=165, run_steps=50)
    assert not resumed.pending and resumed.total == 165 and resumed.end == 130
    assert Schedule(120, 200.0, first_step=80, fixed_total=165).total == 120


def test_pretrain_refuses_to_replace_a_folder_of_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="choose a new or empty --output"):
        pretrain(tmp_path, steps=1, **RESUME)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    # a folder holding only a killed first checkpoint's temporary is this run's own: it proceeds
    (tmp_path / "notes.txt").unlink()
    (tmp_path / ".checkpoint.tmp-123-0badc0de").mkdir()
    assert pretrain(tmp_path, steps=2, run_steps=1, **RESUME)["steps"] == 1


def test_pretrain_command_stops_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "base"
    args = ["toy", "pretrain", "-o", str(out), "--size", "tiny", "--steps", "2", "--batch-size", "1",
            "--threads", "1", "--device", "cpu", "--eval-per-relation", "0"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--run-steps", "1"])
    assert result.exit_code == 0, result.output
    assert "stopped at step 1 of 2" in result.output and "run the same command again" in result.output
    assert not (out / "model_index.json").exists()
    result = CliRunner().invoke(app, [*args, "--lr", "1e-4"])
    assert result.exit_code == 2 and "other settings (learning_rate)" in result.output
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["steps"] == 2 and [run["from_step"] for run in recipe["runs"]] == [0, 1]
    assert recipe["command"].startswith("dreamrelation toy pretrain")
