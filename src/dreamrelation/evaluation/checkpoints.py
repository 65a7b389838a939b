"""One check shared by the metric models: a checkpoint of another architecture loads into a
transformers class with its missing weights freshly (randomly) initialised, and only a log line
says so; a metric computed by such a model would be noise. So every metric model is loaded with
``output_loading_info=True`` and refused when any of its weights is missing."""

from __future__ import annotations

from dreamrelation.errors import ConfigError


def require_all_weights(model: str, loading_info: dict, what: str, example: str) -> None:
    """Raise a ConfigError naming ``model`` when its checkpoint left weights of ``what`` unset."""
    missing = sorted(loading_info.get("missing_keys") or [])
    if missing:
        raise ConfigError(
            f"{what} model {model!r} is not a {what} checkpoint: {len(missing)} weights missing "
            f"({', '.join(missing[:3])}, ...), which would be random; give a {what} checkpoint "
            f"such as {example}"
        )
