"""`dreamrelation caption DATA_FOLDER`: captions proposed by a local VLM (``prepare.captions``)."""

from __future__ import annotations

from pathlib import Path

import typer

from dreamrelation.cli.boundary import console, run_command
from dreamrelation.prepare.captions import DEFAULT_CAPTION_MODEL  # import-light: no torch


def caption(
    data: Path = typer.Argument(..., help="Dataset folder whose clips without a <clip>.txt get a caption."),
    model: str = typer.Option(
        DEFAULT_CAPTION_MODEL, "--model", help="Local VLM (the judge's family): hub id or folder."
    ),
    relation: str = typer.Option(
        None, "--relation", help="The relation (default: the folder's relation.txt, else its name)."
    ),
    frames: int = typer.Option(4, "--frames", min=1, help="Frames the model sees per clip."),
    device: str = typer.Option(None, "--device", help="auto (default), cpu, cuda, cuda:1 ..."),
    accept: bool = typer.Option(
        False, "--accept", help="Write the proposals as <clip>.txt (existing captions are kept)."
    ),
) -> None:
    """Propose a caption in the project's form for every clip that has none, with a local
    vision-language model (the judge's family). Proposals go to captions_proposed.json for you to
    confirm or edit; --accept writes them as <clip>.txt. The web UI shows the same proposals."""
    from dreamrelation.prepare.captions import (
        PROPOSALS_FILE,
        CaptionProposal,
        folder_relation,
        list_clips,
        load_caption_model,
        propose_captions,
        write_caption,
    )

    run_command(list_clips, data)
    run_command(folder_relation, data, relation)
    judge = run_command(load_caption_model, model, device)

    def on_clip(proposal: CaptionProposal) -> None:
        if proposal.status == "proposed":
            console.print(f"proposed {proposal.name}: {proposal.caption}", highlight=False)
        elif proposal.status == "failed":
            console.print(f"[bold red]failed[/] {proposal.message}", highlight=False)

    proposals = run_command(propose_captions, data, judge, relation, frames, on_clip)
    proposed = [p for p in proposals if p.status == "proposed"]
    if accept:
        for proposal in proposed:
            run_command(write_caption, data, proposal.name, proposal.caption, overwrite=False)
    done = "written as <clip>.txt" if accept else f"in {data / PROPOSALS_FILE} (--accept writes them)"
    console.print(
        f"{len(proposed)} proposed ({done}), {sum(p.status == 'captioned' for p in proposals)} had a "
        f"caption, {sum(p.status == 'failed' for p in proposals)} failed"
    )
    if any(p.status == "failed" for p in proposals):
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add `dreamrelation caption DATA_FOLDER` to the command line."""
    app.command("caption")(caption)
