"""Subject and relation masks, from per-frame pixel masks to the latent grid (Hybrid Mask Training).

The VAE compresses time in groups of frames (Mochi: the first frame alone, then groups of 6)
and space by a fixed factor, so a latent mask is the per-group average of the frame masks,
downsampled so that no positive pixel is lost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

RELATION_MODES = ("bbox", "sum")


def temporal_groups(num_frames: int, factor: int, first_frame_alone: bool = True) -> list[list[int]]:
    """Frame indices that each latent frame covers.

    Mochi (factor 6, first frame alone): 61 frames -> 11 groups [0], [1..6], ..., [55..60].
    Without `first_frame_alone`, frames split into consecutive groups of `factor`.
    """
    if factor < 1:
        raise ValueError(f"temporal compression factor must be at least 1, got {factor}")
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    if first_frame_alone:
        if (num_frames - 1) % factor:
            lower = num_frames - (num_frames - 1) % factor
            raise ValueError(
                f"{num_frames} frames do not fit a VAE that keeps the first frame alone and compresses "
                f"the rest by {factor}: valid counts are 1 + {factor}k (e.g. {lower} or {lower + factor}); "
                f"trim or pad the video to {lower} frames"
            )
        return [[0]] + [list(range(start, start + factor)) for start in range(1, num_frames, factor)]
    if num_frames % factor:
        lower = num_frames - num_frames % factor
        valid = f"{lower} or {lower + factor}" if lower else f"{factor}"
        raise ValueError(
            f"{num_frames} frames do not fit a VAE that compresses time by {factor}: valid counts are "
            f"multiples of {factor} (e.g. {valid}); trim or pad the video"
        )
    return [list(range(start, start + factor)) for start in range(0, num_frames, factor)]


def _as_float_masks(masks: Tensor) -> Tensor:
    """Bool and integer masks are binary (nonzero, e.g. 255 from a PNG, is 1); floats stay as given."""
    if masks.is_floating_point():
        if masks.numel() and (masks.min() < 0 or masks.max() > 1):
            raise ValueError(
                f"float masks must lie in [0, 1], got values in "
                f"[{masks.min().item()}, {masks.max().item()}]; "
                "divide 8-bit masks by 255 or pass them as uint8/bool"
            )
        return masks.float()
    return (masks != 0).float()


def _check_subject_pair(masks: Tensor, name: str) -> None:
    if masks.ndim != 4 or masks.shape[0] != 2:
        raise ValueError(
            f"{name} must have shape (2, F, H, W), one mask per subject, got {tuple(masks.shape)}"
        )


def relation_mask(subject_masks: Tensor, mode: str = "bbox") -> Tensor:
    """Relation mask M_R per frame from the two subject masks (2, F, H, W) -> (F, H, W), float32.

    "bbox" (paper): the minimum bounding rectangle of the union of both masks (pixels > 0), filled
    with 1; a frame where both masks are empty gives zeros.
    "sum" (official code): subject1 + subject2, not clamped, so overlapping pixels reach 2.
    """
    if mode not in RELATION_MODES:
        raise ValueError(f"unknown relation mask mode {mode!r}; valid modes: {', '.join(RELATION_MODES)}")
    _check_subject_pair(subject_masks, "subject_masks")
    masks = _as_float_masks(subject_masks)
    if mode == "sum":
        return masks[0] + masks[1]

    union = (masks > 0).any(dim=0)  # (F, H, W)
    _, height, width = union.shape
    rows = union.any(dim=2)  # (F, H): which rows hold any subject pixel
    cols = union.any(dim=1)  # (F, W)
    row_index = torch.arange(height, device=union.device)
    col_index = torch.arange(width, device=union.device)
    # An empty frame gets top > bottom (H > -1), which selects no row, hence an all-zero frame.
    top = torch.where(rows, row_index, height).amin(dim=1, keepdim=True)
    bottom = torch.where(rows, row_index, -1).amax(dim=1, keepdim=True)
    left = torch.where(cols, col_index, width).amin(dim=1, keepdim=True)
    right = torch.where(cols, col_index, -1).amax(dim=1, keepdim=True)
    inside_rows = (row_index >= top) & (row_index <= bottom)  # (F, H)
    inside_cols = (col_index >= left) & (col_index <= right)  # (F, W)
    return (inside_rows[:, :, None] & inside_cols[:, None, :]).float()


def latent_masks(
    frame_masks: Tensor,
    temporal_groups: list[list[int]],
    latent_hw: tuple[int, int],
    relation: str = "bbox",
) -> dict[str, Tensor]:
    """Latent-grid masks {"subject1", "subject2", "relation"}, each (f, h, w) float32.

    frame_masks: (2, F, H, W) per-frame masks of the two subjects (bool, uint8 or float in [0, 1]).
    The relation mask is built per frame at pixel level (see `relation_mask`) before any
    downsampling, because a bounding box of downsampled masks would be coarser. Each latent frame
    is the mean over its group of frames; space is reduced by adaptive max pooling so that any
    positive pixel leaves a positive latent cell (its value: the largest group mean in the block).
    """
    _check_subject_pair(frame_masks, "frame_masks")
    covered = sum(len(group) for group in temporal_groups)
    frame_count = frame_masks.shape[1]
    if covered != frame_count:
        raise ValueError(
            f"the mask has {frame_count} frames but the temporal groups cover {covered} video frames; "
            "the mask must have one PNG per video frame"
        )
    if sorted(index for group in temporal_groups for index in group) != list(range(frame_count)):
        raise ValueError("temporal_groups must cover each frame index 0..F-1 exactly once")
    if any(not group for group in temporal_groups):
        raise ValueError("temporal_groups must not contain an empty group")
    height, width = frame_masks.shape[2:]
    latent_h, latent_w = latent_hw
    if not (0 < latent_h <= height and 0 < latent_w <= width):
        raise ValueError(
            f"latent size {tuple(latent_hw)} must be positive and no larger than the mask size "
            f"({height}, {width})"
        )

    averaged = []
    # One group at a time keeps peak memory at a few frames, not the whole full-resolution clip.
    for group in temporal_groups:
        index = torch.tensor(group, device=frame_masks.device)
        subjects = _as_float_masks(frame_masks.index_select(1, index))  # (2, g, H, W)
        relation_frames = relation_mask(subjects, mode=relation)  # (g, H, W)
        averaged.append(torch.cat([subjects, relation_frames[None]], dim=0).mean(dim=1))  # (3, H, W)
    stacked = torch.stack(averaged, dim=1)  # (3, f, H, W)
    pooled = F.adaptive_max_pool2d(stacked, (latent_h, latent_w))  # (3, f, h, w)
    return {
        "subject1": pooled[0].contiguous(),
        "subject2": pooled[1].contiguous(),
        "relation": pooled[2].contiguous(),
    }
