"""The dataset folder: pairing videos with captions and masks, decoding mask colours, aligning geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreamrelation.data import (
    VideoItem,
    check_item,
    decode_subject_labels,
    list_mask_files,
    load_subject_masks,
    read_video,
    scan_dataset,
    write_video,
)
from dreamrelation.errors import InputError

RED, GREEN = (255, 0, 0), (0, 255, 0)
Box = tuple[int, int, int, int]
CAPTION = "A person is shaking hands with a person."


def solid_mask(height: int, width: int, boxes: dict[tuple[int, int, int], Box]) -> Image.Image:
    """A black RGB mask with each colour painted in its (top, left, bottom, right) box."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    for colour, (top, left, bottom, right) in boxes.items():
        array[top:bottom, left:right] = colour
    return Image.fromarray(array)


def add_video(
    root: Path, name: str, num_frames: int = 4, size: tuple[int, int] = (24, 32), masks: bool = True
) -> None:
    """A clip, its caption and (optionally) one red/green mask PNG per frame."""
    height, width = size
    write_video(np.zeros((num_frames, height, width, 3), dtype=np.uint8), root / f"{name}.mp4")
    (root / f"{name}.txt").write_text(CAPTION + "\n")
    if masks:
        mask_dir = root / "masks" / name
        mask_dir.mkdir(parents=True)
        mask = solid_mask(height, width, {RED: (0, 0, 8, 8), GREEN: (8, 8, 16, 16)})
        for i in range(num_frames):
            mask.save(mask_dir / f"{i:05d}.png")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "shaking_hands"
    root.mkdir()
    for name in ("b_clip", "a_clip"):
        add_video(root, name)
    return root


def test_scan_finds_items_sorted_with_captions_masks_and_folder_relation(dataset):
    items = scan_dataset(dataset)
    assert [item.name for item in items] == ["a_clip", "b_clip"]
    assert items[0].caption == CAPTION
    assert items[0].video_path == dataset / "a_clip.mp4"
    assert items[0].mask_dir == dataset / "masks" / "a_clip"
    assert {item.relation for item in items} == {"shaking_hands"}


def test_relation_name_comes_from_relation_txt_or_the_argument(dataset):
    (dataset / "relation.txt").write_text("shaking hands\n")
    assert scan_dataset(dataset)[0].relation == "shaking hands"
    assert scan_dataset(dataset, relation="hugging")[0].relation == "hugging"


def test_missing_caption_names_the_expected_txt_and_suggests_one(dataset):
    (dataset / "a_clip.txt").unlink()
    with pytest.raises(InputError) as caught:
        scan_dataset(dataset)
    assert caught.value.path == dataset / "a_clip.txt"
    assert "a_clip.txt" in str(caught.value)
    assert "write the caption, e.g. 'A person is shaking hands with a person.'" in str(caught.value)


def test_empty_caption_is_an_error(dataset):
    (dataset / "b_clip.txt").write_text("  \n")
    with pytest.raises(InputError, match="b_clip.txt.*empty"):
        scan_dataset(dataset)


def test_caption_without_video_is_an_error(dataset):
    (dataset / "orphan.txt").write_text(CAPTION)
    with pytest.raises(InputError, match="orphan.txt.*no matching video"):
        scan_dataset(dataset)


def test_missing_root_and_empty_root_are_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        scan_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no videos"):
        scan_dataset(tmp_path / "empty")


def test_mask_folder_required_unless_told_otherwise(tmp_path):
    add_video(tmp_path, "clip", masks=False)
    with pytest.raises(InputError, match="masks/clip"):
        scan_dataset(tmp_path)
    assert scan_dataset(tmp_path, require_masks=False)[0].mask_dir is None


def test_mask_colours_decode_to_subjects_and_background(tmp_path):
    image = solid_mask(8, 8, {RED: (0, 0, 4, 4), GREEN: (4, 4, 8, 8)})
    array = np.asarray(image).copy()
    array[0, 7] = (240, 30, 20)  # near red, within tolerance
    array[7, 0] = (20, 20, 20)  # near black
    labels = decode_subject_labels(Image.fromarray(array), tmp_path / "m.png")
    assert labels[1, 1] == 1 and labels[0, 7] == 1
    assert labels[6, 6] == 2
    assert labels[7, 0] == 0 and labels[1, 6] == 0


def test_masks_load_as_two_binary_channels(dataset):
    item = scan_dataset(dataset)[0]
    masks = load_subject_masks(item, [0, 3], height=24, width=32)
    assert masks.dtype == torch.float32
    assert masks.shape == (2, 2, 24, 32)
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert masks[0, :, :8, :8].all() and masks[0].sum() == 2 * 64
    assert masks[1, :, 8:16, 8:16].all() and masks[1].sum() == 2 * 64


def test_rgba_and_palette_masks_are_accepted(tmp_path):
    image = solid_mask(8, 8, {RED: (0, 0, 4, 4)})
    image.convert("RGBA").save(tmp_path / "0.png")
    image.convert("P").save(tmp_path / "1.png")
    masks = load_subject_masks(tmp_path, [0, 1], height=8, width=8)
    assert masks[0, 0].sum() == 16 and masks[0, 1].sum() == 16


