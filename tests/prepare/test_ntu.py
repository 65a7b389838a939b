"""NTU RGB+D ingestion on a folder of small generated AVI clips named the NTU way."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from dreamrelation.cli import app
from dreamrelation.data import scan_dataset
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.prepare.ntu import parse_ntu_name, prepare_ntu, scan_ntu, selection_order


def write_avi(path: Path, num_frames: int = 10, size: int = 16, shade: int = 0) -> Path:
    """A real AVI (MPEG-4 part 2), like the NTU RGB files but tiny."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for f in range(num_frames):
            image = np.full((size, size, 3), (shade * 7 + f * 10) % 256, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def ntu_name(setup: int, camera: int, performer: int, replication: int, action: int) -> str:
    return f"S{setup:03d}C{camera:03d}P{performer:03d}R{replication:03d}A{action:03d}_rgb.avi"


@pytest.fixture(scope="module")
def ntu_copy(tmp_path_factory) -> Path:
    """Two official-style archive folders: A058 by 8 performers x 3 cameras, A055 by 2 x 3, plus
    noise: a renamed copy, a duplicate across archives, a corrupt clip, a too-short clip."""
    root = tmp_path_factory.mktemp("ntu")
    for performer in range(1, 9):
        archive = "nturgbd_rgb_s001" if performer <= 4 else "nturgbd_rgb_s002"
        for camera in (1, 2, 3):
            name = ntu_name(1 + (performer > 4), camera, performer, 1, 58)
            write_avi(root / archive / "nturgb+d_rgb" / name, shade=performer * 3 + camera)
    for performer in (1, 2):
        for camera in (1, 2, 3):
            write_avi(root / "nturgbd_rgb_s001" / "nturgb+d_rgb" / ntu_name(1, camera, performer, 2, 55))
    write_avi(root / "loose" / "my_handshake.avi")  # not an NTU name
    # the same clip in a second archive
    write_avi(root / "zz_extra" / ntu_name(1, 1, 1, 1, 58))
    # an unreadable clip and a too-short clip of A055 by a third performer
    (root / "nturgbd_rgb_s001" / "nturgb+d_rgb" / ntu_name(1, 1, 3, 1, 55)).write_bytes(b"not a video")
    write_avi(root / "nturgbd_rgb_s001" / "nturgb+d_rgb" / ntu_name(1, 2, 3, 1, 55), num_frames=3)
    return root


def test_parse_ntu_file_name():
    clip = parse_ntu_name("x/S017C003P020R002A120_rgb.avi")
    assert (clip.setup, clip.camera, clip.performer, clip.replication, clip.action) == (17, 3, 20, 2, 120)
    assert clip.name == "S017C003P020R002A120"
    assert parse_ntu_name("S017C003P020R002A120.skeleton") is None
    assert parse_ntu_name("S17C3P20R2A120_rgb.avi") is None


def test_scan_is_recursive_and_reports_odd_files(ntu_copy):
    scan = scan_ntu(ntu_copy)
    assert len(scan.clips) == 8 * 3 + 2 * 3 + 2
    assert [p.name for p in scan.unrecognised] == ["my_handshake.avi"]
    assert [p.parent.name for p in scan.duplicates] == ["zz_extra"]


def test_selection_is_deterministic_and_spread_over_performers_and_cameras(ntu_copy):
    clips = [c for c in scan_ntu(ntu_copy).clips if c.action == 58]
    first = selection_order(clips, seed=0)
    assert [c.name for c in first] == [c.name for c in selection_order(list(reversed(clips)), seed=0)]
    assert [c.name for c in first] != [c.name for c in selection_order(clips, seed=1)]
    assert sorted(c.name for c in first) == sorted(c.name for c in clips)  # a ranking of all of them
    six = first[:6]
    assert len({c.performer for c in six}) == 6  # 8 performers available: no repeats
    assert sorted(Counter(c.camera for c in six).values()) == [2, 2, 2]
    eight = first[:8]  # every performer once, then the cameras stay within one of each other
    assert len({c.performer for c in eight}) == 8
    counts = Counter(c.camera for c in first[:16]).values()
    assert max(counts) - min(counts) <= 1


def test_prepare_writes_dataset_folders_and_names_skipped_clips(ntu_copy, tmp_path):
    skipped = []
    scan, reports = prepare_ntu(
        ntu_copy,
        tmp_path / "out",
        "A058,hugging",
        clips_per_relation=6,
        seed=0,
        min_frames=5,
        on_skip=lambda name, why: skipped.append((name, why)),
    )
    by_name = {r.relation.name: r for r in reports}
    assert len(by_name["shaking_hands"].written) == 6 and by_name["shaking_hands"].skipped == []
    hugging = by_name["hugging"]
    # 6 good A055 clips; the corrupt and the short one are ranked in (3rd performer) and skipped by name
    assert len(hugging.written) == 6
    skipped_names = {name for name, _ in hugging.skipped}
    assert skipped_names == {"S001C001P003R001A055_rgb.avi", "S001C002P003R001A055_rgb.avi"}
    assert any("3 frames, fewer than min_frames=5" in why for _, why in hugging.skipped)
    assert sorted(skipped) == sorted(hugging.skipped)

    folder = tmp_path / "out" / "shaking_hands"
    items = scan_dataset(folder, require_masks=False)
    assert [i.relation for i in items] == ["shaking_hands"] * 6
    assert {i.caption for i in items} == {"A person is shaking hands with a person."}
    assert {i.name for i in items} == set(by_name["shaking_hands"].written)
    # resumable: a second run writes the same selection and keeps the copies
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.avi")}
    _, again = prepare_ntu(ntu_copy, tmp_path / "out", "A058", clips_per_relation=6, min_frames=5)
    assert again[0].written == by_name["shaking_hands"].written
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.avi")} == mtimes


def test_bad_inputs_are_clear_errors(ntu_copy, tmp_path):
    with pytest.raises(InputError, match="NTU folder does not exist"):
        prepare_ntu(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no NTU RGB clips found"):
        prepare_ntu(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown relation 'handshake'"):
        prepare_ntu(ntu_copy, tmp_path / "out", "handshake")


def test_cli_prepare_ntu_prints_the_skip_count(ntu_copy, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "prepare",
            "ntu",
            "--ntu",
            str(ntu_copy),
            "-o",
            str(tmp_path / "o"),
            "-r",
            "A055",
            "-n",
            "7",
            "--set",
            "min_frames=5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "skipped 2 unreadable or too-short clips" in result.output
    assert "S001C001P003R001A055_rgb.avi" in result.output
    assert "only 6 usable clips of 7" in result.output
    bad = CliRunner().invoke(app, ["prepare", "ntu", "--ntu", str(ntu_copy), "-o", "x", "--set", "nope=1"])
    assert bad.exit_code == 2 and "nope" in bad.output
