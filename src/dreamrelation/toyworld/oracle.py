"""The oracle evaluator of the toy world: tracks the prompted subjects and names their relation.

Its design (docs/toyworld.md) was fixed on ground-truth renders before any method was trained, and
it must never be tuned to a method's output. Everything is rule-based except the toy-FVD feature
network, whose weights are shipped (``weights/``) with the command that trained them.

Pipeline for one video: label every pixel with its nearest palette colour -> for each prompted
subject, a robust blob of its colour per frame (centroid, pixel count, shape score) -> interpolate
missing frames -> trajectory features (distance, contact, velocities, vertical motion) -> a fixed
decision list that returns one of :data:`CLASSES`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from dreamrelation.toyworld.world import (
    BACKGROUND_COLORS,
    BACKGROUND_PERIODS,
    BACKGROUNDS,
    COLORS,
    GENERIC_MOTIONS,
    RELATIONS,
    SHAPES,
    Subject,
    background_image,
    render,
    sample_scenes,
    sprite_mask,
)

NONE = "none"
CLASSES: tuple[str, ...] = (*RELATIONS, NONE)

# --- fixed oracle constants (decided on ground truth before any method; see docs/toyworld.md) ---
MAX_COLOR_DISTANCE = 140.0  # RGB distance beyond which a pixel is nobody's colour
# Distances to background colours are stretched by this factor, so a pixel blended from a subject
# colour and the background (blur) counts as the subject when it holds more than 1/(1+1.4) ~ 42% of it.
BACKGROUND_DISTANCE_WEIGHT = 1.4
MIN_BLOB_PIXELS = 6  # fewer matching pixels than this: the subject is absent in that frame
BLOB_RADIUS = 6  # pixels further (Chebyshev) from the colour's median pixel are stray noise
MIN_PRESENT_FRACTION = 0.5  # a subject seen in fewer frames cannot take part in a relation
CONTACT_GAP = 2.5  # px between bounding boxes along the centre line that count as touching
CONTACT_SLACK = 1.5  # px above the closest distance that still counts as "in contact"
APPROACH = 4.0  # px the centre distance must shrink before contact for a contact relation
SEPARATION = 3.0  # px the distance must grow after contact for high-five / punching
MUTUAL_APPROACH = 1.5  # px each subject moved towards the other before contact: a mutual action
LUNGE_SPEED = 2.5  # px/frame peak speed of a punch
JUMP = 1.5  # px the pair's midpoint rises during a high-five
PAIR_TRAVEL = 3.0  # px the pair's midpoint travels after contact when pushing
PAIR_STILL = 2.0  # px the pair's midpoint travels at most after contact when shaking hands / hugging
SHAKE = 0.5  # px std of the pair's (detrended) vertical position after contact when shaking hands
WALK = 4.0  # px the centre distance changes when walking towards / apart
WALK_SHARE = 1.0  # px each subject must contribute to walking towards / apart
FOLLOW_TRAVEL = 4.0  # px each subject travels when following
FOLLOW_SAME_WAY = 0.8  # cosine between the two displacements when following
FOLLOW_IN_LINE = 0.75  # |cosine| between the line joining them and the direction of travel
SHAPE_WINDOW = 10  # half-size of the window in which a blob is compared with shape templates
SUBJECT_FRAMES = 0.5  # a subject is faithful if present in at least this fraction of frames
LEAK_FRAMES = 0.25  # a non-prompted exemplar colour leaks if seen in at least this fraction of frames


# ----------------------------------------------------------------------------- tracking


@lru_cache(maxsize=1)
def _palette() -> tuple[np.ndarray, int]:
    """Subject colours first, then every background colour (so dull pixels are never subjects)."""
    subject_colors = list(COLORS.values())
    background_colors = sorted({c for pair in BACKGROUND_COLORS.values() for c in pair})
    return np.asarray(subject_colors + background_colors, dtype=np.float32), len(subject_colors)


def color_labels(video: np.ndarray) -> np.ndarray:
    """``(F, H, W)`` index into ``COLORS`` of each pixel's nearest subject colour, or -1 for none."""
    palette, n_subject_colors = _palette()
    pixels = np.asarray(video, dtype=np.float32)
    # Squared distances as |x|^2 - 2 x.p + |p|^2: one small matmul instead of a (..., K, 3) array.
    squared = (pixels**2).sum(-1, keepdims=True) - 2 * pixels @ palette.T + (palette**2).sum(-1)
    squared[..., n_subject_colors:] *= BACKGROUND_DISTANCE_WEIGHT**2
    nearest = squared.argmin(axis=-1)
    closest = np.take_along_axis(squared, nearest[..., None], axis=-1)[..., 0]
    close = closest <= MAX_COLOR_DISTANCE**2
    return np.where(close & (nearest < n_subject_colors), nearest, -1)


