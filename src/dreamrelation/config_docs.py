"""docs/config.md, generated from the config models: every YAML key with its type, default and meaning,
and a complete annotated example, for every command that takes ``--config``/``--set``.

A key's meaning is its ``Field(description=...)``, else the ``#:`` comment above it in the source.
Regenerate after changing a config: ``python -m dreamrelation.config_docs > docs/config.md``
(tests/core/test_config_docs.py fails while the page is out of date, or when a command's
``--help-config`` reads a config that :data:`SECTIONS` does not list).
Imports no config module until a page is rendered: ``--help-config`` uses :func:`rows` alone.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

#: (the commands that read it, "module:Class") for every config read with --config/--set, in the
#: order of the data flow: raw videos -> dataset -> cache -> LoRA -> videos -> report; then the toy world
SECTIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("prepare ntu",), "dreamrelation.prepare.config:NtuConfig"),
    (("prepare videos",), "dreamrelation.prepare.config:VideosConfig"),
    (("masks",), "dreamrelation.prepare.config:MasksConfig"),
    (("cache",), "dreamrelation.config:CacheConfig"),
    (("train",), "dreamrelation.config:TrainConfig"),
    (("generate",), "dreamrelation.config:GenerateConfig"),
    (("evaluate",), "dreamrelation.evaluation.evaluate:EvaluateConfig"),
    (("benchmark run",), "dreamrelation.benchmark:BenchmarkConfig"),
    (("demo", "toy demo", "toy benchmark"), "dreamrelation.toyworld.presets.experiment:ExperimentConfig"),
    (("toy pretrain",), "dreamrelation.toyworld.pretrain:PretrainConfig"),
    (("toy codec train",), "dreamrelation.toyworld.codec:CodecConfig"),
)

#: example values where a key has no default (or its default alone would not validate), by the
#: model that holds the key; every other key of an example shows its default
PLACEHOLDERS: dict[str, dict[str, Any]] = {
    "NtuConfig": {"ntu": "NTU_RGBD", "output": "data"},
    "VideosConfig": {"input": "raw/shaking_hands", "output": "data/shaking_hands"},
    "MasksConfig": {"data": ["data/shaking_hands"]},
    "DataSource": {"path": "data/shaking_hands"},
    "CacheConfig": {"output": "runs/cache"},
    "TrainConfig": {"cache": ["runs/cache"], "output": "runs/shaking_hands"},
    "GenerateConfig": {"output": "videos", "prompts": ["a cat is shaking hands with a dog."]},
    "BenchmarkConfig": {"methods": ["dreamrelation", "direct_lora"]},
    "RelationData": {"name": "shaking_hands", "data": "data/shaking_hands"},
    "PretrainConfig": {"output": "runs/toy_base"},
    "CodecConfig": {"output": "runs/toy_codec"},
}


def sections() -> list[tuple[tuple[str, ...], type[BaseModel]]]:
    """:data:`SECTIONS` with each config class imported."""
    found = []
    for commands, target in SECTIONS:
        module, _, name = target.partition(":")
        found.append((commands, getattr(importlib.import_module(module), name)))
    return found


def _comments(cls: type[BaseModel]) -> dict[str, str]:
    """``#:`` comments written above each field in the class body (or in the body of the project's
    config class it inherits the field from)."""
    found: dict[str, str] = {}
    ours = [c for c in reversed(cls.__mro__) if c.__module__.startswith("dreamrelation")]
    for owner in ours:
        pending: list[str] = []
        for line in inspect.getsource(owner).splitlines():
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


def _is_mapping(annotation: Any) -> bool:
    """A ``dict[str, Model]`` field: its keys are names the user picks."""
    return typing.get_origin(annotation) is dict


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
    # a bounded type (Annotated[int, FieldInfo(... Ge(ge=0) ...)]) reads as its base type; the
    # bounds are the validator's business
    text = re.sub(r"Annotated\[(\w+), FieldInfo\([^\]]*\]\)\]", r"\1", text)
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
            if typing.get_origin(field.annotation) is list:
                out += rows(nested, f"{key}[].")
            elif _is_mapping(field.annotation):
                out += rows(nested, f"{key}.<name>.")
            else:
                out += rows(nested, f"{key}.")
    return out


def all_keys(cls: type[BaseModel]) -> list[str]:
    return [row[0] for row in rows(cls)]


def _example(cls: type[BaseModel], indent: str = "") -> list[str]:
    """YAML lines with every key at its default (:data:`PLACEHOLDERS` where it has none), commented."""
    lines = []
    placeholders = PLACEHOLDERS.get(cls.__name__, {})
    for name, field in cls.model_fields.items():
        meaning = describe(cls, name)
        if meaning:
            lines.append(f"{indent}# {meaning}")
        nested = _nested_model(field.annotation)
        default = _default(cls, name)
        if name in placeholders or default is PydanticUndefined and nested is None:
            lines.append(f"{indent}{name}: {json.dumps(placeholders.get(name, '...'))}")
        elif nested is not None and typing.get_origin(field.annotation) is list:
            lines.append(f"{indent}{name}:")
            inner = _example(nested, indent + "    ")
            first = next(i for i, line in enumerate(inner) if not line.strip().startswith("#"))
            inner[first] = indent + "  - " + inner[first].strip()
            lines += inner
        elif nested is not None and default is not None and not _is_mapping(field.annotation):
            lines.append(f"{indent}{name}:")
            lines += _example(nested, indent + "  ")
        else:
            lines.append(f"{indent}{name}: {json.dumps(default)}")
    return lines


def _heading(commands: tuple[str, ...], cls: type[BaseModel]) -> str:
    """A section's title: the command(s) that read the config, and the config's name."""
    return " and ".join(f"`dreamrelation {command}`" for command in commands) + f" ({cls.__name__})"


def _anchor(heading: str) -> str:
    """The link target Markdown renderers (GitHub, mkdocs) give a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


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
    parts.append("| command | its config |")
    parts.append("| --- | --- |")
    for commands, cls in sections():
        for command in commands:
            parts.append(
                f"| `dreamrelation {command}` | [{cls.__name__}](#{_anchor(_heading(commands, cls))}) |"
            )
    parts.append("")
    for commands, cls in sections():
        parts.append(f"## {_heading(commands, cls)}\n")
        parts.append(" ".join((cls.__doc__ or "").split()) + "\n")
        parts.append("| key | type | default | meaning |")
        parts.append("| --- | --- | --- | --- |")
        for key, kind, default, meaning in rows(cls):
            parts.append(f"| `{key}` | `{kind}` | {default} | {meaning} |".replace("|  |", "| |"))
        parts.append("\nA complete example (every key, at its default):\n")
        parts.append("```yaml")
        parts += _example(cls)
        parts.append("```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
