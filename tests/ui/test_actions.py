"""The web UI's callbacks (``dreamrelation.ui.actions``) on the toy world's tiny model, without a browser:
each is a call into the library the CLI uses, long work runs in a background job, and bad input ends in
one message naming the file or setting and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dreamrelation.cli import app
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.files import LOCK_FILE
from dreamrelation.ui import actions
from dreamrelation.ui.jobs import JobBoard

pytest.importorskip("pandas")  # only the page needs Gradio; the callbacks need nothing more than the library


def _form(data: Path, output: str, **settings: object) -> actions.TrainForm:
    values = {"max_steps": 4, "warmup_steps": 1, "checkpoint_every": 100, "validation_every": None}
    values.update(settings)
    return actions.TrainForm(data=str(data), output=output, model="tiny", settings=values)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> actions.Workspace:
    return actions.Workspace([tmp_path_factory.mktemp("ui")])


@pytest.fixture(scope="module")
def toy_folder(workspace: actions.Workspace) -> Path:
    return actions.toy_data(workspace, exemplars=3)


@pytest.fixture(scope="module")
def trained(workspace: actions.Workspace, toy_folder: Path) -> Path:
    """A run trained from the page's callbacks (4 steps of the tiny toy model)."""
    board = JobBoard()
    job = actions.start_training(board, workspace, _form(toy_folder, "runs/trained"))
    job.wait(300)
    assert job.state == "done", job.message
    return workspace.path("runs/trained", "run")


def test_paths_outside_the_chosen_folders_are_refused(workspace: actions.Workspace) -> None:
    with pytest.raises(InputError, match="outside the folders this UI may read.*--root"):
        workspace.path("/etc", "data folder")
    with pytest.raises(InputError, match="outside"):
        workspace.path("../..", "data folder")
    with pytest.raises(ConfigError, match="data folder: empty"):
        workspace.path("  ", "data folder")
    assert workspace.path("a/b", "x") == workspace.roots[0] / "a" / "b"


def test_toy_world_folder_opens_with_playable_previews_captions_and_masks(toy_folder: Path) -> None:
    view = actions.open_data(actions.Workspace([toy_folder.parents[3]]), toy_folder)
    assert view.relation == "walking_towards"
    assert [c.status for c in view.clips] == ["captioned"] * 3
    assert all("walking towards each other" in c.caption for c in view.clips)
    for clip in view.clips:
        with av.open(str(clip.preview)) as container:  # what a browser decodes: H.264 in yuv420p
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
            assert stream.codec_context.height >= 128
        assert clip.mask_preview is not None and clip.mask_preview.suffix == ".gif"


def test_a_clip_that_does_not_decode_is_listed_with_the_reason(workspace: actions.Workspace) -> None:
    folder = workspace.roots[0] / "broken"
    folder.mkdir()
    (folder / "good.txt").write_text("A person is hugging a person.\n")
    (folder / "bad.mp4").write_bytes(b"not a video at all")
    (folder / "bad.txt").write_text("A person is hugging a person.\n")
    source = actions.toy_data(workspace, exemplars=3) / "walking_towards_000.mp4"
    (folder / "good.mp4").write_bytes(source.read_bytes())
    clips = {c.name: c for c in actions.open_data(workspace, folder).clips}
    assert clips["good"].status == "captioned" and clips["good"].preview is not None
    assert clips["bad"].status == "failed" and clips["bad"].preview is None
    assert "bad.mp4" in clips["bad"].problem and "Fix:" in clips["bad"].problem


def test_a_folder_without_clips_is_one_message_naming_it(workspace: actions.Workspace) -> None:
    empty = workspace.roots[0] / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"empty: no videos found .*Fix: put the exemplar clips"):
        actions.open_data(workspace, empty)


def test_edited_captions_are_saved_as_the_dataset_format(workspace: actions.Workspace) -> None:
    folder = workspace.roots[0] / "captions"
    folder.mkdir()
    (folder / "a.txt").write_text("old\n")
    written = actions.save_captions(workspace, folder, {"a": "A dog is hugging a cat.", "b": "  "})
    assert written == [folder / "a.txt"]
    assert (folder / "a.txt").read_text() == "A dog is hugging a cat.\n"