@dataclass
class SubjectTrack:
    """One prompted subject followed through a video."""

    centroids: np.ndarray  # (F, 2) (x, y), NaN where absent
    pixel_counts: np.ndarray  # (F,) blob pixels
    extents: np.ndarray  # (F,) blob bounding-box size, max(height, width), 0 where absent
    shape_scores: np.ndarray  # (F, len(SHAPES)) best IoU with each shape template, 0 where absent

    @property
    def present(self) -> np.ndarray:
        """(F,) bool: the subject was found in that frame."""
        return self.pixel_counts >= MIN_BLOB_PIXELS

    def shape(self) -> str | None:
        """The shape whose template fits best on average over the frames it is present, or None."""
        if not self.present.any():
            return None
        return SHAPES[int(self.shape_scores[self.present].mean(axis=0).argmax())]


@cache
def _templates(size: int) -> np.ndarray:
    """(len(SHAPES), W, W) bool templates of one size, each centred on its own pixel centroid."""
    width = 2 * SHAPE_WINDOW + 1
    bank = np.zeros((len(SHAPES), width, width), dtype=bool)
    for index, shape in enumerate(SHAPES):
        sprite = sprite_mask(shape, size)
        ys, xs = np.nonzero(sprite)
        top = SHAPE_WINDOW - int(round(ys.mean()))
        left = SHAPE_WINDOW - int(round(xs.mean()))
        bank[index, top : top + size, left : left + size] = sprite
    return bank


def _shape_scores(blob: np.ndarray, centre: np.ndarray, extent: int) -> np.ndarray:
    """Best IoU of the blob with each shape's template (its measured size, centred, +-1 px shifts)."""
    size = int(np.clip(extent, 3, 2 * SHAPE_WINDOW - 2))
    padded = np.pad(blob, SHAPE_WINDOW + 1)
    cx, cy = (int(round(v)) + SHAPE_WINDOW + 1 for v in centre)
    width = 2 * SHAPE_WINDOW + 1
    top, left = cy - SHAPE_WINDOW, cx - SHAPE_WINDOW
    crops = np.stack(
        [
            padded[top + dy : top + dy + width, left + dx : left + dx + width]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ]
    )
    templates = _templates(size)
    intersection = (crops[:, None] & templates[None]).sum(axis=(-1, -2))
    union = (crops[:, None] | templates[None]).sum(axis=(-1, -2))
    iou = (intersection / np.maximum(union, 1)).max(axis=0)  # the best of the shifts
    return iou


