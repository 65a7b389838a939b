"""What the web UI's page shows, as HTML and images: messages (a user error in red, as the CLI prints it),
the training progress line (the CLI's bar: step of total, losses, adapter, ETA) and the loss curves."""

from __future__ import annotations

from typing import Any

from dreamrelation.errors import DreamRelationError
from dreamrelation.ui.training import TrainView

CSS = """
.dr-message p { margin: 0.2em 0; }
.dr-error { color: #b42318; font-weight: 600; }
#train-progress .bar { height: 14px; background: #e4e7ec; border-radius: 7px; overflow: hidden; }
#train-progress .fill { height: 100%; background: #2e90fa; }
"""


def error_text(error: BaseException) -> str:
    """One message for the page: a user error as the CLI prints it, anything else named by its type."""
    if isinstance(error, DreamRelationError):
        return f"error: {error}"
    if isinstance(error, OSError):
        from dreamrelation.files import disk_full_message

        return f"error: {disk_full_message(error) or error}"
    return f"error: {type(error).__name__}: {error}"


def message_html(text: str) -> str:
    """A message as HTML lines; one that starts with ``error:`` in the error style."""
    if text.startswith("error:"):
        body = text.removeprefix("error:").strip().replace("\n", "<br>")
        return f'<p class="dr-error">error: {escape(body)}</p>'
    return "".join(f"<p>{escape(line)}</p>" for line in text.splitlines())


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("&lt;br&gt;", "<br>")


def progress_html(view: TrainView) -> str:
    """The CLI's bar as HTML: state and phase, step of total, the last losses and adapter, the ETA."""
    percent = round(100 * view.fraction, 1)
    losses = ""
    if view.losses:
        _, _, reconstruction, contrastive = view.losses[-1]
        losses = f" · rec {reconstruction:.4f} rcl {contrastive:.4f} {escape(view.adapter)}"
    return (
        f'<div class="bar"><div class="fill" style="width:{percent}%"></div></div>'
        f'<p id="train-status">{view.state} · {view.phase} · step {view.step} / {view.total} · '
        f"ETA {view.eta}{losses}</p>"
    )


def loss_image(losses: list[tuple[int, float, float, float]]) -> Any:
    """The loss curves (total, reconstruction, contrastive) per step as an image; None before a step."""
    if not losses:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from PIL import Image

    steps = [row[0] for row in losses]
    figure = Figure(figsize=(9, 2.8), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    for column, label in ((1, "loss"), (2, "reconstruction"), (3, "contrastive")):
        axes.plot(steps, [row[column] for row in losses], label=label, linewidth=1.5)
    axes.set_xlabel("step")
    axes.set_yscale("symlog", linthresh=1e-3)
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return Image.open(io.BytesIO(buffer.getvalue()))
