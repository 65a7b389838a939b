"""`prepare videos`: each backbone's frame rule, frame choice, geometry, and masks kept aligned."""

from __future__ import annotations

import numpy as np
import pytest

from dreamrelation.backbones import backbone_class
from dreamrelation.data import check_item, load_subject_masks, read_video, scan_dataset, write_video
from dreamrelation.data.masks import temporal_groups
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.prepare.config import VideosConfig
from dreamrelation.prepare.videos import (
    check_geometry,
    choose_windows,
    frame_rule,
    nearest_bucket,
    prepare_videos,
    resample_indices,
)


@pytest.mark.parametrize(
    ("backbone", "valid", "invalid", "suggestion"),
    [
        ("mochi", [1, 7, 61, 85], [8, 60, 81], "use 79 or 85"),
        ("wan", [1, 5, 61, 81], [4, 60, 62], "use 81 or 85"),
        ("hunyuan", [1, 61, 81, 129], [2, 64], "use 81 or 85"),
        ("wan22_5b", [1, 5, 121], [4, 60, 120], "use 81 or 85"),
        ("wan22_a14b", [1, 5, 81], [4, 60, 62], "use 81 or 85"),
        ("hunyuan15", [1, 5, 121], [4, 60, 62], "use 81 or 85"),
        ("ltx2", [1, 9, 121], [5, 60, 82], "use 81 or 89"),
        ("wan22_a14b_i2v", [1, 5, 81], [4, 60, 62], "use 81 or 85"),
        ("hunyuan15_i2v", [1, 5, 121], [4, 60, 62], "use 81 or 85"),
        ("wan_i2v", [1, 5, 81], [4, 60, 62], "use 81 or 85"),
        ("toy", [2, 16, 60], [1, 15, 61, 81], "use 80 or 82"),
    ],
)
def test_frame_rule_matches_each_backbones_vae_grouping(backbone, valid, invalid, suggestion):
    rule = frame_rule(backbone)
    cls = backbone_class(backbone)
    for n in range(1, 131):  # agrees with the grouping the cache and training use
        try:
            temporal_groups(n, cls.temporal_factor, cls.first_frame_alone)
            groups_ok = True
        except ValueError:
            groups_ok = False
        assert rule.is_valid(n) == groups_ok, n
    assert all(rule.is_valid(n) for n in valid) and not any(rule.is_valid(n) for n in invalid)
    with pytest.raises(ConfigError, match=suggestion):
        check_geometry(rule, 81 if backbone in ("mochi", "toy") else 83, 480, 848)
    with pytest.raises(ConfigError, match="spatial factor"):
        check_geometry(rule, valid[-1], 481, 848)


def test_resample_keeps_duration_and_picks_floor_frames():
    assert resample_indices(9, 30.0, 15.0) == [0, 2, 4, 6, 8]
    assert resample_indices(10, 30.0, 24.0) == [0, 1, 2, 3, 5, 6, 7, 8]  # floor(k * 1.25)
    assert resample_indices(4, 12.0, 24.0) == [0, 0, 1, 1, 2, 2, 3]  # upsampling repeats frames
    assert resample_indices(5, 25.0, None) == [0, 1, 2, 3, 4]
    picked = resample_indices(300, 30.0, 8.0)  # 10 s at 30 fps -> 10 s at 8 fps
    assert len(picked) == 80 and picked[-1] <= 299


def test_frame_choice_first_uniform_chunks():
    assert choose_windows(20, 5, "first") == [[0, 1, 2, 3, 4]]
    assert choose_windows(21, 5, "uniform") == [[0, 5, 10, 15, 20]]
    assert choose_windows(13, 5, "chunks") == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert choose_windows(13, 5, "chunks", stride=4) == [list(range(s, s + 5)) for s in (0, 4, 8)]
    assert choose_windows(4, 5, "first") == [] and choose_windows(4, 5, "chunks") == []


def test_nearest_aspect_bucket():
    buckets = [(480, 848), (848, 480), (640, 640)]
    assert nearest_bucket(1080, 1920, buckets) == (480, 848)
    assert nearest_bucket(1920, 1080, buckets) == (848, 480)
    assert nearest_bucket(500, 520, buckets) == (640, 640)


def _config(make_dataset_root, out, **values) -> VideosConfig:
    return VideosConfig(input=make_dataset_root, output=out, crf=0, **values)