def track_color(labels: np.ndarray, color: str, with_shapes: bool = True) -> SubjectTrack:
    """Follow the blob of one colour through a labelled video (see :func:`color_labels`)."""
    color_index = list(COLORS).index(color)
    frames = labels.shape[0]
    centroids = np.full((frames, 2), np.nan)
    counts = np.zeros(frames, dtype=int)
    extents = np.zeros(frames, dtype=int)
    scores = np.zeros((frames, len(SHAPES)))
    matches = labels == color_index
    # Drop isolated pixels (noise): keep those with at least 2 of their 4 neighbours of the colour;
    # every sprite pixel, even a cross's arm tip or a triangle's apex, has 2.
    padded = np.pad(matches, ((0, 0), (1, 1), (1, 1)))
    neighbours = (
        padded[:, :-2, 1:-1].astype(np.int8)
        + padded[:, 2:, 1:-1]
        + padded[:, 1:-1, :-2]
        + padded[:, 1:-1, 2:]
    )
    matches &= neighbours >= 2
    for frame_index in range(frames):
        ys, xs = np.nonzero(matches[frame_index])
        if len(xs) < MIN_BLOB_PIXELS:
            continue
        # Stray pixels of the colour (noise, blur elsewhere) would drag a plain mean; keep the
        # pixels near the median, which is where the bulk of the sprite is.
        my, mx = np.median(ys), np.median(xs)
        keep = (np.abs(ys - my) <= BLOB_RADIUS) & (np.abs(xs - mx) <= BLOB_RADIUS)
        ys, xs = ys[keep], xs[keep]
        counts[frame_index] = len(xs)
        if len(xs) < MIN_BLOB_PIXELS:
            continue
        centroids[frame_index] = (xs.mean(), ys.mean())
        extents[frame_index] = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        if with_shapes:
            blob = np.zeros(labels.shape[1:], dtype=bool)
            blob[ys, xs] = True
            scores[frame_index] = _shape_scores(blob, centroids[frame_index], extents[frame_index])
    return SubjectTrack(centroids, counts, extents, scores)


def track_subjects(video: np.ndarray, subjects: Sequence[Subject]) -> list[SubjectTrack]:
    """Track each prompted ``(shape, colour)`` subject by its colour."""
    labels = color_labels(video)
    return [track_color(labels, color) for _shape, color in subjects]


def _filled(track: SubjectTrack) -> np.ndarray:
    """Centroids with absent frames linearly interpolated (held constant at the ends)."""
    present = track.present & ~np.isnan(track.centroids[:, 0])
    t = np.arange(len(present))
    return np.stack([np.interp(t, t[present], track.centroids[present, axis]) for axis in range(2)], axis=-1)


# ----------------------------------------------------------------------------- relation


