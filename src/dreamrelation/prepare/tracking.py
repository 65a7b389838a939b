"""Which detection is which subject, frame by frame: pure functions of detections, no model.

A detector gives, per frame, candidate boxes (and a segmenter their masks) labelled with the subject
word they matched. These rules turn them into two subject tracks:

* **Who is subject 1.** At the first frame where both subjects are found (the *anchor* frame): when
  the two subject words differ ("dog", "cat"), subject 1 is the best detection of the caption's first
  word and subject 2 the best of the second; when the words are the same ("person", "person"),
  subject 1 is the **leftmost** of the two best detections (smaller box-centre x) in that frame.
* **Identity through the clip.** From the anchor frame forward, then backward, each frame takes the
  pairing of candidates with the largest total overlap with the two subjects' last known masks
  (mask IoU; box IoU when there are no masks). A candidate must overlap by at least ``min_overlap``
  and, when the words differ, carry its subject's word. A subject with no such candidate is
  *missing* in that frame; its last known mask stays the reference, so it is found again later.
* **Suspected identity swap.** A frame where the swapped pairing is nearly as good as the chosen
  one (its overlap >= ``swap_ratio`` x the chosen one's): the two subjects overlap so much that the
  pairing is a guess. Such frames are reported, not changed.
* **Failure.** A subject missing in more than ``max_missing_fraction`` of the frames fails the clip
  with a message naming the subject; fewer missing frames are filled with the mask of the nearest
  frame where it was found (and reported), so no subject is ever written as an empty mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in pixels, x to the right, y down."""


@dataclass(frozen=True)
class Detection:
    """One candidate subject in one frame."""

    box: Box
    score: float
    #: index of the subject word it matched (always 0 when both subjects have the same word)
    phrase: int = 0
    #: (H, W) bool mask from the segmenter, or None for box-only tracking
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def centre_x(self) -> float:
        return (self.box[0] + self.box[2]) / 2


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 for empty boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; 0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def overlap(a: Detection, b: Detection) -> float:
    """Mask IoU when both have masks, else box IoU."""
    if a.mask is not None and b.mask is not None:
        return mask_iou(a.mask, b.mask)
    return box_iou(a.box, b.box)


def mask_box(mask: np.ndarray) -> Box:
    """Tight box (x0, y0, x1, y1) around a non-empty mask, with x1/y1 one past the last pixel."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        raise ValueError("an empty mask has no box")
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def deduplicate(detections: Sequence[Detection], iou: float = 0.8) -> list[Detection]:
    """Greedy non-maximum suppression: the best-scoring of any near-identical pair survives.

    Only detections of the same word suppress each other, and empty masks are dropped (a segmenter
    that returns nothing for a box has not found the subject there).
    """
    kept: list[Detection] = []
    for detection in sorted(detections, key=lambda d: -d.score):
        if detection.mask is not None and not detection.mask.any():
            continue
        if all(k.phrase != detection.phrase or overlap(k, detection) < iou for k in kept):
            kept.append(detection)
    return kept


def initial_pair(
    detections: Sequence[Detection], same_words: bool, duplicate_iou: float = 0.8
) -> tuple[Detection, Detection] | None:
    """(subject 1, subject 2) in the anchor frame by the module's rule, or None if one is not found."""
    candidates = deduplicate(detections, duplicate_iou)
    if same_words:
        if len(candidates) < 2:
            return None
        first, second = candidates[0], candidates[1]  # the two best, already sorted by score
        return (first, second) if first.centre_x <= second.centre_x else (second, first)
    best = [next((d for d in candidates if d.phrase == word), None) for word in (0, 1)]
    if best[0] is None or best[1] is None:
        return None
    return best[0], best[1]


@dataclass
class Tracks:
    """Both subjects' detections per frame (None where missing) and what the tracker noticed."""

    #: tracks[s][f]: subject s's detection in frame f, or None
    tracks: list[list[Detection | None]]
    #: the frame where subject 1 and 2 were first told apart (None: never both found)
    anchor_frame: int | None
    #: frames where the swapped pairing was nearly as good (see the module docstring)
    suspected_swaps: list[int]

    @property
    def num_frames(self) -> int:
        return len(self.tracks[0])

    def missing_frames(self, subject: int) -> list[int]:
        return [f for f, d in enumerate(self.tracks[subject]) if d is None]


def _pair_options(
    candidates: Sequence[Detection],
    references: tuple[Detection, Detection],
    same_words: bool,
    min_overlap: float,
) -> list[tuple[float, float, int | None, int | None]]:
    """Every valid (total overlap, total score, index for subject 1, index for subject 2)."""
    per_slot: list[list[tuple[int | None, float]]] = []
    for slot, reference in enumerate(references):
        options: list[tuple[int | None, float]] = [(None, 0.0)]
        for index, candidate in enumerate(candidates):
            if not same_words and candidate.phrase != slot:
                continue
            value = overlap(reference, candidate)
            if value >= min_overlap:
                options.append((index, value))
        per_slot.append(options)
    pairs = []
    for first, first_overlap in per_slot[0]:
        for second, second_overlap in per_slot[1]:
            if first is not None and first == second:
                continue
            score = sum(candidates[i].score for i in (first, second) if i is not None)
            pairs.append((first_overlap + second_overlap, score, first, second))
    return pairs


