"""`--set key.path=value`: one path from the command line to every command's config.

Each command is stopped right after its config is loaded (nothing runs), and the loaded config is
checked, not just the exit code.
"""

from __future__ import annotations

from operator import attrgetter
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

import dreamrelation.config as config_module
from dreamrelation.cli import app


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> list:
    """The configs the commands load; each command stops (exit 0) once its config is built."""
    configs: list = []
    real = config_module.load_config

    def load_and_stop(*args: object, **kwargs: object) -> object:
        configs.append(real(*args, **kwargs))
        raise typer.Exit(0)

    monkeypatch.setattr(config_module, "load_config", load_and_stop)
    return configs


def _benchmark_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"backbone": "mochi", "model": "tiny", "dtype": "float32"},
                "relations": [{"name": "shaking_hands", "data": str(tmp_path / "data")}],
                "methods": ["direct_lora"],
            }
        )
    )
    return path


#: command line (with {tmp} for a folder), the --set given, the attribute it must reach, its value
CASES = [
    (["cache", "--data", "{tmp}/d", "-o", "{tmp}/c"], "video.frame_stride=3", "video.frame_stride", 3),
    (["train", "--cache", "{tmp}/c", "-o", "{tmp}/r"], "loss.mask_weight=12.5", "loss.mask_weight", 12.5),
    (["generate", "-p", "a cat.", "-o", "{tmp}/v"], "lora_scale=0.5", "lora_scale", 0.5),
    (["evaluate", "{tmp}"], "judge.num_frames=4", "judge.num_frames", 4),
    (["demo", "-o", "{tmp}/demo"], "rank=4", "rank", 4),
    (["benchmark", "run", "{tmp}/bench.yaml"], "seeds=[5, 6]", "seeds", [5, 6]),
    (["benchmark", "run", "{tmp}/bench.yaml"], "train.max_steps=7", "train", {"max_steps": 7}),
    (["toy", "benchmark", "-o", "{tmp}/tb"], "learning_rate=0.002", "learning_rate", 0.002),
    (["toy", "pretrain", "-o", "{tmp}/base"], "sigma_shift=2.0", "sigma_shift", 2.0),
    (["toy", "codec", "train", "-o", "{tmp}/codec"], "sprite_weight=4.0", "sprite_weight", 4.0),
    (["prepare", "ntu", "--ntu", "{tmp}", "-o", "{tmp}/n"], "min_frames=90", "min_frames", 90),
    (["prepare", "videos", "-i", "{tmp}", "-o", "{tmp}/p"], "crf=20", "crf", 20),
    (["masks", "--data", "{tmp}"], "top_k=3", "top_k", 3),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "assignment", "read", "expected"), CASES, ids=lambda v: str(v)[:30])
