"""docs/config.md, generated from the config models: every YAML key with its type, default and meaning,
and a complete annotated example per command.

A key's meaning is its ``Field(description=...)``, else the ``#:`` comment above it in the source.
Regenerate after changing a config: ``python -m dreamrelation.config_docs > docs/config.md``
(tests/core/test_config_docs.py fails while the page is out of date).
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from dreamrelation.config import CacheConfig, GenerateConfig, TrainConfig
from dreamrelation.evaluation.evaluate import EvaluateConfig

COMMANDS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("cache", CacheConfig),
    ("train", TrainConfig),
    ("generate", GenerateConfig),
    ("evaluate", EvaluateConfig),
)


def _comments(cls: type[BaseModel]) -> dict[str, str]:
    """``#:`` comments written above each field in the class body."""
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and pending:
            found[match.group(1)] = " ".join(pending)
        pending = []
    return found


def describe(cls: type[BaseModel], name: str) -> str:
    """A key's meaning: its description, its ``#:`` comment, or (a section) its model's docstring."""
    field = cls.model_fields[name]
    meaning = field.description or _comments(cls).get(name, "")
    nested = _nested_model(field.annotation)
    if not meaning and nested is not None and nested.__doc__:
        meaning = nested.__doc__.strip().splitlines()[0]
    return meaning


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The config model inside a field's type (``X``, ``list[X]``, ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _type_name(annotation: Any) -> str:
    text = str(annotation) if not isinstance(annotation, type) else annotation.__name__
    text = re.sub(r"\b(typing|pathlib|dreamrelation\.\w+(\.\w+)*)\.", "", text)
    return text.replace("NoneType", "None")


def _default(cls: type[BaseModel], name: str) -> Any:
    field = cls.model_fields[name]
    if field.default is PydanticUndefined and field.default_factory is None:
        return PydanticUndefined
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return json.loads(json.dumps(value, default=str))


def rows(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, meaning) of every key, nested sections expanded."""
    out = []
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        default = _default(cls, name)
        shown = "required" if default is PydanticUndefined else f"`{json.dumps(default)}`"
        nested = _nested_model(field.annotation)
        out.append((key, _type_name(field.annotation), shown, describe(cls, name)))
        if nested is not None:
            is_list = typing.get_origin(field.annotation) is list
            out += rows(nested, f"{key}[].") if is_list else rows(nested, f"{key}.")
    return out


def all_keys(cls: type[BaseModel]) -> list[str]:
    return [row[0] for row in rows(cls)]


def _example(cls: type[BaseModel], command: str, indent: str = "") -> list[str]:
    """YAML lines with every key at its default (placeholders for required ones), commented."""
    lines = []
    for name, field in cls.model_fields.items():
        meaning = describe(cls, name)
        if meaning:
            lines.append(f"{indent}# {meaning}")
        nested = _nested_model(field.annotation)
        default = _default(cls, name)
        if nested is not None and typing.get_origin(field.annotation) is list:
            lines.append(f"{indent}{name}:")
            inner = _example(nested, command, indent + "    ")
            first = next(i for i, line in enumerate(inner) if not line.strip().startswith("#"))
            inner[first] = indent + "  - " + inner[first].strip()
            lines += inner
        elif nested is not None and default is not None:
            lines.append(f"{indent}{name}:")
            lines += _example(nested, command, indent + "  ")
        else:
            # a placeholder for required keys, and where the default alone would not validate
            needs_example = default is PydanticUndefined or (default == [] and name == "prompts")
            value = _placeholder(name, command) if needs_example else default
            lines.append(f"{indent}{name}: {json.dumps(value)}")
    return lines


def _placeholder(name: str, command: str) -> Any:
    return {
        "path": "data/shaking_hands",
        "output": {"cache": "runs/cache", "train": "runs/shaking_hands"}.get(command, "videos"),
        "cache": ["runs/cache"],
        "prompts": ["a cat is shaking hands with a dog."],
    }.get(name, "...")


def render() -> str:
    parts = [
        "# Configuration files\n",
        "Every command reads an optional YAML file (`--config FILE`) and a repeatable",
        "`--set key.path=value` that reaches any key below (`--set lora.rank=8`; the value is YAML:",
        "`--set adam_betas=[0.9,0.99]`, `--set max_grad_norm=null`). Precedence, lowest first: the",
        "defaults, the file, the named flags (`--max-steps`, … are shorthands for `--set`), `--set`.",
        "Unknown keys, at any depth, and keys given twice are errors, so a typo never falls back to a",
        "default silently; `dreamrelation COMMAND --help-config` lists the keys. Defaults are the paper's",
        "settings.",
        "This page is generated from the config models:",
        "`python -m dreamrelation.config_docs > docs/config.md`.\n",
    ]
    for command, cls in COMMANDS:
        parts.append(f"## `dreamrelation {command}` ({cls.__name__})\n")
        parts.append((cls.__doc__ or "").strip() + "\n")
        parts.append("| key | type | default | meaning |")
        parts.append("| --- | --- | --- | --- |")
        for key, kind, default, meaning in rows(cls):
            parts.append(f"| `{key}` | `{kind}` | {default} | {meaning} |".replace("|  |", "| |"))
        parts.append("\nA complete example (every key, at its default):\n")
        parts.append("```yaml")
        parts += _example(cls, command)
        parts.append("```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
