"""docs/config.md documents every YAML key, is up to date, and its examples are valid configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dreamrelation.config_docs import COMMANDS, all_keys, describe, render, rows

DOC = Path(__file__).parents[2] / "docs" / "config.md"


def test_the_page_is_up_to_date() -> None:
    assert DOC.read_text() == render(), "regenerate: python -m dreamrelation.config_docs > docs/config.md"


@pytest.mark.parametrize(("command", "cls"), COMMANDS)
def test_every_key_has_a_meaning_and_a_row(command: str, cls: type) -> None:
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
    assert len(blocks) == len(COMMANDS)
    for block, (_, cls) in zip(blocks, COMMANDS, strict=True):
        data = yaml.safe_load(block)
        assert _flatten(data) == set(all_keys(cls))
        config = cls.model_validate(data)
        for name, field in cls.model_fields.items():
            if not field.is_required() and name != "prompts":  # prompts shows an example prompt
                assert getattr(config, name) == field.get_default(call_default_factory=True), name


def test_section_rows_take_their_model_docstring() -> None:
    from dreamrelation.config import TrainConfig

    assert describe(TrainConfig, "loss").startswith("Hybrid Mask Training")


@pytest.mark.parametrize(("command", "cls"), COMMANDS)
def test_every_nested_section_forbids_unknown_keys(command: str, cls: type) -> None:
    from dreamrelation.config_docs import _nested_model

    seen, todo = set(), [cls]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        assert model.model_config.get("extra") == "forbid", f"{model.__name__} ignores unknown keys"
        todo += [m for f in model.model_fields.values() if (m := _nested_model(f.annotation)) is not None]
    assert len(seen) > 1