def relation_features(track1: SubjectTrack, track2: SubjectTrack) -> dict[str, float]:
    """The trajectory features the decision list reads (documented in docs/toyworld.md)."""
    p1, p2 = _filled(track1), _filled(track2)
    frames = len(p1)
    extents = [np.median(track.extents[track.present]) for track in (track1, track2)]
    contact = (extents[0] + extents[1]) / 2
    distance = np.linalg.norm(p1 - p2, axis=-1)
    gap = distance - contact
    ends = max(1, frames // 8)  # average a couple of frames at each end against rounding jitter
    d_start, d_end = distance[:ends].mean(), distance[-ends:].mean()
    start1, start2 = p1[:ends].mean(axis=0), p2[:ends].mean(axis=0)
    end1, end2 = p1[-ends:].mean(axis=0), p2[-ends:].mean(axis=0)

    # Contact: the first frame within CONTACT_SLACK of the closest approach.
    d_min = distance.min()
    contact_frame = int(np.nonzero(distance <= d_min + CONTACT_SLACK)[0][0])
    # Who did the approaching: each subject's motion (px) towards the other's start, from the
    # start (mean of the first frames, against 1 px rounding flicker) to contact.
    approached = [
        float((p[contact_frame] - start) @ (other - start)) / max(float(np.linalg.norm(other - start)), 1e-6)
        for p, start, other in ((p1, start1, start2), (p2, start2, start1))
    ]
    speeds = [np.linalg.norm(np.diff(p, axis=0), axis=-1) for p in (p1, p2)]
    midpoint = (p1 + p2) / 2
    after = midpoint[contact_frame:]
    # Height gained around and after contact over the pair's usual (median) height; up is -y.
    rise = float(np.median(midpoint[:, 1]) - midpoint[max(contact_frame - 2, 0) :, 1].min())
    if len(after) >= 3:
        # The pair's steady drift after contact is the fitted line; wobble around it is the shake.
        t = np.arange(len(after))
        fits = [np.polyfit(t, after[:, axis], 1) for axis in range(2)]
        drift = np.array([np.polyval(fit, t[-1]) - np.polyval(fit, 0) for fit in fits])
        shake = float(np.std(after[:, 1] - np.polyval(fits[1], t)))
    else:
        drift = after[-1] - after[0]
        shake = 0.0
    # Only drift along the line joining them counts as travel: a push moves the pair that way,
    # while a handshake's up-and-down wobble is across it.
    joining = (p2 - p1)[contact_frame:].mean(axis=0)
    joining = joining / max(float(np.linalg.norm(joining)), 1e-6)
    pair_travel = abs(float(drift @ joining))

    move1, move2 = end1 - start1, end2 - start2
    axis12 = (start2 - start1) / max(np.linalg.norm(start2 - start1), 1e-6)
    travel1, travel2 = np.linalg.norm(move1), np.linalg.norm(move2)
    same_way = float(move1 @ move2 / max(travel1 * travel2, 1e-6))
    mean_move = (move1 + move2) / 2
    offset = (p2 - p1).mean(axis=0)
    in_line = abs(float(offset @ mean_move)) / max(np.linalg.norm(offset) * np.linalg.norm(mean_move), 1e-6)
    return {
        "gap_min": float(gap.min()),
        "approach": float(d_start - d_min),
        "separation": float(d_end - d_min),
        "contact_frame": float(contact_frame),
        "approached_1": approached[0],
        "approached_2": approached[1],
        "peak_speed_1": float(speeds[0].max(initial=0.0)),
        "peak_speed_2": float(speeds[1].max(initial=0.0)),
        "pair_travel": pair_travel,
        "rise": float(rise),
        "shake": shake,
        "distance_change": float(d_end - d_start),
        "towards_1": float(move1 @ axis12),
        "towards_2": float(-move2 @ axis12),
        "travel_1": float(travel1),
        "travel_2": float(travel2),
        "same_way": same_way,
        "in_line": float(in_line),
    }


def classify_features(f: dict[str, float]) -> str:
    """The fixed decision list: contact relations first (they start with an approach into contact)."""
    if f["gap_min"] <= CONTACT_GAP and f["approach"] >= APPROACH:
        # Mutual approach (hugging, high-five, shaking hands) or one waits (pushing, punching).
        mutual = min(f["approached_1"], f["approached_2"]) >= MUTUAL_APPROACH
        if f["separation"] >= SEPARATION:
            # A punch: one waits, the other lunges fast and pulls back. A high-five: both come,
            # jump together, and step back.
            attacker_fast = max(f["peak_speed_1"], f["peak_speed_2"]) >= LUNGE_SPEED
            if not mutual and attacker_fast:
                return "punching"
            if mutual and f["rise"] >= JUMP:
                return "high_five"
            return NONE
        if not mutual and f["pair_travel"] >= PAIR_TRAVEL:
            return "pushing"
        if f["pair_travel"] < PAIR_STILL:
            return "shaking_hands" if f["shake"] >= SHAKE else "hugging"
        return NONE
    if min(f["travel_1"], f["travel_2"]) >= FOLLOW_TRAVEL and abs(f["distance_change"]) < WALK:
        if f["same_way"] >= FOLLOW_SAME_WAY and f["in_line"] >= FOLLOW_IN_LINE:
            return "following"
        return NONE
    if f["distance_change"] <= -WALK and min(f["towards_1"], f["towards_2"]) >= WALK_SHARE:
        return "walking_towards"
    if f["distance_change"] >= WALK and max(f["towards_1"], f["towards_2"]) <= -WALK_SHARE:
        return "walking_apart"
    return NONE


def classify_tracks(track1: SubjectTrack, track2: SubjectTrack) -> str:
    """Relation between two tracked subjects; "none" when either is missing in most frames."""
    for track in (track1, track2):
        if track.present.mean() < MIN_PRESENT_FRACTION:
            return NONE
    return classify_features(relation_features(track1, track2))


def classify_relation(video: np.ndarray, subjects: Sequence[Subject]) -> str:
    """Name the relation the two prompted subjects act out in ``video`` (one of :data:`CLASSES`)."""
    track1, track2 = track_subjects(video, subjects)
    return classify_tracks(track1, track2)


# ----------------------------------------------------------------------------- appearance


@lru_cache(maxsize=8)
def _background_bank(height: int, width: int) -> tuple[tuple[str, ...], np.ndarray]:
    """Every background at every phase of its pattern: names (K,) and images (K, H, W, 3) float."""
    names, images = [], []
    size = max(height, width)
    for name in BACKGROUNDS:
        period = BACKGROUND_PERIODS[name]
        for phase_y in range(period):
            for phase_x in range(period):
                names.append(name)
                images.append(background_image(name, size, (phase_y, phase_x))[:height, :width])
    return tuple(names), np.asarray(images, dtype=np.float32)


def background_scores(video: np.ndarray) -> dict[str, float]:
    """Mean absolute RGB error of the video's background against each named background (lower fits better).

    The background is the per-pixel temporal median (moving sprites vanish from it); pixels of a
    subject colour there, and their neighbours, are ignored. Each pattern is tried at every phase and
    with a global brightness offset of up to +-12, so a shifted or slightly brighter pattern still fits.
    """
    video = np.asarray(video)
    still = np.median(video.astype(np.float32), axis=0)
    subject = color_labels(still[None])[0] >= 0
    padded = np.pad(subject, 1)
    near_subject = np.zeros_like(subject)
    for dy in range(3):  # a 3x3 dilation, against blurred sprite edges
        for dx in range(3):
            near_subject |= padded[dy : dy + subject.shape[0], dx : dx + subject.shape[1]]
    keep = ~near_subject
    if keep.sum() < 16:
        keep = np.ones_like(keep)
    names, bank = _background_bank(*still.shape[:2])
    residual = still[keep][None] - bank[:, keep]  # (K, P, 3)
    offset = np.clip(np.median(residual, axis=1, keepdims=True), -12.0, 12.0)
    errors = np.abs(residual - offset).mean(axis=(1, 2))
    scores: dict[str, float] = {}
    for name, error in zip(names, errors, strict=True):
        scores[name] = min(scores.get(name, np.inf), float(error))
    return scores


def detect_background(video: np.ndarray) -> str:
    """The named background that fits the video best (see :func:`background_scores`)."""
    scores = background_scores(video)
    return min(scores, key=scores.__getitem__)


def subject_verdict(track: SubjectTrack, shape: str) -> str:
    """``ok`` (faithful), ``missing`` (its colour in fewer than half the frames) or ``drawn as SHAPE``."""
    if track.present.mean() < SUBJECT_FRAMES:
        return "missing"
    drawn = track.shape()
    return "ok" if drawn == shape else f"drawn as {drawn}"


def subject_fidelity(videos: Sequence[np.ndarray], prompts_subjects: Sequence[Sequence[Subject]]) -> float:
    """Fraction of videos showing BOTH prompted subjects, in the prompted colour (present in at least
    half the frames) and the prompted shape (best-fitting template over the frames they are present)."""
    faithful = []
    for video, subjects in zip(videos, prompts_subjects, strict=True):
        tracks = track_subjects(video, subjects)
        faithful.append(all(subject_verdict(t, s[0]) == "ok" for t, s in zip(tracks, subjects, strict=True)))
    return float(np.mean(faithful))


def appearance_leakage(
    videos: Sequence[np.ndarray],
    prompts_subjects: Sequence[Sequence[Subject]],
    exemplar_subjects: Sequence[Subject],
    exemplar_background: str | None,
    prompt_backgrounds: Sequence[str | None] | None = None,
) -> dict[str, float]:
    """Fractions of videos where the exemplars' appearance shows up instead of the prompt's.

    - colour: a colour of an exemplar subject that the prompt does not ask for is seen as a blob in
      at least a quarter of the frames;
    - shape: a prompted subject's blob fits an exemplar shape better than its prompted shape;
    - background: the video's background fits the exemplar background best although the prompt asks
      for another one (when ``prompt_backgrounds`` is None, any exemplar-background fit counts).
    ``appearance_leakage`` is the fraction with at least one of the three.
    """
    exemplar_colors = {color for _shape, color in exemplar_subjects}
    exemplar_shapes = {shape for shape, _color in exemplar_subjects}
    if prompt_backgrounds is None:
        prompt_backgrounds = [None] * len(videos)
    color_leaks, shape_leaks, background_leaks = [], [], []
    for video, subjects, prompt_background in zip(videos, prompts_subjects, prompt_backgrounds, strict=True):
        labels = color_labels(video)
        foreign = exemplar_colors - {color for _shape, color in subjects}
        seen = [track_color(labels, c, with_shapes=False).present.mean() for c in sorted(foreign)]
        color_leaks.append(any(fraction >= LEAK_FRAMES for fraction in seen))
        shape_leak = False
        for shape, color in subjects:
            detected = track_color(labels, color).shape()
            shape_leak |= detected is not None and detected != shape and detected in exemplar_shapes
        shape_leaks.append(shape_leak)
        background_leak = False
        if exemplar_background is not None and prompt_background != exemplar_background:
            background_leak = detect_background(video) == exemplar_background
        background_leaks.append(background_leak)
    any_leak = np.array(color_leaks) | np.array(shape_leaks) | np.array(background_leaks)
    return {
        "appearance_leakage": float(any_leak.mean()),
        "color_leakage": float(np.mean(color_leaks)),
        "shape_leakage": float(np.mean(shape_leaks)),
        "background_leakage": float(np.mean(background_leaks)),
    }


# ----------------------------------------------------------------------------- video-level metrics


def relation_accuracy(
    videos: Sequence[np.ndarray], prompts_subjects: Sequence[Sequence[Subject]], target_relation: str
) -> float:
    """Fraction of videos the oracle classifies as ``target_relation``."""
    if target_relation not in RELATIONS:
        raise ValueError(f"unknown relation {target_relation!r}; choose one of {tuple(RELATIONS)}")
    hits = [classify_relation(v, s) == target_relation for v, s in zip(videos, prompts_subjects, strict=True)]
    return float(np.mean(hits))


def temporal_consistency(videos: Sequence[np.ndarray]) -> float:
    """Mean similarity of consecutive frames, 1 - mean |difference| / 255, averaged over videos; in [0, 1]."""
    scores = []
    for video in videos:
        frames = np.asarray(video, dtype=np.float32)
        if len(frames) < 2:
            scores.append(1.0)
            continue
        scores.append(1.0 - float(np.abs(np.diff(frames, axis=0)).mean()) / 255.0)
    return float(np.mean(scores))


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, D)`` (the FVD formula)."""
    features_a, features_b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if len(features_a) < 2 or len(features_b) < 2:
        raise ValueError("the Fréchet distance needs at least two videos in each set")
    mean_a, mean_b = features_a.mean(axis=0), features_b.mean(axis=0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    # tr((A B)^1/2) = tr((A^1/2 B A^1/2)^1/2); both symmetric PSD, so eigh is exact and stable.
    values, vectors = np.linalg.eigh(cov_a)
    sqrt_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    inner = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    trace_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
    distance = ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def toy_fvd(videos_a: Sequence[np.ndarray], videos_b: Sequence[np.ndarray]) -> float:
    """Fréchet distance between the shipped feature network's features of two sets of videos."""
    from dreamrelation.toyworld.features import extract_features  # torch only when FVD is asked for

    return frechet_distance(extract_features(videos_a), extract_features(videos_b))


