"""`generate --prompts` and `evaluate` end to end on the command line: the tiny Mochi renders a
prompt set, then a tiny CLIP, a judge on 127.0.0.1 and a tiny VideoMAE score it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dreamrelation.cli import app
from dreamrelation.data import write_video
from dreamrelation.evaluation import frechet_distance
from dreamrelation.evaluation.clip import ClipScorer
from dreamrelation.evaluation.evaluate import read_frames
from dreamrelation.evaluation.fvd import VideoMAEFeatures
from dreamrelation.testing.evaluation import write_tiny_clip, write_tiny_videomae

TINY = ["--backbone", "mochi", "--model", "tiny", "--dtype", "float32"]
GEOMETRY = ["--steps", "2", "--num-frames", "7", "--height", "16", "--width", "16"]


def test_generate_prompt_set_writes_a_manifest_and_resumes(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        {"id": "a", "prompt": "A dog is hugging a cat.", "seed": 3, "relation": "hugging"},
        {"id": "b", "prompt": "A dog is hugging a cat.", "seed": 4, "relation": "hugging"},
        {"id": "c", "prompt": "A fox is kicking a frog.", "seed": 5, "relation": "kicking"},
    ]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "videos"
    runner = CliRunner()
    args = ["generate", "--prompts", str(prompts), "--output", str(out), *TINY, *GEOMETRY]
    r = runner.invoke(app, [*args, "--relations", "hugging"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [v["video"] for v in manifest["videos"]] == ["a.mp4", "b.mp4"]
    assert manifest["videos"][0] == {
        "video": "a.mp4",
        "id": "a",
        "prompt": "A dog is hugging a cat.",
        "seed": 3,
        "relation": "hugging",
    }
    assert manifest["settings"]["num_inference_steps"] == 2 and manifest["settings"]["lora"] is None
    a, b = read_frames(out / "a.mp4"), read_frames(out / "b.mp4")
    assert a.shape == (7, 16, 16, 3) and np.abs(a.astype(int) - b).mean() > 5  # own seed per prompt

    before = (out / "a.mp4").stat().st_mtime_ns
    r = runner.invoke(app, args)  # all relations now: a, b are kept, c is added
    assert r.exit_code == 0, r.output
    assert "rendered 1, 2 already there" in r.output.replace("\n", " ")
    assert (out / "a.mp4").stat().st_mtime_ns == before and (out / "c.mp4").is_file()

    r = runner.invoke(app, [*args[:-6], "--steps", "3", *GEOMETRY[2:]])
    assert r.exit_code == 2 and "num_inference_steps" in r.output and "other settings" in r.output


def _write_folder(root: Path, n: int, seed: int, manifest: bool = True) -> Path:
    """Random-ish videos (smoothly moving noise) with a manifest over two relations."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    entries = []
    for i in range(n):
        base = rng.integers(0, 255, (24, 28, 3)).astype(float)
        frames = np.stack([np.roll(base, shift=f, axis=1) for f in range(9)]).astype(np.uint8)
        write_video(frames, root / f"v{i}.mp4", crf=0)
        relation = "shaking_hands" if i % 2 == 0 else "hugging"
        entries.append(
            {
                "video": f"v{i}.mp4",
                "prompt": f"Prompt number {i}.",
                "seed": i,
                "relation": relation,
                "subject1": "a dog",
                "subject2": "a cat",
            }
        )
    if manifest:
        (root / "manifest.json").write_text(json.dumps({"videos": entries}))
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"clip": write_tiny_clip(root / "clip"), "videomae": write_tiny_videomae(root / "videomae")}


