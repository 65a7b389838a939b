"""docs/config.md documents every YAML key of every command's config, is up to date, and its examples
are valid configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from dreamrelation.config_docs import (
    PLACEHOLDERS,
    SECTIONS,
    all_keys,
    describe,
    render,
    rows,
    sections,
)

DOC = Path(__file__).parents[2] / "docs" / "config.md"
CONFIGS = sections()


def test_the_page_is_up_to_date() -> None:
    assert DOC.read_text() == render(), "regenerate: python -m dreamrelation.config_docs > docs/config.md"


@pytest.mark.parametrize(("commands", "cls"), CONFIGS)
def test_every_key_has_a_meaning_and_a_row(commands: tuple[str, ...], cls: type) -> None:
    text = DOC.read_text()
    for key, _, _, meaning in rows(cls):
        assert meaning, f"{cls.__name__}: `{key}` has no description (add a #: comment or description=)"
        assert f"| `{key}` |" in text


def _flatten(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            keys |= _flatten(value[0], f"{prefix}{key}[].")
        elif isinstance(value, dict) and not key.endswith(("placement", "ranks", "mask_colors")):
            keys |= _flatten(value, f"{prefix}{key}.")
    return keys


def test_examples_are_complete_and_validate_to_the_defaults() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == len(CONFIGS)
    for block, (_, cls) in zip(blocks, CONFIGS, strict=True):
        data = yaml.safe_load(block)
        # entries of a {name: settings} mapping are the user's to name: the example has none
        assert _flatten(data) == {key for key in all_keys(cls) if "<name>" not in key}
        config = cls.model_validate(data)
        examples = PLACEHOLDERS.get(cls.__name__, {})  # e.g. generate's prompts: an example prompt
        for name, field in cls.model_fields.items():
            if not field.is_required() and name not in examples:
                assert getattr(config, name) == field.get_default(call_default_factory=True), name


def _commands_with_help_config() -> dict[str, str]:
    """Every CLI command that takes --help-config -> the config class it lists (its first line)."""
    from dreamrelation.cli import app

    root = typer.main.get_command(app)
    found: dict[str, str] = {}

    def walk(group: object, path: list[str], ctx: object) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            sub = command.context_class(command, info_name=name, parent=ctx)
            if hasattr(command, "list_commands"):
                walk(command, [*path, name], sub)
            elif any("--help-config" in getattr(p, "opts", ()) for p in command.params):
                result = CliRunner().invoke(app, [*path, name, "--help-config"])
                assert result.exit_code == 0, result.output
                found[" ".join([*path, name])] = re.search(r"every setting of (\w+)", result.output).group(1)

    walk(root, [], root.context_class(root, info_name="dreamrelation"))
    return found


def test_every_command_with_a_config_has_its_section() -> None:
    documented = {command: cls.__name__ for commands, cls in CONFIGS for command in commands}
    assert _commands_with_help_config() == documented
    assert len(SECTIONS) == len({target for _, target in SECTIONS})  # one section per config
    for commands, cls in CONFIGS:
        heading = " and ".join(f"`dreamrelation {c}`" for c in commands) + f" ({cls.__name__})"
        assert f"## {heading}\n" in DOC.read_text()


def test_section_rows_take_their_model_docstring() -> None:
    from dreamrelation.config import TrainConfig

    assert describe(TrainConfig, "loss").startswith("Hybrid Mask Training")


@pytest.mark.parametrize(("commands", "cls"), CONFIGS)
def test_every_nested_section_forbids_unknown_keys(commands: tuple[str, ...], cls: type) -> None:
    from dreamrelation.config_docs import _nested_model

    seen, todo = set(), [cls]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        assert model.model_config.get("extra") == "forbid", f"{model.__name__} ignores unknown keys"
        todo += [m for f in model.model_fields.values() if (m := _nested_model(f.annotation)) is not None]
    has_sections = any(_nested_model(f.annotation) is not None for f in cls.model_fields.values())
    assert len(seen) > 1 or not has_sections  # the walk reached the nested sections