def evaluate(
    videos: Sequence[np.ndarray],
    prompts_subjects: Sequence[Sequence[Subject]],
    target_relation: str,
    exemplar_subjects: Sequence[Subject],
    exemplar_background: str | None,
    reference_videos: Sequence[np.ndarray] | None = None,
    prompt_backgrounds: Sequence[str | None] | None = None,
) -> dict[str, float]:
    """All oracle metrics for generated ``videos`` (each ``(F, H, W, 3)`` uint8) of one relation.

    ``prompts_subjects[i]`` are the two ``(shape, colour)`` subjects the i-th prompt asked for;
    ``exemplar_subjects``/``exemplar_background`` describe the training exemplars (for leakage);
    ``toy_fvd`` is reported against ``reference_videos`` when they are given.
    """
    if len(videos) != len(prompts_subjects):
        raise ValueError(f"got {len(videos)} videos but {len(prompts_subjects)} prompt subject pairs")
    leakage = appearance_leakage(
        videos, prompts_subjects, exemplar_subjects, exemplar_background, prompt_backgrounds
    )
    metrics = {
        "relation_accuracy": relation_accuracy(videos, prompts_subjects, target_relation),
        "subject_fidelity": subject_fidelity(videos, prompts_subjects),
        **leakage,
        "temporal_consistency": temporal_consistency(videos),
        "n_videos": float(len(videos)),
    }
    if reference_videos is not None:
        metrics["toy_fvd"] = toy_fvd(videos, reference_videos)
    return metrics


