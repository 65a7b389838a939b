"""The command line (``dreamrelation``): :mod:`.app` builds it from one module per command group."""

from dreamrelation.cli.app import app, main

__all__ = ["app", "main"]
