"""Errors a user can act on: every message names the file (or value) at fault and the fix."""

from __future__ import annotations

from pathlib import Path


class DreamRelationError(Exception):
    """Base class for errors caused by user input (data, config, checkpoints)."""


class InputError(DreamRelationError):
    """A file the user gave us is missing, corrupt or inconsistent.

    The message always names the path and says how to fix it.
    """

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        self.path = Path(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}. Fix: {fix}")


class ConfigError(DreamRelationError):
    """A configuration value is invalid; raised before any work starts."""


class TrainingError(DreamRelationError):
    """Training cannot go on (e.g. a non-finite loss); the message says what to change."""