def _follow(
    frames: Sequence[Sequence[Detection]],
    order: Sequence[int],
    start: tuple[Detection, Detection],
    tracks: list[list[Detection | None]],
    swaps: set[int],
    same_words: bool,
    min_overlap: float,
    swap_ratio: float,
) -> None:
    references = start
    for frame in order:
        candidates = frames[frame]
        pairs = _pair_options(candidates, references, same_words, min_overlap)
        best_overlap, _, first, second = max(pairs, key=lambda p: (p[0], p[1]))
        if first is not None and second is not None:
            swapped = overlap(references[0], candidates[second]) + overlap(references[1], candidates[first])
            # Different words fix who is who; only two same-word subjects can be swapped.
            if same_words and best_overlap > 0 and swapped >= swap_ratio * best_overlap:
                swaps.add(frame)
        chosen = (
            None if first is None else candidates[first],
            None if second is None else candidates[second],
        )
        for slot in (0, 1):
            tracks[slot][frame] = chosen[slot]
        references = (chosen[0] or references[0], chosen[1] or references[1])


def track_subjects(
    frames: Sequence[Sequence[Detection]],
    same_words: bool,
    min_overlap: float = 0.1,
    swap_ratio: float = 0.8,
    duplicate_iou: float = 0.8,
) -> Tracks:
    """Assign each frame's detections to subject 1 / subject 2 (rules in the module docstring)."""
    if not 0 <= min_overlap <= 1 or not 0 < swap_ratio <= 1:
        raise ValueError(
            f"need 0 <= min_overlap <= 1 and 0 < swap_ratio <= 1, got {min_overlap}, {swap_ratio}"
        )
    cleaned = [deduplicate(frame, duplicate_iou) for frame in frames]
    tracks: list[list[Detection | None]] = [[None] * len(frames), [None] * len(frames)]
    swaps: set[int] = set()
    anchor = None
    for index, frame in enumerate(cleaned):
        pair = initial_pair(frame, same_words, duplicate_iou)
        if pair is not None:
            anchor = index
            break
    if anchor is None:
        return Tracks(tracks, None, [])
    start = initial_pair(cleaned[anchor], same_words, duplicate_iou)
    assert start is not None
    tracks[0][anchor], tracks[1][anchor] = start
    args = (tracks, swaps, same_words, min_overlap, swap_ratio)
    _follow(cleaned, range(anchor + 1, len(frames)), start, *args)
    _follow(cleaned, range(anchor - 1, -1, -1), start, *args)
    return Tracks(tracks, anchor, sorted(swaps))


def filled_masks(tracks: Tracks, height: int, width: int) -> tuple[np.ndarray, list[list[int]]]:
    """(2, F, H, W) bool masks with each missing frame taken from the nearest frame where the subject
    was found (the earlier one on a tie), and the filled frame indices per subject.

    Raises ValueError if a subject was never found or a detection has no mask (segment first).
    """
    masks = np.zeros((2, tracks.num_frames, height, width), dtype=bool)
    filled: list[list[int]] = [[], []]
    for subject in (0, 1):
        found = [f for f, d in enumerate(tracks.tracks[subject]) if d is not None]
        if not found:
            raise ValueError(f"subject {subject + 1} was never found; nothing to fill from")
        for frame in range(tracks.num_frames):
            source = min(found, key=lambda f: (abs(f - frame), f))
            detection = tracks.tracks[subject][source]
            assert detection is not None
            if detection.mask is None:
                raise ValueError(
                    f"frame {source}: subject {subject + 1} has a box but no mask; segment it first"
                )
            if detection.mask.shape != (height, width):
                raise ValueError(
                    f"frame {source}: mask is {detection.mask.shape}, expected ({height}, {width})"
                )
            masks[subject, frame] = detection.mask
            if source != frame:
                filled[subject].append(frame)
    return masks, filled


def subject_labels(masks: np.ndarray) -> np.ndarray:
    """(2, F, H, W) bool -> (F, H, W) uint8 labels (0 background, 1, 2).

    A pixel claimed by both subjects goes to the one with the smaller mask in that frame, so a mask
    that swallows both subjects cannot erase the other one (ties: subject 2, drawn on top).
    """
    if masks.ndim != 4 or masks.shape[0] != 2:
        raise ValueError(f"masks must be (2, F, H, W), got {masks.shape}")
    areas = masks.reshape(2, masks.shape[1], -1).sum(axis=2)  # (2, F)
    first_on_top = (areas[0] < areas[1])[:, None, None]
    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    labels[masks[0]] = 1
    labels[masks[1] & ~(masks[0] & first_on_top)] = 2
    return labels


def with_mask(detection: Detection, mask: np.ndarray) -> Detection:
    """The same detection carrying a segmenter's mask."""
    return replace(detection, mask=np.asarray(mask, dtype=bool))
