"""The CLI's error boundary: every command runs its work through :func:`run_command`, which turns the
project's errors (and a full disk or a refused permission) into one red line and exit code 2;
``--debug`` shows the traceback instead."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from dreamrelation.errors import DreamRelationError

console = Console(stderr=True)
#: ``--debug`` (set by the app's callback): raise instead of printing one line
DEBUG = {"on": False}
T = TypeVar("T")


#: the longest error line printed: a message names the culprit, it does not reprint a file
MAX_ERROR_CHARS = 1000


def one_line(message: str) -> str:
    """``message`` on one line, cut to ``MAX_ERROR_CHARS`` (a value echoed from a huge input)."""
    text = " ".join(message.split())
    if len(text) > MAX_ERROR_CHARS:
        text = f"{text[:MAX_ERROR_CHARS]}… ({len(text)} characters in all; --debug shows the whole error)"
    return text


def run_command(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` behind the error boundary."""
    from dreamrelation.files import disk_full_message

    quiet_loading_bars()
    try:
        return fn(*args, **kwargs)
    except DreamRelationError as exc:
        if DEBUG["on"]:
            raise
        console.print(f"[bold red]error:[/] {one_line(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        message = disk_full_message(exc)
        if message is None or DEBUG["on"]:
            raise
        console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def run_claimed(output: str | Path, command: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` behind the error boundary while this command holds its output folder
    (files.OutputClaim): one writer at a time, killed writers' temporaries removed, no empty folder
    left when it fails."""
    from dreamrelation.files import OutputClaim

    claim = OutputClaim(output, command)
    run_command(claim.claim)
    failed = True
    try:
        result = run_command(fn, *args, **kwargs)
        failed = False
        return result
    finally:
        claim.release(failed)


#: libraries that log at import, not about the user's command: diffusers imports bitsandbytes
#: whenever it is installed (8-bit AdamW asked for or not), and bitsandbytes then tries to fetch a
#: CPU kernel and warns "Failed to load CPU gemm_4bit_forward from kernels-community…"
NOISY_LOGGERS = ("bitsandbytes", "kernels")


def quiet_third_party(debug: bool) -> None:
    """Keep third-party import-time warnings off the user's terminal (``--debug`` shows them)."""
    import logging

    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.ERROR)


def quiet_loading_bars() -> None:
    """diffusers' "Loading pipeline components" bars would tear our progress bars apart; diffusers is
    imported lazily (inside the commands), so its switch is flipped here, once it is loaded.
    transformers' and huggingface_hub's bars follow HF_HUB_DISABLE_PROGRESS_BARS (set in main)."""
    diffusers = sys.modules.get("diffusers")
    if diffusers is not None and not DEBUG["on"]:
        diffusers.utils.logging.disable_progress_bar()
