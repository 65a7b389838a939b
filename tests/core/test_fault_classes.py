"""The second fault probe's defect classes, each on the real failure (issue 25): a real full disk
(a small tmpfs), real concurrent processes, real files. Each fault ends in exit code 2, one line
naming the culprit, no traceback, nothing lost and nothing written outside the output."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from dreamrelation.cli import app

TINY = ["--backbone", "mochi", "--model", "tiny", "--dtype", "float32"]
GEOMETRY = ["--num-frames", "7", "--height", "16", "--width", "16"]


def snapshot(*roots: Path) -> dict[str, str]:
    files = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []
        for path in paths:
            if path.is_file():
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def refused(args: list[str], *culprits: str) -> str:
    """The CLI exits 2 with one error line naming every culprit, and no traceback."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for culprit in culprits:
        assert culprit in errors[0], (culprit, errors[0])
    return errors[0]


def _config(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "train.yaml"
    path.write_text("lora: {rank: 2, alpha: 2}\nwarmup_steps: 0\n" + text)
    return path


def _train(cache: Path, output: Path, *extra: str, config: Path) -> object:
    args = ["train", "--cache", str(cache), "--output", str(output), *TINY, "--config", str(config), *extra]
    return CliRunner().invoke(app, args)


# ----- 1. a full disk, for real ---------------------------------------------------------------
@contextlib.contextmanager
def small_disk(where: Path, size: str = "1m") -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``where`` (root only); a full disk is a full disk."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for a real full disk needs root")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until only about ``leave`` bytes are free."""
    free = shutil.disk_usage(disk).free
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave))


def test_a_real_full_disk_names_the_file_for_cache_train_and_generate(
    make_dataset, mochi_cache: Path, tmp_path: Path
) -> None:
    data = make_dataset(n_videos=1, num_frames=7, size=16)
    before = snapshot(data, mochi_cache)
    with small_disk(tmp_path / "disk") as disk:
        # cache: the first item does not fit (safetensors' own "os error 28")
        fill(disk, 4096)  # one page: the lock file's
        out = disk / "cache"
        refused(["cache", "--data", str(data), "-o", str(out), *TINY, *GEOMETRY],
                "the disk is full while writing", str(out), ".safetensors")  # fmt: skip
        assert not [p for p in disk.rglob("*") if ".tmp" in p.name]
        # train: step 1's checkpoint fits, step 2's does not; step 1 is kept whole
        (disk / "filler").unlink()
        run, config = disk / "run", _config(tmp_path, "checkpoint_every: 1\nkeep_checkpoints: 5\n")
        assert _train(mochi_cache, run, "--max-steps", "1", config=config).exit_code == 0
        kept = snapshot(run / "checkpoints")
        fill(disk, 4096)
        args = ["train", "--cache", str(mochi_cache), "-o", str(run), *TINY, "--max-steps", "2"]
        refused([*args, "--config", str(config)], "the disk is full while writing", str(run / "checkpoints"))
        assert snapshot(run / "checkpoints") == kept
        assert (
            not [p for p in disk.rglob("*") if ".tmp" in p.name]
            and not (run / ".dreamrelation.lock").exists()
        )
        # generate: the video does not fit (PyAV's own OSError)
        (disk / "filler").unlink()
        fill(disk, 4096)
        videos = disk / "videos"
        refused(["generate", *TINY, *GEOMETRY, "--steps", "2", "-p", "a dog is hugging a cat.", "-o",
                 str(videos)], "the disk is full while writing", str(videos), ".mp4")  # fmt: skip
        assert not [p for p in disk.rglob("*") if ".tmp" in p.name or p.suffix == ".mp4"]
    assert snapshot(data, mochi_cache) == before


# ----- 2. non-finite and absurd settings, weights and optimizer state ---------------------------
@pytest.mark.parametrize(
    ("setting", "culprit"),
    [
        ("learning_rate=.inf", "learning_rate"),
        ("weight_decay=.inf", "weight_decay"),
        ("learning_rate=1e3", "learning_rate"),
        ("loss.mask_weight=1e30", "loss.mask_weight"),
        ("loss.contrastive_weight=.nan", "loss.contrastive_weight"),
        ("adam_betas=[0.9, 1.5]", "adam_betas.1"),
        ("seed=18446744073709551616", "seed"),
        ("cache=[]", "cache"),
    ],
)
def test_non_finite_absurd_or_empty_training_settings_are_refused(
    mochi_cache: Path, tmp_path: Path, setting: str, culprit: str
) -> None:
    out = tmp_path / "run"
    refused(["train", "--cache", str(mochi_cache), "-o", str(out), *TINY, "--set", setting], culprit)
    assert not out.exists()


@pytest.mark.parametrize("setting", ["guidance_scale=.inf", "lora_scale=.nan", "seed=-1"])
def test_non_finite_generation_settings_are_refused(tmp_path: Path, setting: str) -> None:
    out = tmp_path / "videos"
    refused(
        ["generate", "-p", "a cat", "-o", str(out), *TINY, *GEOMETRY, "--set", setting], setting.split("=")[0]
    )
    assert not out.exists()


def test_diverging_training_stops_before_writing_and_keeps_the_last_checkpoint(
    mochi_cache: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(mochi_cache, cache)
    run, config = tmp_path / "run", _config(tmp_path, "checkpoint_every: 1\nloss: {contrastive_weight: 0}\n")
    assert _train(cache, run, "--max-steps", "1", config=config).exit_code == 0
    kept = snapshot(run)
    # a cached item whose latents are huge but finite: the loss may stay finite, its gradients not
    for item in (cache / "items").iterdir():
        tensors = load_file(str(item))
        tensors["latents"] = torch.full_like(tensors["latents"], 5e17)
        save_file(tensors, str(item), metadata={"fingerprint": "x"})
    line = refused(["train", "--cache", str(cache), "-o", str(run), *TINY, "--max-steps", "3",
                    "--config", str(config)])  # fmt: skip
    assert "non-finite" in line or "diverged" in line
    assert snapshot(run) == kept  # no step-2 checkpoint, no LoRA of NaNs, step 1 intact


def test_non_finite_gradients_or_optimizer_state_stop_before_anything_is_written(
    mochi_cache: Path, tmp_path: Path
) -> None:
    from dreamrelation.config import TrainConfig, load_config
    from dreamrelation.errors import TrainingError
    from dreamrelation.training.loop import Trainer

    run = tmp_path / "run"
    sets = {"model.model": "tiny", "model.dtype": "float32", "lora.rank": 2, "warmup_steps": 0,
            "checkpoint_every": 1, "max_steps": 3, "loss.contrastive_weight": 0,
            "resume": "never"}  # fmt: skip
    trainer = Trainer(load_config(TrainConfig, cache=[str(mochi_cache)], output=str(run), sets=sets))
    trainer.run(show_progress=False, stop_after=1)
    kept = snapshot(run)
    state = next(iter(trainer.optimizer.state.values()))
    state["exp_avg_sq"].fill_(float("inf"))  # what a 1e30 loss weight did to AdamW's second moment
    with pytest.raises(TrainingError, match="step 2: the (gradients|LoRA weights|optimizer state) hold NaN"):
        trainer.run(show_progress=False)
    assert snapshot(run) == kept and trainer.step == 1


def _lora_with(tmp_path: Path, value: float) -> Path:
    from dreamrelation.backbones import load_backbone
    from dreamrelation.generation.lora_files import save_lora_files
    from dreamrelation.training.adapters import TripletConfig, add_triplet

    out = tmp_path / "trained"
    backbone = load_backbone("mochi", "tiny")
    add_triplet(backbone, TripletConfig(rank=2, alpha=2), seed=0)
    save_lora_files(backbone.transformer, out, "{}", "mochi", ["relation", "subject1", "subject2", "ffn"])
    lora = out / "relation_lora.safetensors"
    state = load_file(str(lora))
    key = next(iter(state))
    state[key] = torch.full_like(state[key], value)
    from safetensors import safe_open

    with safe_open(str(lora), "pt") as handle:
        meta = handle.metadata()
    save_file(state, str(lora), metadata=meta)
    return lora


def test_absurd_or_nan_lora_is_refused_by_generate_and_analyze(tmp_path: Path) -> None:
    huge = _lora_with(tmp_path, 6e7)  # what lr 1e3 for 6 steps wrote before the config refused it
    out = tmp_path / "videos"
    refused(
        ["generate", "-p", "a cat", "--lora", str(huge), "-o", str(out), *TINY, *GEOMETRY], str(huge), "6e+07"
    )
    assert not out.exists()
    nan = _lora_with(tmp_path, float("nan"))
    model = tmp_path / "model.safetensors"
    from dreamrelation.backbones import load_backbone

    transformer = load_backbone("mochi", "tiny").transformer
    save_file({k: v.contiguous() for k, v in transformer.state_dict().items()}, str(model))
    report = tmp_path / "report"
    refused(["analyze", "subspace", str(model), "--lora", str(nan), "--ranks", "1", "-o", str(report),
             "--family", "mochi"], str(nan), "NaN")  # fmt: skip
    assert not report.exists()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    refused(["analyze", "subspace", str(truncated), "-o", str(report)], str(truncated), "truncated")


# ----- 3. names from data stay inside their folder ---------------------------------------------
@pytest.mark.parametrize("relation", ["../../../escaped", "/tmp/absolute-relation", ".."])
def test_a_relation_name_cannot_leave_the_cache_folder(make_dataset, tmp_path: Path, relation: str) -> None:
    data = make_dataset(n_videos=1, num_frames=7, size=16)
    (data / "relation.txt").write_text(relation + "\n")
    out = tmp_path / "area" / "cache"
    before = snapshot(tmp_path)
    refused(["cache", "--data", str(data), "-o", str(out), *TINY, *GEOMETRY], "relation.txt", repr(relation))
    assert snapshot(tmp_path) == before and not out.exists()
    assert not Path("/tmp/absolute-relation__clip0.safetensors").exists()
    config = tmp_path / "cache.yaml"
    config.write_text(json.dumps({"data": [{"path": str(data), "relation": "/tmp/absolute-relation"}]}))
    refused(["cache", "--config", str(config), "-o", str(out), *TINY, *GEOMETRY], "relation")


# ----- 4. an output that is an input ----------------------------------------------------------
def test_export_never_overwrites_its_input_and_generate_never_overwrites_a_render(tmp_path: Path) -> None:
    lora = _lora_with(tmp_path, 0.01)
    before = snapshot(lora)
    refused(["export", "comfyui", str(lora), "-o", str(lora)], str(lora), "the output is the input")
    user_file = tmp_path / "mine.safetensors"
    user_file.write_bytes(b"the user's own file")
    refused(["export", "comfyui", str(lora), "-o", str(user_file)], str(user_file), "--overwrite")
    assert snapshot(lora) == before and user_file.read_bytes() == b"the user's own file"
    videos = tmp_path / "videos"
    args = ["generate", *TINY, *GEOMETRY, "--steps", "2", "-p", "a dog is hugging a cat.", "-o", str(videos)]
    assert CliRunner().invoke(app, args).exit_code == 0
    first = snapshot(videos)
    assert CliRunner().invoke(app, [*args, "--seed", "1"]).exit_code == 0
    assert all(snapshot(videos)[path] == digest for path, digest in first.items())  # first render kept
    assert len(list(videos.glob("*.mp4"))) == 2


# ----- 5. the output lock under real contention ------------------------------------------------
_CONTENDER = """
import os, sys, time
from dreamrelation.errors import ConfigError
from dreamrelation.files import output_lock
folder, log, start = sys.argv[1:4]
while not os.path.exists(start):
    time.sleep(0.001)