def test_the_train_page_defaults_are_the_toy_preset_and_meanings_come_from_the_config() -> None:
    toy = actions.default_settings("toy")
    assert (toy["max_steps"], toy["learning_rate"], toy["lora.rank"]) == (400, 1e-3, 8)
    paper = actions.default_settings("mochi")
    assert (paper["max_steps"], paper["learning_rate"], paper["lora.rank"]) == (2400, 2e-4, 16)
    assert actions.setting_meaning("loss.mask_weight").startswith("λ_m")


def test_a_setting_out_of_range_is_refused_naming_it(workspace: actions.Workspace, toy_folder: Path) -> None:
    with pytest.raises(ConfigError, match="max_steps: Input should be greater than 0"):
        actions.train_configs(workspace, _form(toy_folder, "runs/bad", max_steps=0))
    form = _form(toy_folder, "runs/bad")
    form.extra = "lora.rnak=4"
    with pytest.raises(ConfigError, match="lora.rnak.*lora.rank"):
        actions.train_configs(workspace, form)


def test_training_runs_in_the_background_and_the_cli_resumes_it(
    workspace: actions.Workspace, toy_folder: Path
) -> None:
    board = JobBoard()
    job = actions.start_training(board, workspace, _form(toy_folder, "runs/resume", max_steps=3))
    job.request_stop()  # honoured after the first step, as Ctrl-C is in the CLI
    job.wait(300)
    output = workspace.path("runs/resume", "run")
    assert job.state == "stopped" and "stopped at step 1" in job.message, job.message
    assert (output / "checkpoints").is_dir() and not (output / "relation_lora.safetensors").exists()
    assert "dreamrelation train --config" in job.message
    view = actions.training_view(board, workspace, output)
    assert (view.state, view.step, len(view.losses)) == ("stopped", 1, 1)
    saved = actions.saved_form(workspace, output)  # what a reopened page puts back in its fields
    assert saved["data"] == str(toy_folder) and saved["settings"]["max_steps"] == 3
    assert (saved["backbone"], saved["model"], saved["video.num_frames"]) == ("toy", "tiny", 16)
    # the command line picks the run up from the YAML the page wrote, at step 1
    result = CliRunner().invoke(app, ["train", "--config", str(output / "ui_train.yaml")])
    assert result.exit_code == 0, result.output
    history = json.loads((output / "history.json").read_text())
    assert [r["step"] for r in history] == [1, 2, 3]
    assert (output / "relation_lora.safetensors").is_file()


def test_a_second_run_into_a_busy_folder_is_refused(workspace: actions.Workspace, toy_folder: Path) -> None:
    board = JobBoard()
    job = actions.start_training(board, workspace, _form(toy_folder, "runs/busy", max_steps=50))
    try:
        with pytest.raises(ConfigError, match="still writing to this folder.*choose another output folder"):
            actions.start_training(board, workspace, _form(toy_folder, "runs/busy"))
    finally:
        job.request_stop()
        job.wait(300)
    # a `dreamrelation train` of another process holds the CLI's lock: refused the same way
    # (the lock is an OS lock since issue 25: the other process really holds it, and writes its pid)
    output = workspace.path("runs/busy2", "run")
    output.mkdir(parents=True)
    hold = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o644); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); "
        "print('locked', flush=True); time.sleep(60)"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", hold, str(output / LOCK_FILE)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"another `dreamrelation train` \\(pid {other.pid}\\)"):
            actions.start_training(JobBoard(), workspace, _form(toy_folder, "runs/busy2"))
    finally:
        other.kill()
        other.wait()