def test_set_reaches_the_config_of_every_command(
    loaded: list, tmp_path: Path, argv: list[str], assignment: str, read: str, expected: object
) -> None:
    _benchmark_yaml(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    result = CliRunner().invoke(app, [*args, "--set", assignment])
    assert result.exit_code == 0, result.output
    assert len(loaded) == 1
    assert attrgetter(read)(loaded[0]) == expected


def _train(tmp_path: Path, *extra: str) -> CliRunner:
    return CliRunner().invoke(
        app, ["train", "--cache", str(tmp_path / "c"), "-o", str(tmp_path / "r"), *extra]
    )


def test_precedence_defaults_yaml_flags_set(loaded: list, tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("max_steps: 5\nlora: {rank: 4, alpha: 2}\n")
    runs = {
        "default": [],
        "yaml": ["-c", str(config)],
        "flag": ["-c", str(config), "--max-steps", "6"],
        "set": ["-c", str(config), "--max-steps", "6", "--set", "max_steps=7"],
        "set before flag": ["-c", str(config), "--set", "max_steps=7", "--max-steps", "6"],
    }
    for name, extra in runs.items():
        assert _train(tmp_path, *extra).exit_code == 0, name
    assert [c.max_steps for c in loaded] == [2400, 5, 6, 7, 7]
    # a dotted key replaces one value; the rest of the file's section stays
    assert _train(tmp_path, "-c", str(config), "--set", "lora.rank=8").exit_code == 0
    assert (loaded[-1].lora.rank, loaded[-1].lora.alpha) == (8, 2)


def test_set_values_are_yaml_never_code(loaded: list, tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("max_grad_norm: 1.0\n")
    extra = ["-c", str(config), "--set", "max_grad_norm=null", "--set", "adam_betas=[0.8, 0.95]"]
    assert _train(tmp_path, *extra, "--set", "validation_prompts=[a cat., 'b: c']").exit_code == 0
    cfg = loaded[-1]
    assert cfg.max_grad_norm is None  # an explicit null beats the file
    assert cfg.adam_betas == (0.8, 0.95)
    assert cfg.validation_prompts == ["a cat.", "b: c"]


@pytest.mark.parametrize(
    ("extra", "named", "nearest"),
    [
        (["--set", "lora.rnak=8"], "lora.rnak", "lora.rank"),
        (["--set", "max_step=3"], "max_step", "max_steps"),
        (["--set", "max_steps.x=3"], "max_steps.x", "max_steps"),
    ],
)
def test_unknown_key_is_one_line_naming_it_and_the_nearest(
    tmp_path: Path, extra: list[str], named: str, nearest: str
) -> None:
    result = _train(tmp_path, *extra)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert f"--set {named}: unknown setting" in lines[0] and nearest in lines[0]


def test_unknown_key_in_the_yaml_names_the_nearest_too(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("loss: {mask_wieght: 3}\n")
    result = _train(tmp_path, "-c", str(config))
    assert result.exit_code == 2
    assert "train.yaml: loss.mask_wieght: unknown setting; nearest: loss.mask_weight" in result.output


@pytest.mark.parametrize(
    ("extra", "first"),
    [
        (["--set", "max_steps=abc"], "max_steps: Input should be a valid integer"),
        (["--set", "max_steps=__import__('os')"], "max_steps: Input should be a valid integer"),
        (["--set", "lora.rank=0"], "lora.rank: Input should be greater than 0"),
        (["--set", "max_steps"], "--set 'max_steps': expected key.path=value"),
        (["--set", "seed=[1"], "--set 'seed=[1': the value is not valid YAML"),
    ],
)
def test_bad_value_is_one_line_naming_the_key(tmp_path: Path, extra: list[str], first: str) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("seed: 1\n")
    result = _train(tmp_path, "-c", str(config), *extra)
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and line.startswith(f"error: {first}"), line  # the flag's, not the file's


def test_usage_errors_are_one_line_with_exit_2(tmp_path: Path) -> None:
    for argv, problem in [
        (["train", "--max-steps", "x"], "Invalid value for '--max-steps'"),
        (["train", "--nope"], "No such option: --nope"),
        (["benchmark", "run"], "Missing argument"),
    ]:
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and result.output.startswith(f"error: {problem}"), result.output


def test_help_config_lists_every_key_with_its_documentation() -> None:
    from dreamrelation.config import TrainConfig
    from dreamrelation.config_keys import settable_keys

    result = CliRunner().invoke(app, ["train", "--help-config"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for key in settable_keys(TrainConfig):
        assert any(line.startswith(f"{key}:") for line in lines), key
    at = lines.index("loss.mask_weight: float = 50.0")  # type and default
    assert lines[at + 1] == "    λ_m: weight of the masked region in the enhanced diffusion loss"  # #:


def test_setting_flags_name_real_keys_and_repeat_no_default() -> None:
    """Every named flag of a config command is a declared shorthand for one --set key, and shows
    no default of its own (the config's is in --help-config)."""
    from dreamrelation.benchmark import BenchmarkConfig
    from dreamrelation.cli.options import flag_key
    from dreamrelation.config import CacheConfig, GenerateConfig, TrainConfig
    from dreamrelation.config_keys import is_settable
    from dreamrelation.evaluation.evaluate import EvaluateConfig
    from dreamrelation.prepare.config import MasksConfig, NtuConfig, VideosConfig
    from dreamrelation.toyworld.presets.experiment import ExperimentConfig
    from dreamrelation.toyworld.pretrain import PretrainConfig

    commands = {
        ("cache",): CacheConfig,
        ("train",): TrainConfig,
        ("generate",): GenerateConfig,
        ("evaluate",): EvaluateConfig,
        ("demo",): ExperimentConfig,
        ("benchmark", "run"): BenchmarkConfig,
        ("toy", "pretrain"): PretrainConfig,
        ("prepare", "ntu"): NtuConfig,
        ("prepare", "videos"): VideosConfig,
        ("masks",): MasksConfig,
    }
    root = typer.main.get_command(app)
    for path, cls in commands.items():
        command = root
        for name in path:
            command = command.get_command(None, name)  # type: ignore[union-attr,arg-type]
        options = {p.opts[0]: p for p in command.params if getattr(p, "opts", None)}
        assert "--set" in options and "--help-config" in options, path
        keys = [(flag, flag_key(p)) for flag, p in options.items() if flag_key(p)]
        for flag, key in keys:
            assert is_settable(cls, key), (path, flag, key)
            assert options[flag].show_default is False, (path, flag)
            assert options[flag].default is None, (path, flag)  # not given: the config decides


def test_every_field_is_reachable_without_per_field_code() -> None:
    """Any bool/int/float key of TrainConfig, however deep and whenever it was added, is set by
    --set's dotted key: nothing is wired per field."""
    from dreamrelation.config import TrainConfig, load_config
    from dreamrelation.config_keys import settable_keys

    required = {"cache": ["c"], "output": "o"}
    base = load_config(TrainConfig, sets=required)
    checked = 0
    for key in settable_keys(TrainConfig):
        default = attrgetter(key)(base)
        if isinstance(default, bool):
            value: object = not default
        elif isinstance(default, int):
            value = default + 1
        elif isinstance(default, float):
            value = default / 2 if default else 0.5
        else:
            continue
        cfg = load_config(TrainConfig, sets={**required, key: value})
        assert attrgetter(key)(cfg) == value, key
        checked += 1
    assert checked >= 30
