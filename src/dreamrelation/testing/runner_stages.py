"""Helpers for testing the benchmark runner (`dreamrelation benchmark run` and its presets)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dreamrelation.benchmark import Stages


def counting_stages(calls: Counter) -> Stages:
    """The runner's real stages (cache, train, render), each counting its calls in ``calls``
    under its name: a rerun that redoes no work leaves ``calls`` unchanged."""
    from dreamrelation.benchmark import Stages, default_stages

    real = default_stages()

    def counted(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - passes the stage's result on
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    return Stages(
        build_cache=counted("cache", real.build_cache),
        train=counted("train", real.train),
        render=counted("render", real.render),
    )