# ----------------------------------------------------------------------------- ground-truth check


def confusion_matrix(
    true_labels: Sequence[str],
    predicted_labels: Sequence[str],
    rows: Sequence[str],
    columns: Sequence[str] = CLASSES,
) -> np.ndarray:
    """Counts ``(len(rows), len(columns))``: how often each true label got each predicted label."""
    matrix = np.zeros((len(rows), len(columns)), dtype=int)
    row_index = {label: i for i, label in enumerate(rows)}
    column_index = {label: j for j, label in enumerate(columns)}
    for true, predicted in zip(true_labels, predicted_labels, strict=True):
        matrix[row_index[true], column_index[predicted]] += 1
    return matrix


def ground_truth_confusion(per_class: int = 100, seed: int = 1234) -> tuple[list[str], np.ndarray]:
    """Render ``per_class`` fresh clips of every relation and generic motion (all shapes, colours and
    backgrounds) and classify them; returns the row labels and the confusion matrix over CLASSES."""
    rng = np.random.default_rng(seed)
    rows = [*RELATIONS, *GENERIC_MOTIONS]
    true_labels, predicted = [], []
    for label in rows:
        for scene in sample_scenes(label, per_class, rng):
            clip = render(scene)
            true_labels.append(label)
            predicted.append(classify_relation(clip.frames, (scene.subject1, scene.subject2)))
    return rows, confusion_matrix(true_labels, predicted, rows)


def format_confusion(rows: Sequence[str], matrix: np.ndarray, columns: Sequence[str] = CLASSES) -> str:
    """Markdown table with the per-row rate of the correct class (the relation, or none for generics)."""
    header = "| true \\ predicted | " + " | ".join(columns) + " | correct |"
    lines = [header, "|" + " --- |" * (len(columns) + 2)]
    for label, counts in zip(rows, matrix, strict=True):
        correct = counts[list(columns).index(label if label in columns else NONE)] / max(counts.sum(), 1)
        cells = " | ".join(str(int(c)) for c in counts)
        lines.append(f"| {label} | {cells} | {correct:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the oracle's confusion matrix on freshly rendered ground truth."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--per-class", type=int, default=100, help="clips rendered per relation / motion")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the scene sampler")
    args = parser.parse_args(argv)
    rows, matrix = ground_truth_confusion(args.per_class, args.seed)
    print(format_confusion(rows, matrix))


if __name__ == "__main__":
    main()
