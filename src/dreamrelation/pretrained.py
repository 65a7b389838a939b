"""Loading a model a user named (a hub id or a local folder) with errors that say what to do.

transformers is quiet or cryptic in two ways that matter to us:

- a folder that does not exist, or a hub id not yet downloaded on an offline machine, surfaces as
  an ``OSError`` from deep inside; we name the folder or id and say how to get it;
- a checkpoint of another architecture (or a partial download) loads with its missing weights
  freshly, randomly initialised, and only a log line says so. A metric, a mask or a judge's answer
  computed by such a model would be noise, so every such model is loaded with
  ``output_loading_info=True`` and refused by :func:`require_all_weights` when a weight is missing.

Both raise :class:`~dreamrelation.errors.InputError` (exit code 2 from the CLI). Torch-free; the
callers import transformers themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dreamrelation.errors import InputError

T = TypeVar("T")


def resolve_source(kind: str, source: str) -> tuple[str, Path | None]:
    """``source`` as transformers should read it, and its local folder (None for a hub id).

    Anything that looks like a path (absolute, ``./``, ``~``, or existing) must be a folder.
    """
    path = Path(source).expanduser()
    if path.is_absolute() or source.startswith((".", "~")) or path.exists():
        if not path.is_dir():
            raise InputError(
                path, f"{kind} folder does not exist", "pass a folder saved with save_pretrained or a hub id"
            )
        return str(path), path
    return source, None


def load_pretrained(kind: str, source: str, loader: Callable[[str], T], example: str) -> T:
    """``loader(source)`` (a ``from_pretrained``), its failure turned into an InputError naming
    ``source`` and how to get it; ``example`` is a hub id that works."""
    target, local = resolve_source(kind, source)
    try:
        return loader(target)
    except (OSError, ValueError, KeyError) as error:
        raise InputError(
            local or Path(source),
            f"cannot load the {kind} ({type(error).__name__}: {' '.join(str(error).split())})",
            f"download it first (`hf download {source}` with network access) or pass a local folder "
            f"holding its config, weights and processor files; e.g. {example}",
        ) from error


def require_all_weights(kind: str, source: str, loading_info: dict[str, Any], example: str) -> None:
    """Refuse a checkpoint that left any of the model's weights unset (they would be random)."""
    missing = sorted(loading_info.get("missing_keys") or [])
    if missing:
        raise InputError(
            resolve_source(kind, source)[1] or Path(source),
            f"is not a complete {kind} checkpoint: {len(missing)} weights missing "
            f"({', '.join(missing[:3])}, ...), which would be random",
            f"give a {kind} checkpoint such as {example}, or re-download a partial one",
        )
