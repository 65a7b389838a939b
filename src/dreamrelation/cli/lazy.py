"""Sub-command groups imported only when used, so `dreamrelation --help` answers without torch.

``analyze`` lives in modules that import torch and diffusers at the top; the main group lists it
from this table and imports it only when it is run (or its own --help is asked for).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click
import typer
from typer.core import TyperGroup

try:  # recent typer vendors click: its usage errors are typer._click's classes
    from typer._click import exceptions as _errors
except ImportError:  # pragma: no cover - typer on the click package
    from click import exceptions as _errors


def _analyze_app() -> typer.Typer:
    from dreamrelation.cli.analyze import analyze_app
    from dreamrelation.cli.maps import register

    if not getattr(analyze_app, "_maps_registered", False):
        register(analyze_app)
        analyze_app._maps_registered = True  # type: ignore[attr-defined]
    return analyze_app


#: name -> (loader of the Typer app, one-line help shown in the main --help)
LAZY_GROUPS = {
    "analyze": (_analyze_app, "Interpretability: Q/K/V subspaces, feature and attention maps."),
}


class LazyGroup(TyperGroup):
    """The main command group: its own commands plus :data:`LAZY_GROUPS`, loaded on first use."""

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_GROUPS if n not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_GROUPS and cmd_name not in self.commands:
            loader, short_help = LAZY_GROUPS[cmd_name]
            if self._listing:  # the main --help only needs the one-line description
                return click.Command(cmd_name, help=short_help, short_help=short_help)
            command = typer.main.get_command(loader())
            command.name = cmd_name
            command.help = command.help or short_help
            command.short_help = short_help
            self.commands[cmd_name] = command
        command = super().get_command(ctx, cmd_name)
        if self._listing and command is not None and not command.short_help and command.help:
            # the listing shows the first paragraph as one flowing line, not the docstring's breaks
            command.short_help = " ".join(command.help.split("\n\n")[0].split())
        return command

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """As click's, except that a usage error (unknown option, bad flag value, missing argument)
        ends like every other user error: one line naming the problem, exit code 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _errors.NoArgsIsHelpError as exc:  # a bare group: its help, as click does
            exc.show()
            sys.exit(exc.exit_code)
        except _errors.ClickException as exc:
            context = getattr(exc, "ctx", None)
            see = f" (`{context.command_path} --help` shows the options)" if context is not None else ""
            message = " ".join(exc.format_message().split())
            typer.echo(f"{typer.style('error:', fg='red', bold=True)} {message}{see}", err=True)
            sys.exit(2 if isinstance(exc, _errors.UsageError) else exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
