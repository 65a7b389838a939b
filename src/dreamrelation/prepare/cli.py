"""`dreamrelation prepare ntu|videos` and `dreamrelation masks`: raw videos -> dataset folders.

Named flags for the essentials; every other setting of the command's config (see
``dreamrelation.prepare.config``) via ``--config file.yaml`` or a repeatable ``--set key=value``.
"""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.table import Table

from dreamrelation.errors import ConfigError, DreamRelationError

prepare_app = typer.Typer(no_args_is_help=True, add_completion=False)
console = Console(stderr=True)

CONFIG_OPT = typer.Option(None, "--config", "-c", help="YAML file with the command's settings.")
SET_OPT = typer.Option(
    None,
    "--set",
    help="Any other setting, e.g. --set min_frames=90 (repeatable; see docs/data_preparation.md).",
)


def _run(fn, *args, **kwargs):  # noqa: ANN001, ANN202 - the same error boundary as the main CLI
    try:
        return fn(*args, **kwargs)
    except DreamRelationError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None


def _parse_sets(pairs: list[str] | None) -> dict[str, object]:
    values: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set min_frames=90")
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML ({exc})") from exc
    return values


def _config(cls, config: Path | None, sets: list[str] | None, **named: object):  # noqa: ANN001, ANN202
    from dreamrelation.config import load_config

    overrides = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in named.items()}, **_parse_sets(sets)}
    return load_config(cls, config, **overrides)


@prepare_app.command("ntu")
def ntu(
    ntu_dir: Path = typer.Option(None, "--ntu", help="Your copy of NTU RGB+D (*_rgb.avi, any sub-folders)."),
    output: Path = typer.Option(None, "--output", "-o", help="Where the per-relation dataset folders go."),
    relations: str = typer.Option(
        None, "--relations", "-r", help="'all' (default) or e.g. shaking_hands,A055."
    ),
    clips: int = typer.Option(None, "--clips-per-relation", "-n", help="Clips per relation (default 20)."),
    seed: int = typer.Option(None, "--seed", help="Seed of the selection (default 0)."),
    config: Path = CONFIG_OPT,
    sets: list[str] = SET_OPT,
) -> None:
    """Pick ~20 clips per two-person relation from your NTU RGB+D copy, spread over performers and
    cameras; write one dataset folder per relation (clips, NTU-style captions, relation.txt)."""
    from dreamrelation.prepare.config import NtuConfig
    from dreamrelation.prepare.ntu import prepare_ntu

    cfg = _run(
        _config,
        NtuConfig,
        config,
        sets,
        ntu=ntu_dir,
        output=output,
        relations=relations,
        clips_per_relation=clips,
        seed=seed,
    )

    def on_skip(name: str, why: str) -> None:
        console.print(f"[yellow]skipped[/] {name}: {why}")

    scan, reports = _run(
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


@prepare_app.command("videos")
def videos(
    input_dir: Path = typer.Option(
        None, "--input", "-i", help="Folder of clips (+ captions, optional masks/)."
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Dataset folder to write."),
    backbone: str = typer.Option(
        None, "--backbone", help="mochi (default), wan, hunyuan or toy: its frame rule."
    ),
    num_frames: int = typer.Option(None, "--num-frames", help="Frames per clip (default 61)."),
    fps: float = typer.Option(None, "--fps", help="Resample to this frame rate first (default: keep)."),
    frames: str = typer.Option(None, "--frames", help="first (default), uniform or chunks."),
    config: Path = CONFIG_OPT,
    sets: list[str] = SET_OPT,
) -> None:
    """Resample, choose frames and resize/crop clips to a backbone's geometry (default 61 x 480 x 848);
    captions are copied and masks follow the same frames and crop."""
    from dreamrelation.prepare.config import VideosConfig
    from dreamrelation.prepare.videos import prepare_videos

    cfg = _run(
        _config,
        VideosConfig,
        config,
        sets,
        input=input_dir,
        output=output,
        backbone=backbone,
        num_frames=num_frames,
        fps=fps,
        frames=frames,
    )
    report = _run(prepare_videos, cfg, lambda name, what: console.print(f"{name} {what}"))
    console.print(
        f"wrote {len(report.written)} clips to {cfg.output}; skipped {len(report.skipped)} too-short clips"
        + (f" ({', '.join(n for n, _ in report.skipped)})" if report.skipped else "")
    )


def masks(
    data: list[Path] = typer.Option(None, "--data", help="Dataset folder (repeat for several)."),
    subjects: str = typer.Option(
        None, "--subjects", help="The two subject words, e.g. 'dog,cat' (default: caption)."
    ),
    detector: str = typer.Option(None, "--detector", help="Grounding DINO hub id or folder."),
    segmenter: str = typer.Option(None, "--segmenter", help="SAM hub id or folder."),
    device: str = typer.Option(None, "--device", help="auto (default), cpu, cuda ..."),
    overwrite: bool = typer.Option(
        None, "--overwrite/--resume", help="Redo clips that have masks (default: skip)."
    ),
    config: Path = CONFIG_OPT,
    sets: list[str] = SET_OPT,
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
    cfg = _run(
        _config,
        MasksConfig,
        config,
        sets,
        data=[str(p) for p in data] if data else None,
        subjects=words,
        detector=detector,
        segmenter=segmenter,
        device=device,
        overwrite=overwrite,
    )
    where = resolve_device(cfg.device)
    console.print(f"loading {cfg.detector} and {cfg.segmenter} on {where}")
    found = _run(
        GroundingDinoDetector.from_pretrained,
        cfg.detector,
        where,
        box_threshold=cfg.box_threshold,
        top_k=cfg.top_k,
    )
    sam = _run(SamSegmenter.from_pretrained, cfg.segmenter, where)

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

    summary = _run(make_masks, cfg, found, sam, on_clip, raise_on_failure=False)
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
    _run(summary.check)


def register(app: typer.Typer) -> None:
    """Add `prepare ntu|videos` and `masks` to the main command line."""
    app.add_typer(prepare_app, name="prepare", help="Raw videos -> dataset folders: NTU RGB+D, any clips.")
    app.command("masks")(masks)