def test_evaluate_scores_judges_and_measures_fvd(endpoint, models, tmp_path: Path) -> None:
    videos = _write_folder(tmp_path / "gen", 6, seed=0)
    reference = _write_folder(tmp_path / "ref", 5, seed=1, manifest=False)
    questions: list[str] = []

    def respond(question: str) -> str:  # the judge sees shaking hands in every video, hugging in none
        questions.append(question)
        return "Yes." if "shaking hands" in question else "No, they are not hugging."

    server = endpoint([], respond)
    args = [
        "evaluate",
        str(videos),
        "--reference",
        str(reference),
        "--judge-url",
        server.url,
        "--judge-model",
        "test-vlm",
        "--set",
        f"judge.cache={tmp_path / 'cache'}",
        "--set",
        "judge.num_frames=3",
        "--set",
        f"clip_model={models['clip']}",
        "--fvd",
        "videomae",
        "--set",
        f"fvd.videomae_model={models['videomae']}",
        "--device",
        "cpu",
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert len(questions) == 6 and "Does the video show that a dog is hugging a cat?" in questions[1]
    results = json.loads((videos / "evaluation" / "results.json").read_text())
    overall = results["overall"]
    assert overall["relation_accuracy"] == pytest.approx(0.5) and overall["n_unparsed"] == 0
    assert results["per_relation"]["shaking_hands"]["relation_accuracy"] == 1.0
    assert results["per_relation"]["hugging"]["relation_accuracy"] == 0.0

    clip = ClipScorer(str(models["clip"]), device="cpu")
    scores = [clip.score(read_frames(videos / f"v{i}.mp4"), f"Prompt number {i}.") for i in range(6)]
    for row, score in zip(results["per_video"], scores, strict=True):
        assert row["clip_t"] == pytest.approx(score["clip_t"], abs=1e-6)
        assert row["temporal_consistency"] == pytest.approx(score["temporal_consistency"], abs=1e-6)
    assert overall["clip_t"] == pytest.approx(np.mean([s["clip_t"] for s in scores]), abs=1e-6)

    features = VideoMAEFeatures(str(models["videomae"]), device="cpu")
    generated = np.stack([features(read_frames(videos / f"v{i}.mp4")) for i in range(6)])
    real = np.stack([features(read_frames(reference / f"v{i}.mp4")) for i in range(5)])
    assert overall["fvd"] == pytest.approx(frechet_distance(generated, real), rel=1e-4)
    assert overall["n_reference"] == 5

    with open(videos / "evaluation" / "summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert [row["scope"] for row in summary] == ["all", "hugging", "shaking_hands"]
    table = r.output[: r.output.index("wrote")]
    assert max(len(line) for line in table.splitlines()) <= 80 and "FVD" in table

    # a rerun asks the judge nothing
    r = CliRunner().invoke(
        app, [*args, "--metrics", "relation_accuracy", "--output", str(tmp_path / "again")]
    )
    assert r.exit_code == 0, r.output
    assert len(questions) == 6 and len(server.requests) == 6


def test_evaluate_errors_name_the_file_or_the_endpoint(models, tmp_path: Path) -> None:
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["evaluate", str(empty), "--metrics", "clip"])
    assert r.exit_code == 2 and "manifest.json" in r.output and "generate --prompts" in r.output

    videos = _write_folder(tmp_path / "gen", 2, seed=0)
    (videos / "v1.mp4").write_bytes(b"not a video")
    r = runner.invoke(
        app, ["evaluate", str(videos), "--metrics", "clip", "--set", f"clip_model={models['clip']}"]
    )
    assert r.exit_code == 2 and "v1.mp4" in r.output.replace("\n", "")

    videos = _write_folder(tmp_path / "gen2", 2, seed=0)
    r = runner.invoke(app, ["evaluate", str(videos), "--metrics", "fvd", "--fvd", "videomae"])
    assert r.exit_code == 2 and "--reference" in r.output

    # judge on a port where nothing listens: the message names the URL and the key variable
    config = tmp_path / "eval.yaml"
    config.write_text("judge: {max_retries: 0, timeout: 2}\n")
    r = runner.invoke(
        app,
        [
            "evaluate",
            str(videos),
            "--config",
            str(config),
            "--metrics",
            "relation_accuracy",
            "--judge-url",
            "http://127.0.0.1:9/v1",
            "--judge-key-env",
            "SOME_KEY_VAR",
            "--set",
            f"judge.cache={tmp_path / 'cache'}",
        ],
    )
    output = r.output.replace("\n", "")
    assert (
        r.exit_code == 2 and "http://127.0.0.1:9/v1/chat/completions" in output and "SOME_KEY_VAR" in output
    )


def test_fvd_on_videos_shorter_than_the_i3d_clip_names_the_video_and_the_setting(tmp_path: Path) -> None:
    from dreamrelation.testing.evaluation import write_random_i3d

    videos = _write_folder(tmp_path / "gen", 2, seed=0)  # 9 frames each; the I3D protocol takes 16
    reference = _write_folder(tmp_path / "ref", 2, seed=1, manifest=False)
    weights = write_random_i3d(tmp_path / "i3d.safetensors")
    args = ["evaluate", str(videos), "--metrics", "fvd", "--reference", str(reference)]
    args += ["--i3d-weights", str(weights), "--device", "cpu"]
    r = CliRunner().invoke(app, args)
    output = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert "v0.mp4: has 9 frames, but FVD (i3d-logits) takes 16" in output and "fvd.num_frames" in output


def test_generate_takes_prompts_or_a_prompt_file_not_both(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app, ["generate", "--prompt", "a cat", "--prompts", "paper", "--output", str(tmp_path), *TINY]
    )
    assert r.exit_code == 2 and "not both" in r.output
    r = CliRunner().invoke(
        app, ["generate", "--prompts", "paper", "--relations", "A999", "--output", str(tmp_path)]
    )
    assert r.exit_code == 2 and "unknown relation" in r.output