def test_unknown_colour_names_the_png_and_the_colour(tmp_path):
    solid_mask(8, 8, {(255, 255, 0): (2, 2, 4, 4)}).save(tmp_path / "00000.png")
    with pytest.raises(InputError, match=r"00000.png.*\(255, 255, 0\)") as caught:
        load_subject_masks(tmp_path, [0], height=8, width=8)
    assert "paint each subject" in str(caught.value)


def test_single_channel_mask_gets_a_hint(tmp_path):
    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(tmp_path / "00000.png")
    with pytest.raises(InputError, match="single-channel"):
        load_subject_masks(tmp_path, [0], height=8, width=8)


def test_unpadded_mask_names_sort_numerically(tmp_path):
    # Frame i has a red box at column i, so each loaded mask shows which file it came from.
    for i in range(12):
        solid_mask(4, 12, {RED: (0, i, 4, i + 1)}).save(tmp_path / f"{i}.png")
    assert [p.name for p in list_mask_files(tmp_path)][:4] == ["0.png", "1.png", "2.png", "3.png"]
    assert list_mask_files(tmp_path)[10].name == "10.png"
    masks = load_subject_masks(tmp_path, [2, 10], height=4, width=12)
    assert masks[0, 0, 0].nonzero().flatten().tolist() == [2]
    assert masks[0, 1, 0].nonzero().flatten().tolist() == [10]


def test_non_contiguous_mask_numbers_are_an_error(tmp_path):
    for i in (0, 1, 3):
        solid_mask(4, 4, {}).save(tmp_path / f"{i:05d}.png")
    with pytest.raises(InputError, match="not contiguous.*missing 2"):
        list_mask_files(tmp_path)


def test_missing_png_for_a_frame_says_found_vs_video_frames(dataset):
    item = scan_dataset(dataset)[0]
    with pytest.raises(InputError, match="no mask PNG for frame 5") as caught:
        load_subject_masks(item, [0, 5], height=24, width=32)
    message = str(caught.value)
    assert "found 4 PNGs vs 4 frames in a_clip.mp4" in message
    assert "one PNG per video frame" in message


def test_wrong_mask_count_fails_check_item(dataset):
    item = scan_dataset(dataset)[0]
    assert check_item(item, num_frames=4) == 4
    (item.mask_dir / "00003.png").unlink()
    with pytest.raises(InputError, match="3 mask PNGs but a_clip.mp4 has 4 frames"):
        check_item(item, num_frames=2)


def test_check_item_rejects_a_clip_too_short_for_the_sampling(dataset):
    item = scan_dataset(dataset)[0]
    with pytest.raises(InputError, match="has 4 frames"):
        check_item(item, num_frames=3, frame_stride=2)


def test_mask_size_must_match_the_video_frame_size(dataset):
    item = scan_dataset(dataset)[0]
    solid_mask(12, 16, {}).save(item.mask_dir / "00001.png")
    with pytest.raises(InputError, match=r"00001.png.*16x12.*32x24"):
        load_subject_masks(item, [1], height=24, width=32)


def test_corrupt_png_is_an_input_error(tmp_path):
    (tmp_path / "00000.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="00000.png.*cannot be read"):
        load_subject_masks(tmp_path, [0], height=4, width=4)


def test_mask_and_video_land_in_the_same_place_after_resize_and_crop(tmp_path):
    # 48x96 source, 32x48 target: scale 2/3 to 32x64, then 8 columns cropped from each side.
    frame = np.zeros((48, 96, 3), dtype=np.uint8)
    frame[12:36, 36:60] = RED
    add_video(tmp_path, "clip", num_frames=2, size=(48, 96), masks=False)
    write_video(np.stack([frame, frame]), tmp_path / "clip.mp4")
    mask_dir = tmp_path / "masks" / "clip"
    mask_dir.mkdir(parents=True)
    for i in range(2):
        solid_mask(48, 96, {RED: (12, 36, 36, 60)}).save(mask_dir / f"{i:05d}.png")
    item = scan_dataset(tmp_path)[0]

    video = read_video(item.video_path, num_frames=2, height=32, width=48)
    masks = load_subject_masks(item, [0, 1], height=32, width=48)

    expected = torch.zeros(32, 48)
    expected[8:24, 16:32] = 1
    assert torch.equal(masks[0, 0], expected)
    video_red = ((video[0, ..., 0].int() > 128) & (video[0, ..., 1].int() < 100)).float()
    intersection = (video_red * masks[0, 0]).sum()
    union = ((video_red + masks[0, 0]) > 0).float().sum()
    assert intersection / union > 0.85


def test_item_without_masks_cannot_load_masks(tmp_path):
    item = VideoItem("clip", tmp_path / "clip.mp4", CAPTION, None, "r")
    with pytest.raises(InputError, match="no mask folder"):
        load_subject_masks(item, [0], height=4, width=4)
