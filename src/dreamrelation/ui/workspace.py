"""The folders the web UI may read and serve: those given to ``dreamrelation ui --root``."""

from __future__ import annotations

from pathlib import Path

from dreamrelation.errors import ConfigError, InputError


class Workspace:
    """The folders the user chose (``dreamrelation ui --root``): every path the page names must lie
    inside one, and only files inside them are served."""

    def __init__(self, roots: list[str | Path]) -> None:
        self.roots = [Path(root).expanduser().resolve() for root in roots]

    def path(self, text: str | Path | None, what: str) -> Path:
        """``text`` as an absolute path inside a root (relative paths: inside the first root)."""
        text = str(text or "").strip()
        if not text:
            raise ConfigError(f"{what}: empty; give a folder inside {self.describe()}")
        path = Path(text).expanduser()
        path = (path if path.is_absolute() else self.roots[0] / path).resolve()
        if not any(path == root or root in path.parents for root in self.roots):
            raise InputError(
                path,
                f"the {what} is outside the folders this UI may read ({self.describe()})",
                "choose a folder inside them, or restart with `dreamrelation ui --root FOLDER`",
            )
        return path

    def describe(self) -> str:
        return ", ".join(str(root) for root in self.roots)