def test_a_model_that_is_not_there_offline_fails_the_job_with_one_message(
    workspace: actions.Workspace, toy_folder: Path
) -> None:
    form = _form(toy_folder, "runs/missing")
    form.backbone, form.model, form.num_frames = "mochi", "nobody/no-such-model", 13
    board = JobBoard()
    job = actions.start_training(board, workspace, form)
    job.wait(300)
    assert job.state == "failed"
    assert "nobody/no-such-model" in job.message and "HF_HUB_OFFLINE" in job.message
    # nothing holds the folder afterwards: the same folder can be used again
    assert not (workspace.path("runs/missing", "run") / LOCK_FILE).exists()
    assert board.claim("train", workspace.path("runs/missing", "run")).running


def test_generate_renders_base_and_lora_from_the_same_seed(
    workspace: actions.Workspace, trained: Path
) -> None:
    form = actions.GenerateForm(
        run=str(trained), prompt="a red circle and a blue square are walking towards each other."
    )
    form.model, form.steps = "tiny", 2
    base, with_lora = actions.generate_side_by_side(JobBoard(), workspace, form)
    assert base.parent.name == "base" and with_lora.parent.name == "lora"
    for path in (base, with_lora):
        with av.open(str(path)) as container:
            assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    with pytest.raises(InputError, match="no LoRA file there yet"):
        actions.generate_side_by_side(
            JobBoard(), workspace, actions.GenerateForm(run="runs/none", prompt="x")
        )


# ----- image-to-video on the pages ----------------------------------------------------------------
I2V = "wan22_a14b_i2v"  # image-to-video only; its tiny model takes 5 frames of 16 x 16
PROMPT = "a red circle and a blue square are walking towards each other."


def _photo(path: Path, width: int = 16, height: int = 16) -> Path:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _i2v_form(data: Path, output: str, **settings: object) -> actions.TrainForm:
    form = _form(data, output, learning_rate=0.05, **{"lora.rank": 4, "lora.alpha": 4}, **settings)
    form.backbone, form.first_frame, form.num_frames, form.height, form.width = I2V, True, 5, 16, 16
    return form


@pytest.fixture(scope="module")
def i2v_run(workspace: actions.Workspace, toy_folder: Path) -> Path:
    """A run of the tiny image-to-video-only model trained from the page, from the first frame, with
    validation videos rendered from an uploaded image."""
    form = _i2v_form(toy_folder, "runs/i2v", max_steps=4, validation_every=4)
    form.validation_prompt = PROMPT
    form.validation_image = str(_photo(workspace.roots[0] / "upload.png"))
    job = actions.start_training(JobBoard(), workspace, form)
    job.wait(300)
    assert job.state == "done", job.message
    return workspace.path("runs/i2v", "run")


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_the_backbone_list_is_the_registry_with_the_toy_world_first() -> None:
    from dreamrelation.backbones import BACKBONES

    names = actions.backbone_names()
    assert names[0] == "toy" and len(names) == len(set(names))
    assert set(names) == {"toy", *BACKBONES}


def test_the_pages_offer_an_image_where_the_backbone_has_an_image_to_video_form() -> None:
    text = actions.image_inputs("mochi")
    assert (text.image_to_video, text.image_only) == (False, False) and "text only" in text.note
    assert text.first_frame_box() == {"visible": False, "interactive": True, "value": False}
    assert text.image_field() == {"visible": False, "value": None}  # a hidden image is not sent
    both = actions.image_inputs("wan22_5b")
    assert (both.image_to_video, both.image_only) == (True, False)
    assert both.first_frame_box() == {"visible": True, "interactive": True}  # optional: left as it is
    only = actions.image_inputs(I2V)
    assert (only.image_to_video, only.image_only) == (True, True) and "required" in only.note
    assert only.first_frame_box() == {"visible": True, "interactive": False, "value": True}
    assert only.image_field() == {"visible": True}


def test_the_train_form_maps_first_frame_and_the_validation_image(
    workspace: actions.Workspace, toy_folder: Path, tmp_path: Path
) -> None:
    photo = _photo(workspace.roots[0] / "photo.png")
    form = _i2v_form(toy_folder, "runs/i2v-form", validation_every=2)
    form.validation_prompt, form.validation_image = PROMPT, str(photo)
    _, cfg = actions.train_configs(workspace, form)
    assert cfg.first_frame is True and cfg.validation_image == photo
    assert cfg.validation_prompts == [PROMPT]
    form.settings["validation_every"] = None  # no validation: the image is not used
    assert actions.train_configs(workspace, form)[1].validation_image is None
    form.first_frame = False
    assert actions.train_configs(workspace, form)[1].first_frame is False


