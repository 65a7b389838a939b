"""`dreamrelation prepare ntu`: dataset folders of the paper's relations from a user's NTU RGB+D copy.

NTU RGB+D (and NTU RGB+D 120) is licensed by its owners: the project never ships or fetches it. A
user points this at their own copy, either one folder of ``SsssCcccPpppRrrrAaaa_rgb.avi`` files or
the official per-archive folders (``nturgbd_rgb_s001/nturgb+d_rgb/...``): the search is recursive.

Selection per relation is deterministic given the seed and spreads over performers and camera views:
the candidates (sorted by name, shuffled by the seed) are taken performer by performer in turn, each
time the clip of that performer whose camera has been used least so far, so 20 clips come from up to
20 performers with the three cameras used about equally. A chosen clip that cannot be decoded or
is shorter than ``min_frames`` is reported by name and replaced by the next candidate.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dreamrelation.data.dataset import RELATION_FILE
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.files import atomic_target, write_text_atomic
from dreamrelation.relations import Relation, select_relations

NTU_NAME = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})_rgb\.avi$")


@dataclass(frozen=True)
class NtuClip:
    """One NTU RGB video: setup, camera, performer, replication and action from its file name."""

    path: Path
    setup: int
    camera: int
    performer: int
    replication: int
    action: int

    @property
    def name(self) -> str:
        """The file stem without ``_rgb``, e.g. ``S001C002P003R001A058``."""
        return self.path.name[: -len("_rgb.avi")]


def parse_ntu_name(path: str | Path) -> NtuClip | None:
    """The clip's fields, or None if the name is not ``SsssCcccPpppRrrrAaaa_rgb.avi``."""
    path = Path(path)
    match = NTU_NAME.match(path.name)
    if match is None:
        return None
    setup, camera, performer, replication, action = (int(g) for g in match.groups())
    return NtuClip(path, setup, camera, performer, replication, action)


@dataclass
class NtuScan:
    clips: list[NtuClip]
    #: .avi files whose names are not NTU RGB names (e.g. renamed copies), by path
    unrecognised: list[Path] = field(default_factory=list)
    #: a clip found twice (two archives) keeps the first path in sorted order
    duplicates: list[Path] = field(default_factory=list)


def scan_ntu(root: str | Path) -> NtuScan:
    """Every NTU RGB clip under ``root`` (recursively), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            root,
            "NTU folder does not exist" if not root.exists() else "is not a folder",
            "point --ntu to the folder holding your copy of the NTU RGB+D *_rgb.avi files",
        )
    seen: dict[str, NtuClip] = {}
    scan = NtuScan([])
    for path in sorted(root.rglob("*.avi")):
        clip = parse_ntu_name(path)
        if clip is None:
            scan.unrecognised.append(path)
        elif clip.name in seen:
            scan.duplicates.append(path)
        else:
            seen[clip.name] = clip
    scan.clips = sorted(seen.values(), key=lambda c: c.name)
    return scan


def selection_order(clips: Sequence[NtuClip], seed: int) -> list[NtuClip]:
    """All clips in the order they are chosen (module docstring): spread over performers and cameras."""
    clips = sorted(clips, key=lambda c: c.name)
    if not clips:
        return []
    rng = random.Random(f"{seed}:{clips[0].action}")  # a different pattern per relation
    shuffled = list(clips)
    rng.shuffle(shuffled)
    by_performer: dict[int, list[NtuClip]] = defaultdict(list)
    for clip in shuffled:
        by_performer[clip.performer].append(clip)
    performers = list(by_performer)  # order of first appearance in the shuffle
    camera_use: Counter[int] = Counter()
    order: list[NtuClip] = []
    while len(order) < len(clips):
        for performer in performers:
            pool = by_performer[performer]
            if not pool:
                continue
            pick = min(pool, key=lambda c: camera_use[c.camera])  # first of the least-used cameras
            pool.remove(pick)
            camera_use[pick.camera] += 1
            order.append(pick)
    return order


@dataclass
class RelationReport:
    relation: Relation
    available: int
    written: list[str]
    #: (clip file name, why it was skipped)
    skipped: list[tuple[str, str]]
    folder: Path


def _checked(clip: NtuClip, min_frames: int) -> str | None:
    """Why the clip cannot be used, or None. Decodes the whole clip (headers lie)."""
    from dreamrelation.data.video import video_info

    try:
        frames = video_info(clip.path).num_frames
    except InputError as error:
        return error.problem
    if frames < min_frames:
        return f"has {frames} frames, fewer than min_frames={min_frames}"
    return None


def _place(source: Path, target: Path, link: bool) -> None:
    """Copy (or hard-link) atomically; an existing target of the same size is kept (resumable)."""
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return
    with atomic_target(target) as temp:
        if link:
            os.link(source, temp)
        else:
            shutil.copyfile(source, temp)


def prepare_relation(
    relation: Relation,
    clips: Sequence[NtuClip],
    output: Path,
    clips_per_relation: int,
    seed: int,
    min_frames: int,
    link: bool = False,
    on_skip: Callable[[str, str], None] | None = None,
) -> RelationReport:
    """Write ``output/<relation>/``: the chosen clips, one caption each, and ``relation.txt``."""
    candidates = [c for c in clips if c.action == relation.action_id]
    folder = output / relation.name
    report = RelationReport(relation, len(candidates), [], [], folder)
    chosen: list[NtuClip] = []
    for clip in selection_order(candidates, seed):
        if len(chosen) >= clips_per_relation:
            break
        problem = _checked(clip, min_frames)
        if problem is not None:
            report.skipped.append((clip.path.name, problem))
            if on_skip is not None:
                on_skip(clip.path.name, problem)
            continue
        chosen.append(clip)
    if not chosen:
        return report
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / RELATION_FILE, relation.name + "\n")
    caption = relation.caption()
    for clip in sorted(chosen, key=lambda c: c.name):
        _place(clip.path, folder / f"{clip.name}.avi", link)
        write_text_atomic(folder / f"{clip.name}.txt", caption + "\n")
        report.written.append(clip.name)
    return report


def prepare_ntu(
    ntu: str | Path,
    output: str | Path,
    relations: str = "all",
    clips_per_relation: int = 20,
    seed: int = 0,
    min_frames: int = 61,
    link: bool = False,
    on_skip: Callable[[str, str], None] | None = None,
) -> tuple[NtuScan, list[RelationReport]]:
    """Scan the user's NTU copy and write one dataset folder per selected relation."""
    try:
        chosen: Iterable[Relation] = select_relations(relations)
    except KeyError as error:
        raise ConfigError(f"relations={relations!r}: {error.args[0]}") from None
    scan = scan_ntu(ntu)
    if not scan.clips:
        raise InputError(
            Path(ntu),
            "no NTU RGB clips found (looked for SsssCcccPpppRrrrAaaa_rgb.avi; "
            f"{len(scan.unrecognised)} other .avi files)",
            "point --ntu to the folder of your NTU RGB+D copy (the *_rgb.avi videos, not the skeletons)",
        )
    output = Path(output)
    reports = [
        prepare_relation(r, scan.clips, output, clips_per_relation, seed, min_frames, link, on_skip)
        for r in chosen
    ]
    return scan, reports
