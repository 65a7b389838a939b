"""Flags -> config, the same way for every command (nanoGPT's configurator, checked by pydantic).

A config-driven command takes ``--config FILE``, a repeatable ``--set key.path=value`` that reaches
any field of its config, ``--help-config`` (every key with its type, default and meaning, from the
config's own field documentation) and a few named flags. A named flag is declared with
:func:`setting`, which records the key it sets; :func:`config_from_cli` collects every such flag
generically, so no command maps flags to fields by hand and no help text repeats a default.

Precedence, lowest first: the config's defaults < the YAML file < named flags < ``--set``.
Imports no torch: ``dreamrelation --help`` stays instant.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import click
import typer

#: how a named flag records its key: ``--max-steps`` is "Shorthand for --set max_steps=…"
_KEY_IN_HELP = re.compile(r"--set ([\w.]+)=…")

SET_HELP = (
    "Any setting of the command's config as --set key.path=value (e.g. lora.rank=8 for train; repeatable;"
    " YAML values; beats --config and the named flags). Every key: --help-config."
)
CONFIG_HELP = "YAML file with the command's settings (docs/config.md); flags given here override it."
EPILOG = (
    "Settings, lowest precedence first: defaults < --config FILE < named flags < --set key=value."
    " --help-config lists every key with its default and meaning."
)


def set_option() -> Any:
    return typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP)


def config_option() -> Any:
    return typer.Option(None, "--config", "-c", help=CONFIG_HELP)


def setting(key: str, *flags: str, help: str | None = None, **options: Any) -> Any:  # noqa: A002
    """A named flag for one config key; it goes the way of ``--set key=…``. ``help`` only for the
    essentials (data, cache, output, model): the meaning of every other key is in --help-config."""
    text = f"{help} (--set {key}=…)" if help else f"Shorthand for --set {key}=…"
    return typer.Option(None, *flags, help=text, show_default=False, **options)


def flag_key(param: click.Parameter) -> str | None:
    """The config key a named flag sets (None: not a setting)."""
    match = _KEY_IN_HELP.search(getattr(param, "help", None) or "")
    return match.group(1) if match else None


def help_config_option(target: str) -> Any:
    """``--help-config``: print every key of ``target`` ("module:Class") and exit."""

    def show(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if not value or ctx.resilient_parsing:
            return
        import importlib

        module, _, name = target.partition(":")
        print_config_help(getattr(importlib.import_module(module), name), ctx.command_path)
        ctx.exit()

    return typer.Option(
        False,
        "--help-config",
        is_eager=True,
        callback=show,
        help="List every setting (--set key) with its type, default and meaning, then exit.",
    )


def print_config_help(cls: type, command: str) -> None:
    """One entry per key: ``key: type = default`` and its meaning below (plain text, greppable)."""
    from dreamrelation.config_docs import rows

    listed = [row for row in rows(cls) if "[]" not in row[0]]  # list items are set as a whole list
    sections = {key.rsplit(".", 1)[0] for key, *_ in listed if "." in key}
    lines = [f"{command}: every setting of {cls.__name__} (--set KEY=VALUE, or KEY: VALUE in --config)", ""]
    for key, kind, default, meaning in listed:
        lines.append(f"{key}:" if key in sections else f"{key}: {kind} = {default.strip('`')}")
        if meaning:
            lines.append(f"    {meaning}")
    typer.echo("\n".join(lines))


def _plain(value: object) -> object:
    """A flag's value as YAML would give it (paths as text, tuples as lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def flag_settings(ctx: click.Context) -> dict[str, object]:
    """``{key: value}`` of every named setting flag given on this command line."""
    values: dict[str, object] = {}
    for param in ctx.command.params:
        key = flag_key(param)
        value = ctx.params.get(param.name) if param.name else None
        if key is None or value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        values[key] = _plain(value)
    return values


def config_from_cli(
    ctx: click.Context,
    cls: type,
    path: Path | None,
    sets: Sequence[str] | None,
    **named: object,
) -> Any:
    """The command's config: defaults < ``path`` < named flags (``named`` and every :func:`setting`
    flag) < ``--set``. Unknown ``--set`` keys and bad values end in one line naming the key."""
    from dreamrelation.config import load_config
    from dreamrelation.config_keys import check_keys, parse_sets

    values = parse_sets(sets or ())
    check_keys(cls, values, listing=f"{ctx.command_path} --help-config")
    overrides = {**flag_settings(ctx), **{k: _plain(v) for k, v in named.items() if v is not None}}
    return load_config(cls, path, sets=values, **overrides)


#: what --help shows; the values live in config.py's models (tests/core/test_cli_help.py keeps them equal)
BackboneChoice = (
    Literal[
        "mochi",
        "wan",
        "hunyuan",
        "wan22_5b",
        "wan22_a14b",
        "wan22_a14b_i2v",
        "wan_i2v",
        "hunyuan15",
        "hunyuan15_i2v",
        "ltx2",
        "toy",
    ]
    | None
)
DtypeChoice = Literal["float32", "bfloat16", "float16"] | None
BACKBONE_OPT = setting("model.backbone", "--backbone", help="Video backbone.")
MODEL_OPT = setting("model.model", "--model", help="Hub id or local diffusers folder.")
DTYPE_OPT = setting("model.dtype", "--dtype", help="Weights dtype.")
SET_OPT = set_option()
CONFIG_OPT = config_option()
