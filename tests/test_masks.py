"""Temporal groups, relation masks and latent masks, checked against hand-worked examples."""

from __future__ import annotations

import pytest
import torch

from dreamrelation.data.masks import latent_masks, relation_mask, temporal_groups

# ---------------------------------------------------------------- temporal groups


def test_temporal_groups_for_mochi_61_frames_gives_11_groups() -> None:
    groups = temporal_groups(61, 6)
    assert len(groups) == 11
    assert groups[0] == [0]
    assert groups[1] == [1, 2, 3, 4, 5, 6]
    assert groups[2] == [7, 8, 9, 10, 11, 12]
    assert groups[-1] == [55, 56, 57, 58, 59, 60]
    assert [i for group in groups for i in group] == list(range(61))


def test_temporal_groups_without_first_frame_alone_are_plain_chunks() -> None:
    assert temporal_groups(6, 3, first_frame_alone=False) == [[0, 1, 2], [3, 4, 5]]
    assert temporal_groups(1, 6) == [[0]]


def test_temporal_groups_names_the_valid_counts_when_frames_do_not_fit() -> None:
    with pytest.raises(ValueError, match=r"1 \+ 6k.*55 or 61"):
        temporal_groups(60, 6)
    with pytest.raises(ValueError, match="multiples of 4"):
        temporal_groups(10, 4, first_frame_alone=False)


# ---------------------------------------------------------------- relation mask


def _two_squares() -> torch.Tensor:
    masks = torch.zeros(2, 1, 8, 10)
    masks[0, 0, 1:3, 1:3] = 1  # subject 1: rows 1-2, cols 1-2
    masks[1, 0, 5:7, 6:9] = 1  # subject 2: rows 5-6, cols 6-8
    return masks


def test_bbox_relation_mask_fills_the_rectangle_around_two_separated_squares() -> None:
    mask = relation_mask(_two_squares(), mode="bbox")
    expected = torch.zeros(1, 8, 10)
    expected[0, 1:7, 1:9] = 1
    assert mask.dtype == torch.float32
    assert torch.equal(mask, expected)


def test_bbox_relation_mask_of_an_empty_frame_is_zero_and_frames_are_independent() -> None:
    masks = torch.zeros(2, 2, 4, 4, dtype=torch.bool)
    masks[0, 1, 2, 3] = True  # only frame 1 has a (single-pixel) subject
    mask = relation_mask(masks)
    assert mask[0].sum() == 0
    assert mask[1].sum() == 1 and mask[1, 2, 3] == 1


def test_sum_relation_mask_adds_subjects_without_clamping() -> None:
    masks = torch.zeros(2, 1, 2, 2)
    masks[0, 0, 0, :] = 1
    masks[1, 0, :, 0] = 0.5
    mask = relation_mask(masks, mode="sum")
    assert torch.equal(mask, torch.tensor([[[1.5, 1.0], [0.5, 0.0]]]))


def test_relation_mask_rejects_unknown_mode_and_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="bbox, sum"):
        relation_mask(_two_squares(), mode="union")


# ---------------------------------------------------------------- latent masks


def _one_pixel_video(frame: int, row: int, col: int) -> torch.Tensor:
    masks = torch.zeros(2, 61, 16, 24, dtype=torch.uint8)
    masks[0, frame, row, col] = 255  # PNG-style 8-bit mask: nonzero means inside
    return masks


def test_latent_masks_average_a_single_pixel_over_its_six_frame_group() -> None:
    # Frame 9 is in group 2 ([7..12]); pixel (13, 21) falls in latent cell (13 // 8, 21 // 8) = (1, 2).
    masks = latent_masks(_one_pixel_video(9, 13, 21), temporal_groups(61, 6), (2, 3))
    assert set(masks) == {"subject1", "subject2", "relation"}
    expected = torch.zeros(11, 2, 3)
    expected[2, 1, 2] = 1 / 6
    assert masks["subject1"].shape == (11, 2, 3) and masks["subject1"].dtype == torch.float32
    assert torch.allclose(masks["subject1"], expected)
    assert masks["subject2"].sum() == 0
    # The bounding box of one pixel is that pixel, so the relation mask matches subject 1 here.
    assert torch.allclose(masks["relation"], expected)


def test_latent_masks_keep_the_first_frame_alone_with_full_value() -> None:
    masks = latent_masks(_one_pixel_video(0, 0, 0), temporal_groups(61, 6), (2, 3))
    expected = torch.zeros(11, 2, 3)
    expected[0, 0, 0] = 1.0
    assert torch.equal(masks["subject1"], expected)


def test_latent_masks_build_the_relation_box_at_pixel_level_before_downsampling() -> None:
    frame_masks = torch.zeros(2, 1, 8, 10)
    frame_masks[:, 0] = _two_squares()[:, 0]
    masks = latent_masks(frame_masks, [[0]], (4, 5))
    # Pixel box rows 1-6, cols 1-8 touches 2x2 blocks rows 0-3 and cols 0-4: all 20 cells.
    assert torch.equal(masks["relation"], torch.ones(1, 4, 5))
    # Subject 1 (rows 1-2, cols 1-2) touches blocks (0, 0), (0, 1), (1, 0), (1, 1).
    expected_subject1 = torch.zeros(1, 4, 5)
    expected_subject1[0, 0:2, 0:2] = 1
    assert torch.equal(masks["subject1"], expected_subject1)


def test_latent_masks_reject_a_mask_with_the_wrong_frame_count() -> None:
    with pytest.raises(ValueError, match=r"60 frames.*61.*one PNG per video frame"):
        latent_masks(torch.zeros(2, 60, 16, 24), temporal_groups(61, 6), (2, 3))


def test_latent_masks_reject_float_masks_outside_unit_range() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        latent_masks(torch.full((2, 1, 4, 4), 255.0), [[0]], (2, 2))
