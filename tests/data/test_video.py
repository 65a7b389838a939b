"""Reading and writing clips: round trips, frame selection, crop geometry, and errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dreamrelation.data import (
    count_frames,
    crop_geometry,
    frame_size,
    read_video,
    video_info,
    write_gif,
    write_video,
)
from dreamrelation.errors import InputError

# H.264 at crf 18 with 4:2:0 chroma keeps flat colours within a few levels.
CODEC_TOLERANCE = 12


def brightness_ramp(num_frames: int, height: int = 16, width: int = 16, step: int = 20) -> np.ndarray:
    """Frame i is uniformly grey with level i * step, so a decoded level identifies the frame."""
    levels = (np.arange(num_frames) * step).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def test_write_then_read_keeps_frame_count_shape_and_colours(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 200, 200), (30, 30, 30), (128, 64, 192)]
    frames = np.zeros((len(colours), 32, 48, 3), dtype=np.uint8)
    for i, colour in enumerate(colours):
        frames[i] = colour
    path = write_video(torch.from_numpy(frames), tmp_path / "clip.mp4", fps=8)

    assert count_frames(path) == len(colours)
    info = video_info(path)
    assert (info.num_frames, info.height, info.width, info.fps) == (len(colours), 32, 48, 8.0)

    video = read_video(path, num_frames=len(colours), height=32, width=48)
    assert video.dtype == torch.uint8
    assert video.shape == (len(colours), 32, 48, 3)
    centre = video[:, 16, 24].int()
    assert (centre - torch.tensor(colours)).abs().max() <= CODEC_TOLERANCE


def test_write_video_accepts_float_frames_in_unit_range(tmp_path):
    frames = np.full((3, 16, 16, 3), 0.5, dtype=np.float32)
    path = write_video(frames, tmp_path / "float.mp4")
    video = read_video(path, num_frames=3, height=16, width=16)
    assert abs(int(video[1, 8, 8, 0]) - 128) <= CODEC_TOLERANCE


def test_lossless_video_reads_back_the_exact_pixels_rounded_half_to_even(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.random((4, 18, 22, 3), dtype=np.float32)  # sprites' worst case: noise, every colour
    frames[0, 0, 0] = [182.5 / 255, 0.5 / 255, 1.5 / 255]  # ties: 182.5 -> 182 (even), 0.5 -> 0, 1.5 -> 2
    path = write_video(frames, tmp_path / "lossless.mp4", lossless=True)
    video = read_video(path, num_frames=4, height=18, width=22).numpy()
    expected = np.clip(np.round(frames * 255), 0, 255).astype(np.uint8)  # generate.to_uint8
    assert np.array_equal(video, expected)
    assert video[0, 0, 0].tolist() == [182, 0, 2]


def test_stride_and_start_pick_the_right_frames(tmp_path):
    path = write_video(brightness_ramp(12), tmp_path / "ramp.mp4")
    video = read_video(path, num_frames=3, height=16, width=16, frame_stride=3, start_frame=2)
    levels = video[:, 8, 8, 0].int()
    expected = torch.tensor([2, 5, 8]) * 20
    assert (levels - expected).abs().max() <= CODEC_TOLERANCE


def test_crop_geometry_fits_short_side_then_centres():
    geometry = crop_geometry(480, 848, 240, 240)
    assert (geometry.resized_height, geometry.resized_width) == (240, 424)
    assert (geometry.top, geometry.left) == (0, 92)
    tall = crop_geometry(100, 50, 40, 40)
    assert (tall.resized_height, tall.resized_width, tall.top, tall.left) == (80, 40, 20, 0)


def test_read_video_centre_crops_away_the_sides(tmp_path):
    # 40x80 frame: red | green | blue bands; a 20x20 crop of the half-size frame sees only green.
    frame = np.zeros((40, 80, 3), dtype=np.uint8)
    frame[:, :20] = (255, 0, 0)
    frame[:, 20:60] = (0, 255, 0)
    frame[:, 60:] = (0, 0, 255)
    path = write_video(np.stack([frame] * 2), tmp_path / "bands.mp4")
    video = read_video(path, num_frames=1, height=20, width=20)
    assert video.shape == (1, 20, 20, 3)
    interior = video[0, 2:-2, 2:-2].int()
    assert (interior - torch.tensor([0, 255, 0])).abs().max() <= 2 * CODEC_TOLERANCE


def test_odd_sizes_are_padded_to_even(tmp_path):
    path = write_video(np.zeros((2, 5, 7, 3), dtype=np.uint8), tmp_path / "odd.mp4")
    assert frame_size(path) == (6, 8)


def test_truncated_video_is_an_input_error_naming_the_file(tmp_path):
    good = write_video(brightness_ramp(8), tmp_path / "good.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(InputError, match="broken.mp4") as caught:
        read_video(broken, num_frames=2, height=16, width=16)
    assert "Fix:" in str(caught.value)


def test_garbage_file_is_an_input_error_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 50)
    with pytest.raises(InputError, match="garbage.mp4"):
        count_frames(garbage)


def test_missing_video_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_video(tmp_path / "nowhere.mp4", num_frames=1, height=8, width=8)


def test_too_few_frames_says_how_many_and_what_to_change(tmp_path):
    path = write_video(brightness_ramp(6), tmp_path / "short.mp4")
    with pytest.raises(InputError, match="short.mp4") as caught:
        read_video(path, num_frames=4, height=16, width=16, frame_stride=2)
    message = str(caught.value)
    assert "has 6 frames" in message
    assert "= 7" in message
    assert "lower num_frames or frame_stride" in message


def test_write_gif_upscales_with_nearest_and_leaves_no_temp_files(tmp_path):
    frames = brightness_ramp(4, height=6, width=5, step=60)
    path = write_gif(frames, tmp_path / "preview.gif", fps=4, scale=3)
    with Image.open(path) as gif:
        assert gif.size == (15, 18)
        assert gif.n_frames == 4
    assert [p.name for p in tmp_path.iterdir()] == ["preview.gif"]


def test_write_video_replaces_existing_file_atomically(tmp_path):
    target = tmp_path / "out" / "clip.mp4"
    write_video(brightness_ramp(3), target)
    write_video(brightness_ramp(5), target)
    assert count_frames(target) == 5
    assert [p.name for p in target.parent.iterdir()] == ["clip.mp4"]
