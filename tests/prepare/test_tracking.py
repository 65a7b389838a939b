"""Identity, missing-subject and swap rules of the mask writer, on the toy world's own clips.

Detections are built from the toy world's ground-truth masks (the visible part of each sprite, as a
segmenter would see it), shuffled per frame and mixed with a distractor, so the expected tracks are
known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from dreamrelation.prepare.masking import MaskingError, check_tracks
from dreamrelation.prepare.tracking import (
    Detection,
    box_iou,
    filled_masks,
    mask_box,
    subject_labels,
    track_subjects,
)
from dreamrelation.toyworld.world import Scene, render


def visible_masks(masks: np.ndarray) -> np.ndarray:
    """Subject 2 is drawn on top: subject 1's visible part excludes it."""
    return np.stack([masks[0] & ~masks[1], masks[1]])


def toy_detections(
    scene: Scene, same_words: bool, drop: dict[int, set[int]] | None = None, seed: int = 0
) -> tuple[list[list[Detection]], np.ndarray]:
    clip = render(scene)
    visible = visible_masks(clip.masks)
    rng = np.random.default_rng(seed)
    frames = []
    for f in range(visible.shape[1]):
        dets = []
        for s in (0, 1):
            if f in (drop or {}).get(s, set()) or not visible[s, f].any():
                continue
            phrase = 0 if same_words else s
            dets.append(
                Detection(mask_box(visible[s, f]), float(rng.uniform(0.5, 0.9)), phrase, visible[s, f])
            )
        # a weak distractor in a corner, overlapping neither sprite's previous position much
        corner = np.zeros_like(visible[0, f])
        corner[0:2, 0:2] = True
        dets.append(Detection(mask_box(corner), 0.31, 0, corner))
        order = rng.permutation(len(dets))
        frames.append([dets[i] for i in order])
    return frames, visible


def track_masks(tracks, subject: int) -> np.ndarray:
    return np.stack([d.mask for d in tracks.tracks[subject]])


@pytest.mark.parametrize("relation", ["walking_towards", "hugging", "shaking_hands", "following"])
def test_different_words_keep_each_subject_on_its_sprite(relation):
    scene = Scene(("triangle", "red"), ("circle", "blue"), relation, "dark", seed=3)
    frames, visible = toy_detections(scene, same_words=False)
    tracks = track_subjects(frames, same_words=False)
    assert tracks.anchor_frame == 0
    assert tracks.missing_frames(0) == [] and tracks.missing_frames(1) == []
    np.testing.assert_array_equal(track_masks(tracks, 0), visible[0])
    np.testing.assert_array_equal(track_masks(tracks, 1), visible[1])
    assert tracks.suspected_swaps == []  # words fix identities; no swap possible


@pytest.mark.parametrize("relation", ["walking_towards", "walking_apart", "pushing", "high_five"])
def test_same_words_subject1_is_leftmost_in_the_first_frame_and_keeps_its_identity(relation):
    scene = Scene(("person", "white"), ("person", "white"), relation, "grey", seed=5)
    frames, visible = toy_detections(scene, same_words=True)
    tracks = track_subjects(frames, same_words=True)
    left = 0 if mask_box(visible[0, 0])[0] < mask_box(visible[1, 0])[0] else 1
    np.testing.assert_array_equal(track_masks(tracks, 0), visible[left])
    np.testing.assert_array_equal(track_masks(tracks, 1), visible[1 - left])


def test_missing_frames_are_reported_and_filled_from_the_nearest_found_frame():
    scene = Scene(("square", "green"), ("diamond", "yellow"), "walking_towards", "dark", seed=1)
    frames, visible = toy_detections(scene, same_words=False, drop={1: {3, 4}})
    tracks = track_subjects(frames, same_words=False)
    assert tracks.missing_frames(1) == [3, 4]
    check_tracks(tracks, "clip", ("green square", "yellow diamond"), max_missing_fraction=0.2)  # 2/16 ok
    masks, filled = filled_masks(tracks, 32, 32)
    assert filled == [[], [3, 4]]
    np.testing.assert_array_equal(masks[1, 3], visible[1, 2])  # nearest: frame 2 (tie 2/4 -> earlier)
    np.testing.assert_array_equal(masks[1, 4], visible[1, 5])
    assert all(masks[s, f].any() for s in (0, 1) for f in range(16))  # never an empty subject


def test_late_anchor_tracks_backwards_too():
    scene = Scene(("square", "green"), ("diamond", "yellow"), "walking_apart", "dark", seed=2)
    frames, visible = toy_detections(scene, same_words=False, drop={1: {0, 1}})
    tracks = track_subjects(frames, same_words=False)
    assert tracks.anchor_frame == 2
    assert tracks.missing_frames(0) == [] and tracks.missing_frames(1) == [0, 1]
    np.testing.assert_array_equal(track_masks(tracks, 0), visible[0])


def test_a_subject_missing_in_too_many_frames_fails_with_its_name():
    scene = Scene(("triangle", "red"), ("circle", "blue"), "hugging", "dark", seed=3)
    frames, _ = toy_detections(scene, same_words=False, drop={0: {1, 2, 3, 9, 10}})
    tracks = track_subjects(frames, same_words=False)
    with pytest.raises(
        MaskingError, match=r"clip7: subject 1 \('red triangle'\) not found in 5 of 16 frames"
    ):
        check_tracks(tracks, "clip7", ("red triangle", "blue circle"), max_missing_fraction=0.2)


def test_never_both_subjects_in_one_frame_fails_and_cannot_be_filled():
    scene = Scene(("triangle", "red"), ("circle", "blue"), "hugging", "dark", seed=3)
    frames, _ = toy_detections(scene, same_words=False, drop={1: set(range(16))})
    tracks = track_subjects(frames, same_words=False)
    assert tracks.anchor_frame is None
    with pytest.raises(MaskingError, match="no frame shows both subjects"):
        check_tracks(tracks, "clip", ("red triangle", "blue circle"), 1.0)
    with pytest.raises(ValueError, match="never found"):
        filled_masks(tracks, 32, 32)


def _box_mask(x0: int, width: int = 8, size: int = 40) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[10:20, x0 : x0 + width] = True
    return mask


def test_crossing_same_word_subjects_are_flagged_as_suspected_swaps():
    # A walks right from x=0, B walks left from x=30, 3 px a frame; they coincide around frame 5.
    frames = []
    for f in range(11):
        a, b = _box_mask(3 * f), _box_mask(30 - 3 * f)
        frames.append([Detection(mask_box(m), 0.8, 0, m) for m in (a, b)])
    tracks = track_subjects(frames, same_words=True, duplicate_iou=1.01)
    assert tracks.suspected_swaps and set(tracks.suspected_swaps) <= {4, 5, 6}
    # before the crossing, identity follows overlap exactly
    assert [mask_box(d.mask)[0] for d in tracks.tracks[0][:4]] == [0, 3, 6, 9]


def test_box_iou_and_label_overlap_rule():
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    big = np.zeros((1, 4, 4), bool)
    big[0] = True
    small = np.zeros((1, 4, 4), bool)
    small[0, 1:3, 1:3] = True
    labels = subject_labels(np.stack([big, small]))
    assert (labels[0, 1:3, 1:3] == 2).all() and (labels[0] == 1).sum() == 12  # smaller mask wins
    labels = subject_labels(np.stack([small, big]))
    assert (labels[0, 1:3, 1:3] == 1).all() and (labels[0] == 2).sum() == 12