def test_image_to_video_mistakes_are_refused_before_anything_is_written(
    workspace: actions.Workspace, toy_folder: Path
) -> None:
    cases = []
    form = _i2v_form(toy_folder, "runs/i2v-bad", validation_every=2)
    form.validation_prompt = PROMPT  # validation on, no image: the preflight's own line
    cases.append((form, ConfigError, "validation_image: wan22_a14b_i2v is image-to-video only"))
    form = _i2v_form(toy_folder, "runs/i2v-bad", validation_every=2)
    form.validation_prompt = PROMPT
    form.validation_image = str(_photo(workspace.roots[0] / "wide.png", width=32))
    cases.append((form, InputError, "is 32x16 .* but the video is 16x16"))
    form = _i2v_form(toy_folder, "runs/i2v-bad")
    form.first_frame = False
    cases.append((form, ConfigError, "first_frame: wan22_a14b_i2v is image-to-video only"))
    form = _form(toy_folder, "runs/i2v-bad")
    form.first_frame = True
    cases.append((form, ConfigError, "first_frame: toy has no image-to-video form"))
    for form, error, message in cases:
        with pytest.raises(error, match=message):
            actions.start_training(JobBoard(), workspace, form)
        assert not workspace.path("runs/i2v-bad", "run").exists()


def test_an_image_to_video_run_keeps_its_validation_image_and_renders_from_it(
    workspace: actions.Workspace, i2v_run: Path
) -> None:
    kept = i2v_run / "validation_image.png"
    assert kept.read_bytes() == (workspace.roots[0] / "upload.png").read_bytes()
    saved = actions.saved_form(workspace, i2v_run)  # the YAML names the copy, not Gradio's upload
    assert saved["first_frame"] is True and saved["validation_image"] == str(kept)
    assert [p.name for p in actions.training_view(JobBoard(), workspace, i2v_run).validation_videos]
    with av.open(str(next((i2v_run / "validation").glob("step-*/*.mp4")))) as container:
        assert container.streams.video[0].frames == 5


def test_generate_renders_both_videos_from_the_image(
    workspace: actions.Workspace, i2v_run: Path, trained: Path
) -> None:
    photo = _photo(workspace.roots[0] / "start.png")
    # 4 steps: with 2, the tiny A14B's low-noise expert (the one 4 training steps reached) barely acts
    form = actions.GenerateForm(run=str(i2v_run), prompt=PROMPT, backbone=I2V, model="tiny", steps=4)
    form.num_frames, form.height, form.width, form.image = 5, 16, 16, str(photo)
    base, with_lora = actions.generate_side_by_side(JobBoard(), workspace, form)
    assert (base.parent.name, with_lora.parent.name) == ("base", "lora")
    base_frames, lora_frames = _frames(base), _frames(with_lora)
    assert base_frames.shape == lora_frames.shape and len(base_frames) == 5
    assert not np.array_equal(base_frames, lora_frames)  # the relation LoRA changes the video
    form.image = ""  # no image on an image-to-video-only backbone: the CLI's one line
    with pytest.raises(ConfigError, match="image: wan22_a14b_i2v is image-to-video only; pass --image"):
        actions.generate_side_by_side(JobBoard(), workspace, form)
    text = actions.GenerateForm(run=str(trained), prompt=PROMPT, model="tiny", steps=2, image=str(photo))
    with pytest.raises(ConfigError, match="image: toy has no image-to-video form"):
        actions.generate_side_by_side(JobBoard(), workspace, text)