def test_prepared_clips_fit_the_backbone_and_masks_follow_the_same_frames(make_dataset, tmp_path):
    source = make_dataset(n_videos=2, num_frames=13)  # 32x32 at 8 fps, masks red/green
    report = prepare_videos(
        _config(
            source,
            tmp_path / "wan",
            backbone="wan",
            num_frames=5,
            height=16,
            width=24,
            frames="chunks",
            chunk_stride=4,
        )
    )
    assert sorted(p.name for p in report.written) == [f"clip{v}_c0{c}.mp4" for v in (0, 1) for c in (0, 1, 2)]
    items = scan_dataset(tmp_path / "wan")  # masks required: every clip has its folder
    for item in items:
        assert check_item(item, num_frames=5) == 5  # one mask PNG per frame
        chunk = int(item.name[-1])
        source_frames = list(range(4 * chunk, 4 * chunk + 5))
        clip = item.name.split("_")[0]
        expected = load_subject_masks(source / "masks" / clip, source_frames, 16, 24, video_size=(32, 32))
        written = load_subject_masks(item, list(range(5)), 16, 24)
        assert written.shape == (2, 5, 16, 24)
        assert torch_equal(written, expected)
        frames = read_video(item.video_path, 5, 16, 24).float()
        reference = read_video(source / f"{clip}.mp4", 13, 16, 24).float()
        # re-encoding (yuv420p) blurs colour, but each frame is still closest to the source frame chosen
        distances = (frames[:, None] - reference[None]).abs().mean(dim=(2, 3, 4))  # (5, 13)
        # (the fixture's squares move every other frame, so two source frames can tie)
        chosen = distances[range(5), source_frames]
        assert (chosen <= distances.min(dim=1).values + 1e-4).all()
        assert (chosen < distances.max(dim=1).values - 1).all()
    assert {i.caption for i in items} == {"a red square is shaking hands with a blue square."}


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_fps_resampling_and_uniform_choice_pick_the_right_mask_frames(make_dataset, tmp_path):
    source = make_dataset(n_videos=1, num_frames=13)
    prepare_videos(
        _config(source, tmp_path / "m", backbone="mochi", num_frames=7, fps=4.0, height=32, width=32)
    )
    item = scan_dataset(tmp_path / "m")[0]
    expected = load_subject_masks(source / "masks" / "clip0", [0, 2, 4, 6, 8, 10, 12], 32, 32)
    assert torch_equal(load_subject_masks(item, list(range(7)), 32, 32), expected)
    prepare_videos(
        _config(source, tmp_path / "u", backbone="toy", num_frames=4, frames="uniform", height=32, width=32)
    )
    item = scan_dataset(tmp_path / "u")[0]
    expected = load_subject_masks(source / "masks" / "clip0", [0, 4, 8, 12], 32, 32)
    assert torch_equal(load_subject_masks(item, list(range(4)), 32, 32), expected)


def test_buckets_short_clips_and_bad_geometry(make_dataset, tmp_path):
    source = make_dataset(n_videos=1, num_frames=13)
    short = np.full((3, 32, 32, 3), 40, np.uint8)
    write_video(short, source / "short.mp4")
    (source / "short.txt").write_text("a person is hugging a person.")
    (source / "masks" / "short").mkdir()
    lines = []
    report = prepare_videos(
        _config(
            source,
            tmp_path / "b",
            backbone="toy",
            num_frames=8,
            resize="bucket",
            buckets=[(16, 32), (32, 16), (24, 24)],
        ),
        on_clip=lambda name, what: lines.append(f"{name} {what}"),
    )
    assert [p.parent.name for p in report.written] == ["24x24"]
    assert report.skipped == [("short.mp4", "has 3 frames at 8 fps, fewer than num_frames=8")]
    assert any(line.startswith("short.mp4 skipped") for line in lines)
    with pytest.raises(ConfigError, match="use 7 or 13"):
        prepare_videos(_config(source, tmp_path / "x", backbone="mochi", num_frames=8, height=32, width=32))
    with pytest.raises(InputError, match="no clip is long enough"):
        prepare_videos(_config(source, tmp_path / "x", backbone="mochi", num_frames=61, height=32, width=32))


def test_cli_prepare_videos(make_dataset, tmp_path):
    from typer.testing import CliRunner

    from dreamrelation.cli import app

    source = make_dataset(n_videos=1, num_frames=13)
    args = ["prepare", "videos", "-i", str(source), "-o", str(tmp_path / "o"), "--backbone", "hunyuan"]
    result = CliRunner().invoke(app, [*args, "--num-frames", "9", "--set", "height=16", "--set", "width=16"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 clips" in result.output and "skipped 0 too-short clips" in result.output
    assert check_item(scan_dataset(tmp_path / "o")[0], num_frames=9) == 9
    bad = CliRunner().invoke(app, [*args, "--num-frames", "10"])
    assert bad.exit_code == 2 and "use 9 or 13" in bad.output