try:
    with output_lock(folder):
        with open(log, "a") as f: f.write(f"in {os.getpid()}\\n")
        time.sleep(0.02)
        with open(log, "a") as f: f.write(f"out {os.getpid()}\\n")
except ConfigError:
    pass
"""


def test_the_output_lock_holds_under_many_concurrent_processes(tmp_path: Path) -> None:
    trials, contenders = 12, 6
    for trial in range(trials):
        folder, log, start = tmp_path / f"out{trial}", tmp_path / f"log{trial}", tmp_path / f"go{trial}"
        if trial % 2:  # half the trials start from a stale lock left by a killed run
            folder.mkdir()
            (folder / ".dreamrelation.lock").write_text("999999999")
        procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, str(folder), str(log), str(start)])
                 for _ in range(contenders)]  # fmt: skip
        time.sleep(0.3)
        start.touch()
        assert all(p.wait(timeout=60) == 0 for p in procs)
        events = log.read_text().split()
        holders = 0
        for kind in events[::2]:  # in/out must alternate: never two holders at once
            holders += 1 if kind == "in" else -1
            assert holders in (0, 1), (trial, log.read_text())
        assert events and holders == 0


# ----- 6. the data under a run ----------------------------------------------------------------
def test_changed_data_is_noticed_by_cache_and_by_a_resumed_train(make_dataset, tmp_path: Path) -> None:
    from dreamrelation.cache import build_cache
    from dreamrelation.config import CacheConfig, load_config

    first = make_dataset("first", n_videos=2, num_frames=7, size=16)
    second = make_dataset("second", n_videos=2, num_frames=7, size=16)
    cache = tmp_path / "cache"
    args = ["cache", "-o", str(cache), *TINY, *GEOMETRY]
    assert CliRunner().invoke(app, [*args, "--data", str(first)]).exit_code == 0
    manifest = (cache / "manifest.json").read_text()
    refused([*args, "--data", str(second)], str(first), "another --output")  # would drop first's items
    assert (cache / "manifest.json").read_text() == manifest
    # other mask colours are other masks: the items are re-encoded
    cfg = load_config(CacheConfig, data=[{"path": str(first)}], output=str(cache), sets={
        "model.model": "tiny", "model.dtype": "float32", "video.num_frames": 7, "video.height": 16,
        "video.width": 16, "mask_colors": {"subject1": [255, 0, 0], "subject2": [0, 250, 0]}})  # fmt: skip
    assert len(build_cache(cfg, show_progress=False).encoded) == 2
    # a run resumed after its cache was re-made from other data is refused
    run, config = tmp_path / "run", _config(tmp_path, "checkpoint_every: 1\nloss: {contrastive_weight: 0}\n")
    assert _train(cache, run, "--max-steps", "1", config=config).exit_code == 0
    kept = snapshot(run)
    shutil.rmtree(cache)
    assert CliRunner().invoke(app, [*args, "--data", str(second)]).exit_code == 0
    refused(["train", "--cache", str(cache), "-o", str(run), *TINY, "--max-steps", "2", "--config",
             str(config)], "other cached data")  # fmt: skip
    assert snapshot(run) == kept


# ----- 7. no traceback from model folders, list values, seeds, empty lists, links --------------
def _pickle_only_model(tmp_path: Path) -> Path:
    folder = tmp_path / "pickled"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "MochiPipeline"}')
    (folder / "transformer" / "config.json").write_text('{"_class_name": "MochiTransformer3DModel"}')
    torch.save({"w": torch.zeros(1)}, folder / "transformer" / "diffusion_pytorch_model.bin")
    return folder


@pytest.mark.parametrize("kind", ["empty folder", "a file", "pickle-only folder", "missing offline"])
def test_train_model_loading_faults_are_one_line(mochi_cache: Path, tmp_path: Path, kind: str) -> None:
    model = {
        "empty folder": lambda: (tmp_path / "empty").mkdir() or tmp_path / "empty",
        "a file": lambda: (tmp_path / "weights.bin").write_bytes(b"x") and tmp_path / "weights.bin",
        "pickle-only folder": lambda: _pickle_only_model(tmp_path),
        "missing offline": lambda: "nobody/no-such-model",
    }[kind]()
    cache = tmp_path / "cache"
    shutil.copytree(mochi_cache, cache)
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["model"] = str(model)
    (cache / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "run"
    args = ["train", "--cache", str(cache), "-o", str(out), "--backbone", "mochi", "--model", str(model)]
    line = refused([*args, "--dtype", "float32", "--max-steps", "1"], str(model))
    if kind == "a file":
        assert "is a file" in line and "download" not in line
    assert not out.exists()  # no empty folder left behind


def test_dangling_output_link_and_export_model_folder_are_one_line(tmp_path: Path) -> None:
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "nowhere")
    refused(["generate", "-p", "a cat", "-o", str(link), *TINY, *GEOMETRY], str(link), "does not exist")
    lora = _lora_with(tmp_path, 0.01)
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(["export", "comfyui", str(lora), "-o", str(tmp_path / "c.safetensors"), "--model", str(empty)],
            str(empty))  # fmt: skip


# ----- 8. secrets -----------------------------------------------------------------------------
class _EchoHeaders(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = f"bad request; you sent: {dict(self.headers)}".encode()
        self.send_response(400)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_api_key_is_never_printed_or_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamrelation.errors import DreamRelationError
    from dreamrelation.evaluation.judge import OpenAIChatJudge

    secret = "sk-live-0123456789abcdef0123"
    monkeypatch.setenv("JUDGE_TEST_KEY", secret)
    server = http.server.HTTPServer(("127.0.0.1", 0), _EchoHeaders)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        judge = OpenAIChatJudge(
            f"http://127.0.0.1:{server.server_port}/v1", "m", "JUDGE_TEST_KEY", max_retries=0
        )
        with pytest.raises(DreamRelationError) as caught:
            judge.ask("is it?", [])
    finally:
        server.shutdown()
    assert "HTTP 400" in str(caught.value) and secret not in str(caught.value)
    videos = tmp_path / "videos"
    videos.mkdir()
    result = CliRunner().invoke(app, ["evaluate", str(videos), "--judge-key-env", secret])
    assert result.exit_code == 2 and secret not in result.output and "Traceback" not in result.output
    assert "judge.api_key_env" in result.output
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and secret in p.read_text(errors="replace")]


# ----- 9. resource bombs and unclear lines ------------------------------------------------------
def test_a_yaml_alias_bomb_is_refused_fast_in_one_short_line(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    bomb.write_text("\n".join([*lines, "max_steps: *h\n"]))
    started = time.monotonic()
    line = refused(
        ["train", "--config", str(bomb), "--cache", "c", "-o", str(tmp_path / "r")], str(bomb), "alias"
    )
    assert time.monotonic() - started < 10 and len(line) < 400


def test_an_rgba_mask_with_transparent_white_says_alpha(make_dataset, tmp_path: Path) -> None:
    from PIL import Image

    data = make_dataset(n_videos=1, num_frames=7, size=16)
    png = sorted((data / "masks" / "clip0").glob("*.png"))[0]
    image = Image.open(png).convert("RGBA")
    image.putpixel((0, 0), (255, 255, 255, 0))  # transparent white: black under any viewer
    image.save(png)
    refused(["cache", "--data", str(data), "-o", str(tmp_path / "c"), *TINY, *GEOMETRY], str(png), "alpha")


# ----- 10. quiet degradation ------------------------------------------------------------------
def test_one_clip_per_relation_warns_that_the_contrastive_loss_never_runs(tmp_path: Path) -> None:
    from dreamrelation.testing.data import write_tiny_cache

    cache = write_tiny_cache(tmp_path / "data", n_videos=1, num_frames=7, size=16)
    result = _train(cache, tmp_path / "run", "--max-steps", "1", config=_config(tmp_path))
    assert result.exit_code == 0, result.output
    assert "never runs" in result.output


def test_a_killed_writers_temporary_file_is_removed_by_the_next_run(make_dataset, tmp_path: Path) -> None:
    data = make_dataset(n_videos=1, num_frames=7, size=16)
    out = tmp_path / "cache"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / "items").mkdir(parents=True)
    stale = out / "items" / f".x.safetensors.tmp-{dead.pid}-0123abcd"
    stale.write_bytes(b"half a file from a cache killed with -9")
    assert (
        CliRunner().invoke(app, ["cache", "--data", str(data), "-o", str(out), *TINY, *GEOMETRY]).exit_code
        == 0
    )
    assert not stale.exists()


def test_third_party_import_noise_stays_off_the_terminal(tmp_path: Path) -> None:
    # diffusers imports bitsandbytes whenever it is installed; bitsandbytes then warns "Failed to load
    # CPU gemm_4bit_forward from kernels-community…" (on CPUs with AVX512-BF16) on every command
    args = ["generate", *TINY, *GEOMETRY, "--steps", "2", "-p", "a cat.", "-o", str(tmp_path / "v")]
    done = subprocess.run([sys.executable, "-c", "from dreamrelation.cli.app import main; main()", *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for noise in ("gemm_4bit", "kernels-community", "publisher trust"):
        assert noise not in done.stdout + done.stderr
