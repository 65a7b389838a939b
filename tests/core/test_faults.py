"""Every fault a user can cause ends in exit code 2 with one line naming the file or setting, and
leaves the disk as it was (nothing written, nothing lost). One test per fault class."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from dreamrelation.cli import app
from dreamrelation.testing import write_two_subject_dataset

TINY = ["--backbone", "mochi", "--model", "tiny", "--dtype", "float32"]
GEOMETRY = ["--num-frames", "7", "--height", "16", "--width", "16"]


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` with a hash of its bytes (missing roots count as empty)."""
    files = {}
    for root in roots:
        if root.is_file():
            files[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
        elif root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def fails(args: list[str], first_line: str) -> str:
    """Run the CLI; it must exit 2 with an error whose first line contains ``first_line``."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    # a progress bar may come first; the error is one line
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    line = errors[0]
    assert first_line in line, line
    return line


def _train(cache: Path, output: Path, *extra: str, config: Path | None = None) -> CliRunner:
    args = ["train", "--cache", str(cache), "--output", str(output), *TINY, *extra]
    if config is not None:
        args += ["--config", str(config)]
    return CliRunner().invoke(app, args)


def _train_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text("lora: {rank: 2, alpha: 2}\nwarmup_steps: 0\n" + text)
    return path


# ----- configs --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("yaml_text", "first_line"),
    [
        ("lora: {rnak: 8}\n", "lora.rnak: unknown setting"),
        ("lora: {ranks: {relaton: 4}}\n", "unknown adapter(s) ['relaton'] in ranks"),
        ("max_steps: 5\nmax_steps: 6\n", "duplicate key 'max_steps'"),
        ("lora: {streams: [audio]}\n", "lora.streams: mochi has no stream(s) ['audio']"),
        ("model: {backbone: sora}\n", "model.backbone: unknown backbone 'sora'"),
    ],
)
def test_config_mistakes_are_named(
    mochi_cache: Path, tmp_path: Path, yaml_text: str, first_line: str
) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(yaml_text)
    before = snapshot(mochi_cache, tmp_path)
    args = ["train", "--cache", str(mochi_cache), "--output", str(tmp_path / "run"), "--config", str(config)]
    fails(args, first_line)
    assert snapshot(mochi_cache, tmp_path) == before


def test_non_utf8_config(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_bytes("max_steps: 5 # d\xe9j\xe0\n".encode("latin-1"))
    fails(["train", "--config", str(config), "--cache", "c", "--output", str(tmp_path / "r")], "not UTF-8")
    assert not (tmp_path / "r").exists()


def test_caption_byte_order_mark_is_not_part_of_the_caption(make_dataset) -> None:
    from dreamrelation.data import scan_dataset

    data = make_dataset(n_videos=1)
    (data / "clip0.txt").write_bytes("\ufeffa cat is hugging a dog.".encode())
    assert scan_dataset(data)[0].caption == "a cat is hugging a dog."


# ----- data and caches ------------------------------------------------------------------------
def test_a_subject_absent_from_every_frame_is_refused_not_cached(make_dataset, tmp_path: Path) -> None:
    from PIL import Image

    data = make_dataset(n_videos=2, num_frames=7, size=16)
    for png in (data / "masks" / "clip1").glob("*.png"):  # paint subject2 (green) black everywhere
        pixels = __import__("numpy").array(Image.open(png))
        pixels[(pixels[..., 1] > 128) & (pixels[..., 0] < 128)] = 0
        Image.fromarray(pixels).save(png)
    out = tmp_path / "cache"
    line = fails(["cache", "--data", str(data), "--output", str(out), *TINY, *GEOMETRY], "clip1")
    assert "subject2" in line and "absent from every mask frame" in line
    assert not list(out.glob("items/*clip1*"))  # never cached with a zero mask


def test_invalid_frame_count_or_size_fails_before_the_model_loads(make_dataset, tmp_path: Path) -> None:
    data = make_dataset(n_videos=1, num_frames=7, size=16)
    out = tmp_path / "cache"
    args = ["cache", "--data", str(data), "--output", str(out), *TINY, "--height", "16", "--width", "16"]
    fails([*args, "--num-frames", "6"], "video.num_frames: mochi: 6 frames do not fit")
    fails(["cache", "--data", str(data), "--output", str(out), *TINY, "--num-frames", "7", "--height", "12",
           "--width", "16"], "video.height/width: mochi needs multiples of 8")  # fmt: skip
    assert not out.exists()  # no empty cache folder left behind
    gen_out = tmp_path / "videos"
    fails(
        ["generate", "-p", "a cat", "-o", str(gen_out), *TINY, "--num-frames", "15"], "num_frames: mochi: 15"
    )
    assert not gen_out.exists()


def test_output_that_is_a_file_or_not_writable(make_dataset, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("precious")
    fails(["generate", "-p", "a cat", "-o", str(taken), *TINY, *GEOMETRY], "is a file, not a folder")
    data = make_dataset(n_videos=1, num_frames=7, size=16)
    fails(["cache", "--data", str(data), "-o", str(taken / "sub"), *TINY, *GEOMETRY], "goes through a file")
    assert taken.read_text() == "precious"
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        fails(["generate", "-p", "a cat", "-o", str(locked / "v"), *TINY, *GEOMETRY], "not writable")


def test_cache_made_with_another_model_is_refused(mochi_cache: Path, tmp_path: Path) -> None:
    args = ["train", "--cache", str(mochi_cache), "--output", str(tmp_path / "run")]
    fails([*args, "--backbone", "mochi", "--model", "genmo/mochi-1-preview"], "was made with --model tiny")
    fails([*args, "--backbone", "wan", "--model", "tiny"], "was made with backbone mochi")
    assert not (tmp_path / "run").exists()


def test_rcl_on_single_latent_frame_videos_is_refused_before_training(tmp_path: Path) -> None:
    # One latent frame has no frame-to-frame dynamics: RCL would be NaN at its first bank draw.
    from dreamrelation.testing.data import write_tiny_cache

    cache = write_tiny_cache(tmp_path / "data", n_videos=2, num_frames=1)
    args = ["train", "--cache", str(cache), "--output", str(tmp_path / "run"), *TINY, "--max-steps", "2"]
    fails(args, "loss.contrastive_weight > 0 (RCL) needs at least 2 latent frames")
    assert not (tmp_path / "run" / "relation_lora.safetensors").exists()
    result = CliRunner().invoke(app, [*args, "--set", "loss.contrastive_weight=0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "relation_lora.safetensors").is_file()


def test_corrupt_manifest_or_missing_cache_file(mochi_cache: Path, tmp_path: Path) -> None:
    broken = tmp_path / "cache"
    shutil.copytree(mochi_cache, broken)
    (broken / "manifest.json").write_text('{"items": [')
    fails(["train", "--cache", str(broken), "-o", str(tmp_path / "run"), *TINY], "cache manifest is damaged")
    shutil.rmtree(broken)
    shutil.copytree(mochi_cache, broken)
    next((broken / "items").iterdir()).unlink()
    fails(["train", "--cache", str(broken), "-o", str(tmp_path / "run"), *TINY], "a cached file is missing")
    assert not (tmp_path / "run").exists()


def test_model_missing_offline_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["generate", "-p", "a cat", "-o", str(tmp_path / "v"), "--backbone", "wan", *GEOMETRY[2:]]
    line = fails([*args, "--model", "nobody/no-such-model", "--num-frames", "5"], "'nobody/no-such-model'")
    assert "HF_HUB_OFFLINE" in line


# ----- training runs --------------------------------------------------------------------------
def test_resume_with_other_optimizer_settings_or_fewer_steps(mochi_cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _train(mochi_cache, run, "--max-steps", "2", config=_train_config(tmp_path, "")).exit_code == 0
    before = snapshot(run)
    changed = _train_config(tmp_path, "learning_rate: 0.001\n")
    fails(["train", "--cache", str(mochi_cache), "-o", str(run), *TINY, "--max-steps", "3", "--config",
           str(changed)], "learning_rate 0.0002 -> 0.001")  # fmt: skip
    same = _train_config(tmp_path, "")
    fails(["train", "--cache", str(mochi_cache), "-o", str(run), *TINY, "--max-steps", "1", "--config",
           str(same)], "at step 2, beyond max_steps 1")  # fmt: skip
    assert snapshot(run) == before


@contextlib.contextmanager
def _held_by_another_process(folder: Path) -> Iterator[int]:
    """A real process holds ``folder``'s output lock while this is open; yields its pid. It is killed
    at the end: its lock file stays behind, but the OS lock dies with it."""
    holder = "import sys, time\nfrom dreamrelation.files import output_lock\nwith output_lock(sys.argv[1]):\n"
    holder += "    print('held', flush=True); time.sleep(60)"
    other = subprocess.Popen([sys.executable, "-c", holder, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        yield other.pid
    finally:
        other.kill()
        other.wait()


def test_second_train_on_the_same_output_is_refused(mochi_cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with _held_by_another_process(run) as pid:
        fails(["train", "--cache", str(mochi_cache), "-o", str(run), *TINY], f"(pid {pid})")
        assert sorted(p.name for p in run.iterdir()) == [".dreamrelation.lock"]
    # its owner is gone: the stale lock is taken over, and released at the end
    result = _train(mochi_cache, run, "--max-steps", "1", config=_train_config(tmp_path, ""))
    assert result.exit_code == 0, result.output
    assert not (run / ".dreamrelation.lock").exists()


@pytest.mark.parametrize("command", ["benchmark run", "toy benchmark", "demo"])
def test_the_long_runners_refuse_a_busy_output(command: str, tmp_path: Path) -> None:
    # the resumable runners hold their output folder as train does: a second run into it would
    # resume the same runs at the same time and write over the first one's files
    data = write_two_subject_dataset(tmp_path / "data" / "shaking_hands", n_videos=2)
    bench = tmp_path / "bench.yaml"
    bench.write_text(
        "model: {backbone: mochi, model: tiny, dtype: float32}\n"
        f"relations: [{{name: shaking_hands, data: {data}}}]\nmethods: [direct_lora]\nseeds: [0]\n"
    )
    args = {
        "benchmark run": ["benchmark", "run", str(bench)],
        "toy benchmark": ["toy", "benchmark", "--model", "tiny", "--seeds", "0", "--methods", "base"],
        "demo": ["demo", "--set", "model=tiny"],
    }[command]
    run = tmp_path / "run"
    run.mkdir()
    with _held_by_another_process(run) as pid:
        line = fails([*args, "-o", str(run)], f"another `dreamrelation {command}` (pid {pid})")
        assert "use another --output" in line
        assert sorted(p.name for p in run.iterdir()) == [".dreamrelation.lock"]
        if command != "demo":  # the tables of what is there may be written beside a run
            result = CliRunner().invoke(app, [*args, "-o", str(run), "--report-only"])
            assert "is writing to this folder" not in result.output, result.output


def test_damaged_newest_checkpoint_falls_back_to_an_intact_one(mochi_cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = _train_config(tmp_path, "checkpoint_every: 1\nkeep_checkpoints: 3\n")
    assert _train(mochi_cache, run, "--max-steps", "2", config=config).exit_code == 0
    newest = run / "checkpoints" / "step-0000002" / "adapters.safetensors"
    adapters = load_file(str(newest))
    save_file({k: torch.full_like(v, float("nan")) for k, v in adapters.items()}, str(newest))
    result = _train(mochi_cache, run, "--max-steps", "3", config=config)
    assert result.exit_code == 0, result.output
    assert "step-0000002 is damaged" in result.output and "falling back to step-0000001" in result.output
    history = json.loads((run / "history.json").read_text())
    assert [r["step"] for r in history] == [1, 2, 3]
    assert all(torch.isfinite(v).all() for v in load_file(str(run / "relation_lora.safetensors")).values())


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(
    mochi_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dreamrelation.training.loop import Trainer

    original = Trainer.training_step

    def interrupted_at_step_two(self: Trainer, step: int) -> dict:
        record = original(self, step)
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C during step 2
        return record

    monkeypatch.setattr(Trainer, "training_step", interrupted_at_step_two)
    run = tmp_path / "run"
    result = _train(mochi_cache, run, "--max-steps", "50", config=_train_config(tmp_path, ""))
    assert result.exit_code == 130, result.output
    assert "stopped at step 2" in result.output and "Resume" in result.output
    state = json.loads((run / "checkpoints" / "step-0000002" / "state.json").read_text())
    assert state["step"] == 2
    assert not (run / ".dreamrelation.lock").exists()


def test_same_seed_same_lora_initialisation_on_any_model() -> None:
    from dreamrelation.backbones import load_backbone
    from dreamrelation.training.adapters import TripletConfig, add_triplet, triplet_state_dict

    states = []
    for global_seed in (1, 2):
        backbone = load_backbone("mochi", "tiny")
        torch.manual_seed(global_seed)  # whatever the model loading left in the global RNG
        add_triplet(backbone, TripletConfig(rank=2), seed=7)
        states.append(triplet_state_dict(backbone.transformer, ["relation", "subject1", "subject2", "ffn"]))
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert any(v.abs().sum() > 0 for v in states[0].values())


# ----- LoRA files -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dreamrelation.backbones import load_backbone
    from dreamrelation.generation.lora_files import save_lora_files
    from dreamrelation.training.adapters import TripletConfig, add_triplet

    out = tmp_path_factory.mktemp("lora")
    backbone = load_backbone("mochi", "tiny")
    add_triplet(backbone, TripletConfig(rank=2, alpha=2), seed=0)
    save_lora_files(backbone.transformer, out, "{}", "mochi", ["relation", "subject1", "subject2", "ffn"])
    return out


def _bad_lora(tmp_path: Path, kind: str, good: Path) -> Path:
    path = tmp_path / f"{kind}.safetensors"
    state = load_file(str(good / "relation_lora.safetensors"))
    if kind == "pickle":
        torch.save(state, path)
    elif kind == "truncated":
        path.write_bytes((good / "relation_lora.safetensors").read_bytes()[:200])
    elif kind == "wrong keys":
        save_file({"unet.down.0.weight": torch.zeros(2, 2)}, str(path))
    elif kind == "wrong shapes":
        key = next(k for k in state if k.endswith("to_q.lora_A.weight"))
        state[key] = torch.zeros(state[key].shape[0], 7)
        save_file(state, str(path))
    elif kind == "nan":
        key = next(iter(state))
        state[key] = torch.full_like(state[key], float("nan"))
        save_file(state, str(path), metadata={"dreamrelation.backbone": "mochi"})
    elif kind == "triplet":
        shutil.copy(good / "triplet.safetensors", path)
    return path


@pytest.mark.parametrize(
    ("kind", "first_line"),
    [
        ("pickle", "not a readable safetensors LoRA"),
        ("truncated", "not a readable safetensors LoRA"),
        ("wrong keys", "unexpected keys such as 'unet.down.0.weight'"),
        ("wrong shapes", "the LoRA maps 7 -> "),
        ("nan", "contains NaN or infinite values"),
        ("triplet", "is the adapter triplet"),
    ],
)
def test_invalid_lora_files_are_refused(tiny_lora: Path, tmp_path: Path, kind: str, first_line: str) -> None:
    lora = _bad_lora(tmp_path, kind, tiny_lora)
    out = tmp_path / "videos"
    line = fails(
        ["generate", "-p", "a cat", "--lora", str(lora), "-o", str(out), *TINY, *GEOMETRY], first_line
    )
    assert str(lora) in line
    assert not out.exists()


# ----- the disk: tests/core/test_fault_classes.py fills a real (tmpfs) disk; where it cannot ----
# ----- mount one (not root), this raises safetensors' own full-disk error in its writer ------
def test_disk_full_while_caching_leaves_no_temporary_files(
    make_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch
    from safetensors import SafetensorError

    def full_disk(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)  # files.save_tensors' writer
    data = make_dataset(n_videos=1, num_frames=7, size=16)
    out = tmp_path / "cache"
    line = fails(
        ["cache", "--data", str(data), "-o", str(out), *TINY, *GEOMETRY], "the disk is full while writing"
    )
    assert str(out / "items") in line
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


# ----- toy pretrain ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "first_line"),
    [
        (["--steps", "0"], "steps: Input should be greater than 0"),
        (["--size", "huge"], "unknown toy transformer size 'huge'"),
        (["--autocast", "fp8"], "autocast: Input should be 'auto', 'bf16' or 'off'"),
        (["--device", "tpu:x"], "--device"),
        (["--init-from", "/nonexistent/stage1"], "not a saved toy pipeline folder"),
    ],
)
def test_bad_toy_pretrain_inputs(tmp_path: Path, extra: list[str], first_line: str) -> None:
    out = tmp_path / "base"
    fails(["toy", "pretrain", "-o", str(out), "--steps", "2", *extra], first_line)
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from dreamrelation.errors import ConfigError

    result = CliRunner().invoke(
        app, ["--debug", "generate", "-p", "a", "-o", str(tmp_path / "v"), *TINY, "--num-frames", "15"]
    )
    assert isinstance(result.exception, ConfigError)
