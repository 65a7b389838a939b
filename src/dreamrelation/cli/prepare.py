"""`dreamrelation prepare ntu|videos` and `dreamrelation masks`: raw videos -> dataset folders.

Named flags for the essentials; every other setting of the command's config (see
``dreamrelation.prepare.config``) via ``--config file.yaml`` or a repeatable ``--set key=value``.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dreamrelation.cli.boundary import run_command
from dreamrelation.cli.options import (
    EPILOG,
    config_from_cli,
    config_option,
    help_config_option,
    set_option,
    setting,
)

prepare_app = typer.Typer(no_args_is_help=True, add_completion=False)
console = Console(stderr=True)

CONFIG_OPT = config_option()
SET_OPT = set_option()


@prepare_app.command("ntu", epilog=EPILOG)
def ntu(
    ctx: typer.Context,
    ntu_dir: Path = setting("ntu", "--ntu", help="Your copy of NTU RGB+D (*_rgb.avi, any sub-folders)."),
    output: Path = setting("output", "--output", "-o", help="Where the per-relation dataset folders go."),
    config: Path = CONFIG_OPT,
    sets: list[str] = SET_OPT,
    # named flags for what users reach for every day; each is exactly --set KEY=VALUE
    relations: str = setting("relations", "--relations", "-r"),
    clips: int = setting("clips_per_relation", "--clips-per-relation", "-n"),
    seed: int = setting("seed", "--seed"),
    help_config: bool = help_config_option("dreamrelation.prepare.config:NtuConfig"),
) -> None:
    """Pick ~20 clips per two-person relation from your NTU RGB+D copy, spread over performers and
    cameras; write one dataset folder per relation (clips, NTU-style captions, relation.txt)."""
    from dreamrelation.prepare.config import NtuConfig
    from dreamrelation.prepare.ntu import prepare_ntu

    cfg = run_command(config_from_cli, ctx, NtuConfig, config, sets)

    def on_skip(name: str, why: str) -> None:
        console.print(f"[yellow]skipped[/] {name}: {why}")

    scan, reports = run_command(
        prepare_ntu,
        cfg.ntu,
        cfg.output,
        cfg.relations,
        cfg.clips_per_relation,
        cfg.seed,
        cfg.min_frames,
        cfg.link,
        on_skip,
    )
    if scan.unrecognised:
        console.print(
            f"{len(scan.unrecognised)} .avi files with non-NTU names ignored, e.g. {scan.unrecognised[0]}"
        )
    if scan.duplicates:
        console.print(
            f"{len(scan.duplicates)} clips found twice; kept the first copy, e.g. {scan.duplicates[0]}"
        )
    table = Table(title=f"NTU RGB+D -> {cfg.output}")
    for column in ("relation", "code", "available", "written", "skipped"):
        table.add_column(column)
    for r in reports:
        table.add_row(
            r.relation.name, r.relation.code, str(r.available), str(len(r.written)), str(len(r.skipped))
        )
    Console().print(table)
    skipped = sum(len(r.skipped) for r in reports)
    console.print(f"skipped {skipped} unreadable or too-short clips (named above)")
    short = [r for r in reports if len(r.written) < cfg.clips_per_relation]
    for r in short:
        console.print(
            f"[yellow]note:[/] {r.relation.name}: only {len(r.written)} usable clips of "
            f"{cfg.clips_per_relation} ({r.available} in your copy)"
        )


@prepare_app.command("videos", epilog=EPILOG)
def videos(
    ctx: typer.Context,
    input_dir: Path = setting(
        "input", "--input", "-i", help="Folder of clips (+ captions, optional masks/)."
    ),
    output: Path = setting("output", "--output", "-o", help="Dataset folder to write."),
    backbone: str = setting("backbone", "--backbone", help="mochi, wan, hunyuan or toy: its frame rule."),
    config: Path = CONFIG_OPT,
    sets: list[str] = SET_OPT,
    # named flags for what users reach for every day; each is exactly --set KEY=VALUE
    num_frames: int = setting("num_frames", "--num-frames"),
    fps: float = setting("fps", "--fps"),
    frames: str = setting("frames", "--frames"),
    help_config: bool = help_config_option("dreamrelation.prepare.config:VideosConfig"),
) -> None:
    """Resample, choose frames and resize/crop clips to a backbone's geometry (default 61 x 480 x 848);
    captions are copied and masks follow the same frames and crop."""
    from dreamrelation.prepare.config import VideosConfig
    from dreamrelation.prepare.videos import prepare_videos

    cfg = run_command(config_from_cli, ctx, VideosConfig, config, sets)
    report = run_command(prepare_videos, cfg, lambda name, what: console.print(f"{name} {what}"))
    console.print(
        f"wrote {len(report.written)} clips to {cfg.output}; skipped {len(report.skipped)} too-short clips"
        + (f" ({', '.join(n for n, _ in report.skipped)})" if report.skipped else "")
    )


def masks(
    ctx: typer.Context,
    data: list[Path] = setting("data", "--data", help="Dataset folder (repeat for several)."),
    subjects: str = typer.Option(
        None, "--subjects", help="The two subject words, e.g. 'dog,cat' (--set subjects=[dog, cat])."
    ),
    config: Path = CONFIG_OPT,
    sets: list[str] = SET_OPT,
    # named flags for what users reach for every day; each is exactly --set KEY=VALUE
    detector: str = setting("detector", "--detector"),
    segmenter: str = setting("segmenter", "--segmenter"),
    device: str = setting("device", "--device"),
    overwrite: bool = setting("overwrite", "--overwrite/--resume"),
    help_config: bool = help_config_option("dreamrelation.prepare.config:MasksConfig"),
) -> None:
    """Subject masks with Grounding DINO (boxes) + SAM (masks): masks/<clip>/00000.png ..., subject 1
    red, subject 2 green; previews/<clip>.gif and masks_summary.json beside them. Resumable.

    Defaults: IDEA-Research/grounding-dino-tiny and facebook/sam-vit-base. Subject 1 is the caption's
    first subject; when both words are the same, the leftmost in the first frame where both are found.
    """
    from dreamrelation.devices import resolve_device
    from dreamrelation.prepare.config import MasksConfig
    from dreamrelation.prepare.masking import make_masks
    from dreamrelation.prepare.segmenters import GroundingDinoDetector, SamSegmenter

    words = None
    if subjects is not None:
        words = [w.strip() for w in subjects.split(",")]
        if len(words) != 2 or not all(words):
            console.print(f"[bold red]error:[/] --subjects {subjects!r}: give two words, e.g. 'dog,cat'")
            raise typer.Exit(2)
    cfg = run_command(config_from_cli, ctx, MasksConfig, config, sets, subjects=words)
    where = resolve_device(cfg.device)
    console.print(f"loading {cfg.detector} and {cfg.segmenter} on {where}")
    found = run_command(
        GroundingDinoDetector.from_pretrained,
        cfg.detector,
        where,
        box_threshold=cfg.box_threshold,
        top_k=cfg.top_k,
    )
    sam = run_command(SamSegmenter.from_pretrained, cfg.segmenter, where)

    def on_clip(report) -> None:  # noqa: ANN001
        if report.status == "failed":
            console.print(f"[bold red]failed[/] {report.message}")
            return
        missing = len(set(report.missing_frames[0]) | set(report.missing_frames[1]))
        console.print(
            f"{report.status} {report.name}"
            + (
                f": {report.frames} frames, {missing} with a subject filled in, "
                f"{len(report.suspected_swaps)} suspected swaps"
                if report.status == "done"
                else ""
            )
        )

    summary = run_command(make_masks, cfg, found, sam, on_clip, raise_on_failure=False)
    table = Table(title="masks")
    for column in ("clips done", "skipped (had masks)", "frames with a missing subject", "suspected swaps"):
        table.add_column(column)
    table.add_row(
        str(summary.count("done")),
        str(summary.count("skipped")),
        str(summary.frames_with_missing_subject),
        str(summary.suspected_swaps),
    )
    Console().print(table)
    run_command(summary.check)


def register(app: typer.Typer) -> None:
    """Add `prepare ntu|videos` and `masks` to the main command line."""
    app.add_typer(prepare_app, name="prepare", help="Raw videos -> dataset folders: NTU RGB+D, any clips.")
    app.command("masks", epilog=EPILOG)(masks)
