"""Dotted setting keys (``lora.rank``) of a config model: parse ``key=value``, check, suggest.

The one path from the command line to a config: every ``--set key.path=value`` is parsed here (the
value as YAML, no code), its key checked against the model's fields (unknown keys are refused with
the nearest valid ones) and handed to :func:`dreamrelation.config.load_config`, which validates the
types. Plain pydantic introspection: no torch, nothing per field.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any

import yaml
from pydantic import BaseModel

from dreamrelation.errors import ConfigError
from dreamrelation.safe_yaml import safe_yaml_load


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config model a key can descend into: ``X`` or ``X | None`` (not ``list[X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, tuple, set, dict):
        return None
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_open_mapping(annotation: Any) -> bool:
    """A field whose sub-keys are data, not settings (``dict[str, ...]``, ``Any``)."""
    if annotation is Any or typing.get_origin(annotation) is dict:
        return True
    return any(_is_open_mapping(arg) for arg in typing.get_args(annotation))


def settable_keys(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key ``--set`` accepts, sections and their fields (``lora``, ``lora.rank``)."""
    keys: list[str] = []
    for name, field in cls.model_fields.items():
        keys.append(prefix + name)
        nested = _model_in(field.annotation)
        if nested is not None:
            keys += settable_keys(nested, f"{prefix}{name}.")
    return keys


def is_settable(cls: type[BaseModel], key: str) -> bool:
    model: type[BaseModel] | None = cls
    for part in key.split("."):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        if _is_open_mapping(annotation) and _model_in(annotation) is None:
            return True  # e.g. lora.placement.relation, benchmark's train.max_steps
        model = _model_in(annotation)
    return True


def nearest_keys(cls: type[BaseModel], key: str, n: int = 3) -> list[str]:
    """The valid keys closest to a misspelt one (whole dotted key, then its last part)."""
    keys = settable_keys(cls)
    found = difflib.get_close_matches(key, keys, n=n, cutoff=0.6)
    if not found:
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in reversed(keys)}
        found = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=n, cutoff=0.6)]
    return found


def unknown_key_message(cls: type[BaseModel], key: str, listing: str = "docs/config.md") -> str:
    near = nearest_keys(cls, key)
    hint = f"; nearest: {', '.join(near)}" if near else ""
    return f"{key}: unknown setting{hint} (every key: {listing})"


def parse_sets(pairs: typing.Iterable[str]) -> dict[str, object]:
    """``["lora.rank=8", "seeds=[0, 1]"]`` -> ``{"lora.rank": 8, "seeds": [0, 1]}``.

    Values are YAML scalars, lists or mappings (``safe_load``: never code); ``key=`` is an empty
    string and ``key=null`` is None. A key given twice: the last one wins, as on any command line.
    """
    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {pair!r}: expected key.path=value, e.g. --set lora.rank=8")
        try:
            values[key] = safe_yaml_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML ({problem})") from None
    return values


def check_keys(cls: type[BaseModel], keys: typing.Iterable[str], listing: str = "docs/config.md") -> None:
    """Refuse the first key ``cls`` has no setting for, naming the nearest valid ones."""
    for key in keys:
        if not is_settable(cls, key):
            raise ConfigError(f"--set {unknown_key_message(cls, key, listing)}")
