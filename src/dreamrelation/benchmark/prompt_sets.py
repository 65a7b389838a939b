"""Prompt sets drawn by code rather than read from a file, each with its own scorer.

A drawn set (the toy world's ``toy``) gives every (relation, seed) its own prompts, so the runner
neither shifts their noise seeds per benchmark seed nor needs another metric, and it scores the
rendered videos itself. Sets register on import; :data:`_LAZY` names the module that registers one,
imported the first time a config asks for it, so the runner never imports an application.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DrawnPromptSet:
    """A prompt set drawn per (relation, seed) and scored by its own code."""

    name: str
    #: the backbone whose videos it can score
    backbone: str
    #: the relations it can draw prompts for
    relations: Sequence[str]
    #: the fewest prompts per relation its scorer accepts
    min_per_relation: int
    #: (relation, count or None for its default, seed) -> prompt entries
    draw: Callable[[str, int | None, int], list[Any]]
    #: (videos folder, relation, dataset folder, count, seed) -> metric -> value
    score: Callable[[Path, str, Path, int | None, int], dict[str, float]]
    #: how a video folder's settings name the prompts
    label: str


_SETS: dict[str, DrawnPromptSet] = {}
_LAZY = {"toy": "dreamrelation.toyworld.prompt_set"}


def register_prompt_set(prompt_set: DrawnPromptSet) -> DrawnPromptSet:
    """Add a drawn prompt set (the toy world's registers itself on import)."""
    _SETS[prompt_set.name] = prompt_set
    return prompt_set


def drawn_prompt_set(name: str) -> DrawnPromptSet | None:
    """The drawn prompt set called ``name``, or None for a prompt file (``paper`` or a path)."""
    if name not in _SETS and name in _LAZY:
        import_module(_LAZY[name])
    return _SETS.get(name)