def test_compare_opens_benchmark_and_demo_folders(workspace: actions.Workspace) -> None:
    folder = workspace.roots[0] / "bench"
    videos = folder / "runs" / "hugging" / "dreamrelation" / "seed0" / "videos"
    videos.mkdir(parents=True)
    (folder / "benchmark.md").write_text("| method | accuracy |\n| --- | --- |\n| dreamrelation | 0.5 |\n")
    (folder / "benchmark.png").write_bytes(b"png")
    source = actions.toy_data(workspace, exemplars=3) / "walking_towards_000.mp4"
    (videos / "00-a-dog.mp4").write_bytes(source.read_bytes())
    (videos / "01-broken.mp4").write_bytes(b"not a video")
    view = actions.open_results(workspace, folder)
    assert view.kind == "benchmark" and "dreamrelation | 0.5" in view.table
    assert view.plots == [folder / "benchmark.png"]
    assert view.videos == [
        (videos / "previews" / "00-a-dog.mp4", "hugging / dreamrelation / seed0 / 00-a-dog")
    ]
    (folder / "report.html").write_text("<html></html>")
    assert actions.open_results(workspace, folder).kind == "demo"
    with pytest.raises(InputError, match="holds no benchmark.md"):
        actions.open_results(workspace, workspace.roots[0] / "empty")


def test_ui_command_warns_when_opened_to_the_network(tmp_path: Path) -> None:
    from dreamrelation.cli.ui import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = [
        sys.executable,
        "-m",
        "dreamrelation.cli",
        "ui",
        "--root",
        str(tmp_path / "nope"),
        "--host",
        "0.0.0.0",
    ]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "warning: --host 0.0.0.0 opens the UI to the network" in result.stderr
    assert "set a password with --password" in result.stderr
    assert f"--root {tmp_path / 'nope'}: no such folder" in result.stderr


def test_proposed_captions_come_from_the_caption_command(workspace: actions.Workspace) -> None:
    from dreamrelation.testing.evaluation import write_tiny_vlm

    folder = workspace.roots[0] / "uncaptioned"
    folder.mkdir()
    source = actions.toy_data(workspace, exemplars=3)
    (folder / "clip.mp4").write_bytes((source / "walking_towards_000.mp4").read_bytes())
    (folder / "relation.txt").write_text("hugging\n")
    model = write_tiny_vlm(workspace.roots[0] / "vlm")
    assert [c.status for c in actions.open_data(workspace, folder).clips] == ["no caption"]
    (proposal,) = actions.propose(workspace, folder, str(model))
    assert proposal.status == "proposed" and " is hugging " in proposal.caption
    assert (folder / "captions_proposed.json").is_file() and not (folder / "clip.txt").exists()
    actions.save_captions(workspace, folder, {"clip": proposal.caption})
    assert [c.status for c in actions.open_data(workspace, folder).clips] == ["captioned"]


def test_automatic_masks_run_the_masks_command_and_list_failures(workspace: actions.Workspace) -> None:
    from dreamrelation.testing.segmenters import save_tiny_grounding_dino, save_tiny_sam

    folder = workspace.roots[0] / "unmasked"
    folder.mkdir()
    source = actions.toy_data(workspace, exemplars=3)
    for name in ("walking_towards_000", "walking_towards_001"):
        (folder / f"{name}.mp4").write_bytes((source / f"{name}.mp4").read_bytes())
        (folder / f"{name}.txt").write_text("A person and a person are walking towards each other.\n")
    detector = save_tiny_grounding_dino(workspace.roots[0] / "dino")
    segmenter = save_tiny_sam(workspace.roots[0] / "sam")
    summary = actions.run_masks(workspace, folder, str(detector), str(segmenter))
    assert [r.name for r in summary.reports] == ["walking_towards_000", "walking_towards_001"]
    for report in summary.reports:  # random models: whatever they found, each clip is accounted for
        assert report.status in ("done", "failed")
        if report.status == "failed":
            assert report.message.startswith(report.name + ":")
    assert (folder / "masks_summary.json").is_file()
    with pytest.raises(InputError, match="outside the folders"):
        actions.run_masks(workspace, "/etc", str(detector), str(segmenter))
