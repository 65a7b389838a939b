"""The `dreamrelation` command line: the app, its error boundary's switch and its command groups.

data (`prepare`, `masks`) -> `cache` -> `train` -> LoRA file -> `generate` -> `evaluate`; `benchmark run`
compares methods, `export comfyui` converts a LoRA, `analyze` sits beside, `toy ...` is the toy world
(`demo` is also a top-level command: the README's first). One module per group; every config-driven
command takes an optional YAML config (validated before any work starts), `--set key.path=value` for
any of its settings and a few named flags for what users reach for every day, all through
``dreamrelation.cli.options``.
"""

from __future__ import annotations

import os
import warnings

import typer

from dreamrelation.cli import benchmark, caption, export, pipeline, prepare, toy, ui
from dreamrelation.cli.boundary import DEBUG, quiet_third_party
from dreamrelation.cli.lazy import LazyGroup
from dreamrelation.cli.options import EPILOG

app = typer.Typer(
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    help="DreamRelation: learn a relation between two subjects from a few videos, render it for new ones.",
)
prepare.register(app)  # `prepare ntu|videos`, `masks`: raw videos -> dataset folders
caption.register(app)  # `caption DATA`: captions proposed by a local vision-language model
pipeline.register(app)  # `cache`, `train`, `generate`, `evaluate`


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
) -> None:
    DEBUG["on"] = debug
    quiet_third_party(debug)


app.command("demo", epilog=EPILOG)(toy.demo)  # the README's main command, also `toy demo`
benchmark.register(app)  # `benchmark run`
export.register(app)  # `export comfyui`
toy.register(app)  # `toy demo|benchmark|pretrain`, `toy codec train|evaluate`: the toy world
ui.register(app)  # `ui`: the web UI, data -> train -> generate -> compare


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Library noise (deprecation notices, loading bars) would tear our progress bars apart.
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for library in ("diffusers", "transformers", "peft", "accelerate", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=library)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=library)
    # diffusers' Mochi RoPE asks for a float32 autocast that torch refuses, harmlessly, on every call
    warnings.filterwarnings("ignore", message="In CPU autocast", category=UserWarning)
    app()


if __name__ == "__main__":
    main()
