"""`--help`: fast (no torch import), choices equal to the config's. (Defaults: --help-config, tested in
test_cli_set.py; no flag repeats one.)"""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import typer

from dreamrelation.cli import app
from dreamrelation.config import ModelSpec


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["--help"], "toy"),
        (["toy", "pretrain", "--help"], "--eval-prompt-seed"),
        (["toy", "codec", "evaluate", "--help"], "60606"),  # a default from toyworld.protocol
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_help_imports_no_heavy_library(argv: list[str], shown: str) -> None:
    """The toy commands' help too: their definitions live in cli_toy, the torch-bound library is
    imported only when a command runs."""
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom dreamrelation.cli import app\n"
        f"r = CliRunner().invoke(app, {argv!r})\n"
        f"assert r.exit_code == 0 and {shown!r} in r.output, r.output\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'peft') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _options(command: str) -> dict[str, typing.Any]:
    group = typer.main.get_command(app)
    return {p.opts[0]: p for p in group.commands[command].params if getattr(p, "opts", None)}


def test_choices_are_the_registry_and_the_config_literals() -> None:
    from dreamrelation.backbones import _LAZY, BACKBONES

    options = _options("train")
    choices = typing.get_args(options["--backbone"].type_descriptor.annotation)
    assert set(choices) == {*BACKBONES, *_LAZY}
    dtypes = typing.get_args(ModelSpec.model_fields["dtype"].annotation)
    assert typing.get_args(options["--dtype"].type_descriptor.annotation) == dtypes
    assert "tiny" not in (options["--model"].help or "")  # the test-only model is not offered


def test_library_noise_stays_out_of_a_real_run(tmp_path: Path) -> None:
    """The installed entry point: no loading bars, deprecation notices or warnings between our
    own progress bar and result lines (they tear rich's bars apart)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for key in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        env.pop(key, None)
    prompt = "a red triangle is hugging a blue circle on a dark background."
    done = subprocess.run(
        [sys.executable, "-m", "dreamrelation", "generate", "--backbone", "toy", "--model", "shipped",
         "--prompt", prompt, "--num-frames", "16", "--height", "32", "--width", "32", "--steps", "2",
         "--output", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for noise in ("Loading", "Warning", "deprecated", "There are modules"):
        assert noise not in done.stderr, done.stderr
    assert list(tmp_path.glob("*.mp4"))


def test_the_toy_library_defines_no_command_line() -> None:
    """STYLE 5: the toy world's modules are library; `dreamrelation toy ...` lives in cli/toy.py."""
    import ast

    import dreamrelation.toyworld

    for path in Path(dreamrelation.toyworld.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] != "typer", (path.name, name)
                assert not name.startswith("dreamrelation.cli"), (path.name, name)
