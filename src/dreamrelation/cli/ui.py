"""`dreamrelation ui`: start the web UI (``dreamrelation.ui``; Gradio and torch load when it runs)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer

LOOPBACK = "127.0.0.1"
PASSWORD_ENV = "DREAMRELATION_UI_PASSWORD"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ui(
    root: list[Path] = typer.Option(
        None,
        "--root",
        help="A folder the UI may read and serve (repeatable; default: the current folder). Paths typed "
        "on the page must lie inside one; nothing outside is served.",
    ),
    host: str = typer.Option(LOOPBACK, "--host", help="Address to listen on (default: this machine only)."),
    port: int = typer.Option(7860, "--port", help="Port to listen on."),
    password: str = typer.Option(
        None,
        "--password",
        help=f"Ask for this password (user 'dreamrelation'); default: ${PASSWORD_ENV} when set.",
        show_default=False,
    ),
) -> None:
    """The web UI: data (clips, captions, masks) -> train (progress, loss, validation videos, stop /
    resume) -> generate (base and LoRA side by side) -> compare (benchmark and demo folders).
    Long work runs in the server: closing the page stops nothing. Needs Gradio (the package's `ui` extra)."""
    from rich.console import Console

    console = Console(stderr=True)
    try:
        import gradio  # noqa: F401
    except ImportError:
        console.print('[bold red]error:[/] the web UI needs Gradio; install it with pip install -e ".\\[ui]"')
        raise typer.Exit(2) from None
    roots = [p.expanduser().resolve() for p in (root or [Path.cwd()])]
    password = password or os.environ.get(PASSWORD_ENV) or None
    if not is_loopback(host):
        console.print(
            f"[bold yellow]warning:[/] --host {host} opens the UI to the network: anyone who reaches this "
            f"port can read the folders {', '.join(map(str, roots))} and start training"
            + ("" if password else f"; set a password with --password or ${PASSWORD_ENV}"),
            soft_wrap=True,
            highlight=False,
        )
    missing = [p for p in roots if not p.is_dir()]
    if missing:
        console.print(
            f"[bold red]error:[/] --root {missing[0]}: no such folder; create it or give another",
            soft_wrap=True,
            highlight=False,
        )
        raise typer.Exit(2)
    from dreamrelation.ui.app import launch

    console.print(
        f"dreamrelation ui on http://{host}:{port} (serving {', '.join(map(str, roots))}); Ctrl-C stops it",
        soft_wrap=True,
        highlight=False,
    )
    launch(roots, host=host, port=port, password=password)


def register(app: typer.Typer) -> None:
    """Add `dreamrelation ui` to the command line."""
    app.command("ui")(ui)
