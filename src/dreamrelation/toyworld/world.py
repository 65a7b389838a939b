"""Procedural toy world: two coloured sprites acting out NTU-style mutual actions.

Every clip is a pure function of its :class:`Scene` (the seed drives a ``numpy`` Generator), so
exemplar sets, evaluation prompts and ground truth for the oracle can be regenerated exactly.

Coordinates: a trajectory is the sprite's centre in pixel-index units, ``(x, y)`` = (column, row);
a symmetric sprite's pixels have their centroid exactly there (up to rounding to whole pixels).
Subject 2 is drawn over subject 1. ``Clip.masks`` are the FULL sprite silhouettes (they may overlap
while the subjects hug); the mask PNGs of :func:`write_dataset_folder` paint each pixel with its
visible owner instead, because a mask PNG holds one label per pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dreamrelation.toyworld.video_io import write_mp4

DEFAULT_FRAMES = 16
DEFAULT_SIZE = 32
DEFAULT_SPRITE_SIZE = 8

# Saturated or very bright colours, at least ~95 apart in RGB, so that nearest-colour tracking
# never confuses two subjects or a subject with a (dull, dark) background.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 90, 255),
    "yellow": (240, 230, 30),
    "cyan": (30, 220, 230),
    "magenta": (230, 40, 220),
    "orange": (255, 140, 0),
    "white": (245, 245, 245),
}

SHAPES: tuple[str, ...] = ("person", "circle", "square", "triangle", "diamond", "cross")

# name -> caption phrase. Patterns are dull, low-contrast and darker than any subject.
BACKGROUNDS: dict[str, str] = {
    "dark": "dark background",
    "grey": "grey background",
    "striped": "striped background",
    "checkered": "checkered background",
    "dotted": "dotted background",
}
BACKGROUND_COLORS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "dark": ((20, 20, 28), (20, 20, 28)),
    "grey": ((105, 105, 105), (105, 105, 105)),
    "striped": ((38, 38, 52), (66, 66, 84)),
    "checkered": ((36, 50, 36), (62, 78, 62)),
    "dotted": ((42, 32, 32), (92, 76, 76)),
}
# Spatial period of each pattern (pixels); its phase is random per scene.
BACKGROUND_PERIODS: dict[str, int] = {"dark": 1, "grey": 1, "striped": 4, "checkered": 8, "dotted": 4}

# Relations, modelled on NTU RGB+D mutual actions. Subject 1 is the actor of the caption's verb.
RELATIONS: dict[str, str] = {
    "walking_towards": "{a} and {b} are walking towards each other",
    "walking_apart": "{a} and {b} are walking apart from each other",
    "shaking_hands": "{a} is shaking hands with {b}",
    "hugging": "{a} is hugging {b}",
    "high_five": "{a} is giving a high-five to {b}",
    "pushing": "{a} is pushing {b}",
    "following": "{a} is following {b}",
    "punching": "{a} is punching {b}",
}

# Non-relational motions for pretraining the toy backbone; the oracle must call all of them "none".
GENERIC_MOTIONS: dict[str, str] = {
    "standing_still": "{a} and {b} are standing still",
    "drifting_together": "{a} and {b} are moving side by side in the same direction",
    "moving_alone": "{a} is moving while {b} stands still",
    "wandering": "{a} and {b} are wandering around independently",
}
_MOVING_ALONE_SECOND = "{a} stands still while {b} is moving"

Subject = tuple[str, str]
"""(shape, colour), e.g. ``("triangle", "red")``."""


@dataclass(frozen=True)
class Scene:
    """Everything that defines one clip; ``params`` overrides any sampled motion parameter by name."""

    subject1: Subject
    subject2: Subject
    relation: str
    background: str
    seed: int
    params: Mapping[str, float] = field(default_factory=dict)
    frames: int = DEFAULT_FRAMES
    size: int = DEFAULT_SIZE


@dataclass
class Clip:
    """A rendered scene with free ground truth."""

    frames: np.ndarray  # (F, H, W, 3) uint8
    masks: np.ndarray  # (2, F, H, W) bool, full sprite silhouettes
    trajectories: np.ndarray  # (2, F, 2) float, sprite centres (x, y)
    caption: str
    scene: Scene
    params: dict[str, float]  # every motion parameter actually used, for debugging and docs


def subject_phrase(subject: Subject) -> str:
    """``("triangle", "red")`` -> ``"a red triangle"``; ``("cross", "orange")`` -> ``"an orange cross"``."""
    shape, color = subject
    article = "an" if color[0] in "aeiou" else "a"
    return f"{article} {color} {shape}"


def caption_for(scene: Scene, mover: int = 0) -> str:
    """NTU-style caption, e.g. "a red triangle is shaking hands with a blue circle on a dark background."."""
    a, b = subject_phrase(scene.subject1), subject_phrase(scene.subject2)
    if scene.relation in RELATIONS:
        template = RELATIONS[scene.relation]
    else:
        template = GENERIC_MOTIONS[scene.relation]
        if scene.relation == "moving_alone" and mover == 1:
            template = _MOVING_ALONE_SECOND
    return f"{template.format(a=a, b=b)} on a {BACKGROUNDS[scene.background]}."


# ----------------------------------------------------------------------------- sprites


def sprite_mask(shape: str, size: int = DEFAULT_SPRITE_SIZE) -> np.ndarray:
    """Boolean ``(size, size)`` silhouette. Every shape spans the full height (the person is narrower),
    so a blob's larger bounding-box side measures the sprite size whatever its shape."""
    centres = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(centres, centres)
    ax, ay = np.abs(x), np.abs(y)
    half_pixel = 1.0 / size
    eps = 1e-6  # keeps left/right symmetric despite float rounding
    if shape == "person":  # head, neck, torso, two legs
        head = (ax <= 0.5 + eps) & (y <= -0.45)
        neck = (ax <= 0.2 + eps) & (y <= -0.2)
        torso = (ax <= 0.8 + eps) & (y > -0.2) & (y <= 0.45)
        legs = (ax >= 0.2 - eps) & (ax <= 0.8 + eps) & (y > 0.45)
        return head | neck | torso | legs
    if shape == "circle":
        return x**2 + y**2 <= 1.05
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "triangle":  # apex up
        return ax <= (y + 1) / 2 + half_pixel + eps
    if shape == "diamond":
        return ax + ay <= 1.0 + half_pixel + eps
    if shape == "cross":
        return np.minimum(ax, ay) <= 0.3
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def background_image(
    name: str, size: int = DEFAULT_SIZE, phase: tuple[int, int] = (0, 0), brightness: int = 0
) -> np.ndarray:
    """``(size, size, 3)`` uint8 background; ``phase`` shifts the pattern, ``brightness`` offsets it."""
    if name not in BACKGROUNDS:
        raise ValueError(f"unknown background {name!r}; choose one of {tuple(BACKGROUNDS)}")
    rows, cols = np.meshgrid(np.arange(size) + phase[0], np.arange(size) + phase[1], indexing="ij")
    if name == "striped":  # vertical stripes, 2 px each
        second = (cols // 2) % 2 == 1
    elif name == "checkered":  # 4 px checks
        second = ((rows // 4) + (cols // 4)) % 2 == 1
    elif name == "dotted":  # a 1 px dot every 4 px
        second = (rows % 4 == 0) & (cols % 4 == 0)
    else:
        second = np.zeros((size, size), dtype=bool)
    first_color, second_color = (np.asarray(c, dtype=np.int16) for c in BACKGROUND_COLORS[name])
    image = np.where(second[..., None], second_color, first_color) + brightness
    return np.clip(image, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- motion


class _Draw:
    """Samples named parameters from the scene's Generator unless the scene overrides them."""

    def __init__(self, rng: np.random.Generator, overrides: Mapping[str, float]) -> None:
        self.rng = rng
        self.overrides = overrides
        self.used: dict[str, float] = {}

    def uniform(self, name: str, low: float, high: float) -> float:
        # Always consume the random number so an override does not shift later draws.
        value = float(self.rng.uniform(low, high))
        value = float(self.overrides.get(name, value))
        self.used[name] = value
        return value

    def integer(self, name: str, low: int, high: int) -> int:
        """Uniform integer in ``[low, high]`` (inclusive)."""
        value = int(self.rng.integers(low, high + 1))
        value = int(self.overrides.get(name, value))
        self.used[name] = value
        return value


def _ramp(t: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """0 before ``t0``, 1 after ``t1``, linear between: constant-speed walking."""
    return np.clip((t - t0) / max(t1 - t0, 1e-6), 0.0, 1.0)


def _knots(t: np.ndarray, times: Sequence[float], values: Sequence[float]) -> np.ndarray:
    """Piecewise-linear path through (time, value) knots; times are forced increasing for short clips."""
    times_array = np.maximum.accumulate(np.asarray(times, dtype=float))
    times_array = times_array + np.arange(len(times_array)) * 1e-6
    return np.interp(t, times_array, np.asarray(values, dtype=float))


# A motion returns local positions (2, F, 2) as (u along the interaction axis, w across it), with
# subject 1 starting on the negative side, and screen-space vertical offsets (2, F) (jumps, shakes).
_Motion = Callable[[_Draw, np.ndarray, float], tuple[np.ndarray, np.ndarray]]


def _pack(u1: np.ndarray, w1, u2: np.ndarray, w2) -> np.ndarray:
    frames = len(u1)
    local = np.zeros((2, frames, 2))
    local[0, :, 0], local[0, :, 1] = u1, w1
    local[1, :, 0], local[1, :, 1] = u2, w2
    return local


def _approach(draw: _Draw, t: np.ndarray, start: float, end: float, t0: float, t1: float):
    """Both subjects walk towards each other from ``start`` to ``end`` centre distance."""
    share = draw.uniform("share", 0.4, 0.6)  # subject 1's part of the walk
    progress = _ramp(t, t0, t1)
    u1 = -start / 2 + share * (start - end) * progress
    u2 = start / 2 - (1 - share) * (start - end) * progress
    return u1, u2


def _walking_towards(draw: _Draw, t: np.ndarray, contact: float):
    last = t[-1]
    start = draw.uniform("start_distance", 19.0, 22.0)
    end = contact + draw.uniform("end_gap", 4.5, 6.0)
    t0 = draw.uniform("start_time", 0.0, 0.1) * last
    t1 = draw.uniform("end_time", 0.9, 1.0) * last
    u1, u2 = _approach(draw, t, start, end, t0, t1)
    return _pack(u1, 0.0, u2, draw.uniform("lateral_offset", -1.5, 1.5)), np.zeros((2, len(t)))


def _walking_apart(draw: _Draw, t: np.ndarray, contact: float):
    last = t[-1]
    start = contact + draw.uniform("start_gap", 1.0, 2.5)
    end = draw.uniform("end_distance", 19.0, 22.0)
    t0 = draw.uniform("start_time", 0.0, 0.1) * last
    t1 = draw.uniform("end_time", 0.9, 1.0) * last
    u1, u2 = _approach(draw, t, start, end, t0, t1)
    return _pack(u1, 0.0, u2, draw.uniform("lateral_offset", -1.5, 1.5)), np.zeros((2, len(t)))


def _shaking_hands(draw: _Draw, t: np.ndarray, contact: float):
    last = t[-1]
    start = draw.uniform("start_distance", 17.0, 21.0)
    end = contact + draw.uniform("contact_gap", 0.5, 1.5)
    contact_time = draw.uniform("contact_time", 0.35, 0.5) * last
    u1, u2 = _approach(draw, t, start, end, 0.0, contact_time)
    amplitude = draw.uniform("shake_amplitude", 1.5, 2.0)
    period = draw.uniform("shake_period", 3.5, 4.5)
    # Both hands go up and down together once they meet.
    shake = np.where(t > contact_time, -amplitude * np.sin(2 * np.pi * (t - contact_time) / period), 0.0)
    return _pack(u1, 0.0, u2, 0.0), np.stack([shake, shake])


def _hugging(draw: _Draw, t: np.ndarray, contact: float):
    last = t[-1]
    start = draw.uniform("start_distance", 17.0, 21.0)
    end = contact + draw.uniform("contact_gap", -3.0, -1.5)  # negative gap: the sprites overlap
    contact_time = draw.uniform("contact_time", 0.4, 0.6) * last
    u1, u2 = _approach(draw, t, start, end, 0.0, contact_time)
    return _pack(u1, 0.0, u2, 0.0), np.zeros((2, len(t)))


def _high_five(draw: _Draw, t: np.ndarray, contact: float):
    last = t[-1]
    start = draw.uniform("start_distance", 17.0, 21.0)
    end = contact + draw.uniform("contact_gap", 0.0, 1.0)
    contact_time = draw.uniform("contact_time", 0.28, 0.4) * last
    jump_height = draw.uniform("jump_height", 3.0, 4.0)
    jump_frames = draw.uniform("jump_frames", 3.5, 4.5)
    separation = draw.uniform("separation", 2.5, 4.0)  # how far each steps back afterwards
    u1, u2 = _approach(draw, t, start, end, 0.0, contact_time)
    back = separation * _ramp(t, contact_time + jump_frames, last)
    phase = np.clip((t - contact_time) / jump_frames, 0.0, 1.0)
    jump = -jump_height * np.sin(np.pi * phase)  # up is -y on screen
    return _pack(u1 - back, 0.0, u2 + back, 0.0), np.stack([jump, jump])


def _pushing(draw: _Draw, t: np.ndarray, contact: float):
    last = t[-1]
    start = draw.uniform("start_distance", 13.0, 16.0)
    contact_time = draw.uniform("contact_time", 0.35, 0.5) * last
    gap = draw.uniform("contact_gap", -0.5, 0.5)
    push = draw.uniform("push_distance", 5.0, 7.0)
    moved = push * _ramp(t, contact_time, last)
    u1 = (start - contact - gap) * _ramp(t, 0.0, contact_time) + moved
    u2 = start + moved  # subject 2 stands until it is hit, then is driven ahead of subject 1
    return _pack(u1, 0.0, u2, 0.0), np.zeros((2, len(t)))


def _following(draw: _Draw, t: np.ndarray, contact: float):
    distance = contact + draw.uniform("gap", 3.5, 5.0)
    speed = draw.uniform("speed", 0.5, 0.7)
    lag = draw.uniform("lag", 0.0, 2.0)  # the follower sets off a little after the leader
    u2 = distance + speed * t  # subject 2 leads
    u1 = speed * np.maximum(t - lag, 0.0)
    return _pack(u1, 0.0, u2, 0.0), np.zeros((2, len(t)))


def _punching(draw: _Draw, t: np.ndarray, contact: float):
    last = t[-1]
    start = draw.uniform("start_distance", 15.0, 18.0)
    lunge_time = draw.uniform("lunge_time", 0.2, 0.35) * last
    gap = draw.uniform("contact_gap", -0.5, 0.5)
    return_frames = draw.uniform("return_frames", 3.0, 4.0)
    home = draw.uniform("return_to", 0.0, 2.0)
    recoil = draw.uniform("recoil", 2.0, 3.5)
    hit = start - contact - gap
    # A two-frame lunge, one frame at the target, then back: fast out, slower home.
    u1 = _knots(
        t,
        [0, lunge_time, lunge_time + 2, lunge_time + 3, lunge_time + 3 + return_frames, last],
        [0, 0, hit, hit, home, home],
    )
    u2 = _knots(t, [0, lunge_time + 2, lunge_time + 4, last], [start, start, start + recoil, start + recoil])
    return _pack(u1, 0.0, u2, 0.0), np.zeros((2, len(t)))


def _standing_still(draw: _Draw, t: np.ndarray, contact: float):
    distance = draw.uniform("distance", contact + 5.0, 20.0)
    u1 = np.full(len(t), -distance / 2)
    return _pack(u1, 0.0, -u1, 0.0), np.zeros((2, len(t)))


def _drifting_together(draw: _Draw, t: np.ndarray, contact: float):
    separation = draw.uniform("separation", contact + 4.0, 14.0)
    # Side by side: the line between them is far from the direction of travel (unlike following).
    offset_angle = math.radians(draw.uniform("offset_angle_deg", 60.0, 90.0))
    side = 1.0 if draw.integer("side", 0, 1) else -1.0
    speed = draw.uniform("speed", 0.5, 0.8)
    u = speed * t
    du, dw = separation * math.cos(offset_angle), side * separation * math.sin(offset_angle)
    return _pack(u, 0.0, u + du, dw), np.zeros((2, len(t)))


def _moving_alone(draw: _Draw, t: np.ndarray, contact: float):
    distance = draw.uniform("distance", contact + 5.0, 16.0)
    mover = draw.integer("mover", 0, 1)
    # Away from or across the line to the other subject, never towards it.
    direction = math.radians(draw.uniform("direction_deg", 100.0, 260.0))
    speed = draw.uniform("speed", 0.5, 0.9)
    local = _pack(np.full(len(t), -distance / 2), 0.0, np.full(len(t), distance / 2), 0.0)
    towards_other = 1.0 if mover == 0 else -1.0
    local[mover, :, 0] += towards_other * speed * t * math.cos(direction)
    local[mover, :, 1] += speed * t * math.sin(direction)
    return local, np.zeros((2, len(t)))


def _wandering(draw: _Draw, t: np.ndarray, contact: float):
    distance = draw.uniform("distance", contact + 6.0, 18.0)
    local = _pack(np.full(len(t), -distance / 2), 0.0, np.full(len(t), distance / 2), 0.0)
    for subject in range(2):
        for axis in range(2):
            for k in range(2):  # two smooth sinusoids per axis: an aimless, curvy path
                amplitude = draw.uniform(f"amplitude_{subject}{axis}{k}", 1.0, 2.5)
                period = draw.uniform(f"period_{subject}{axis}{k}", 7.0, 16.0)
                phase = draw.uniform(f"phase_{subject}{axis}{k}", 0.0, 2 * math.pi)
                local[subject, :, axis] += amplitude * (
                    np.sin(2 * np.pi * t / period + phase) - math.sin(phase)
                )
    return local, np.zeros((2, len(t)))


_MOTIONS: dict[str, _Motion] = {
    "walking_towards": _walking_towards,
    "walking_apart": _walking_apart,
    "shaking_hands": _shaking_hands,
    "hugging": _hugging,
    "high_five": _high_five,
    "pushing": _pushing,
    "following": _following,
    "punching": _punching,
    "standing_still": _standing_still,
    "drifting_together": _drifting_together,
    "moving_alone": _moving_alone,
    "wandering": _wandering,
}


def _is_generic_by_construction(relation: str, positions: np.ndarray, contact: float) -> bool:
    """Generic motions stay clear of every relation's signature; samples that happen to look
    relational (contact, or for wandering a net approach/retreat or joint travel) are redrawn."""
    distance = np.linalg.norm(positions[0] - positions[1], axis=-1)
    if distance.min() - contact < 5.0:
        return False
    if relation != "wandering":
        return True
    # Start and end as two-frame means, as the oracle measures them.
    ends = max(1, positions.shape[1] // 8)
    starts, finishes = positions[:, :ends].mean(axis=1), positions[:, -ends:].mean(axis=1)
    if abs(np.linalg.norm(finishes[0] - finishes[1]) - np.linalg.norm(starts[0] - starts[1])) >= 2.0:
        return False
    moves = finishes - starts
    lengths = np.linalg.norm(moves, axis=-1)
    return not (lengths.min() >= 2.0 and float(moves[0] @ moves[1] / (lengths[0] * lengths[1])) > 0.3)


def _place(
    draw: _Draw, local: np.ndarray, lift: np.ndarray, relation: str, size: int, sprite_sizes: tuple[int, int]
) -> np.ndarray | None:
    """Rotate/mirror the local motion, add screen offsets and jitter, and fit it inside the frame."""
    if relation in RELATIONS:  # a side view, like NTU: the interaction axis stays near horizontal
        angle = math.radians(draw.uniform("angle_deg", -25.0, 25.0))
        if draw.integer("mirror", 0, 1):
            angle += math.pi
    else:
        angle = math.radians(draw.uniform("angle_deg", 0.0, 360.0))
    along = np.array([math.cos(angle), math.sin(angle)])
    across = np.array([-math.sin(angle), math.cos(angle)])
    positions = local[..., :1] * along + local[..., 1:] * across
    positions[..., 1] += lift
    jitter = 0.0 if relation == "standing_still" else draw.uniform("jitter", 0.05, 0.15)
    positions = positions + draw.rng.normal(0.0, 1.0, positions.shape) * jitter

    shift = np.zeros(2)
    for axis in range(2):
        low, high = -np.inf, np.inf
        for subject in range(2):
            half = (sprite_sizes[subject] - 1) / 2
            low = max(low, half - positions[subject, :, axis].min())
            high = min(high, size - 1 - half - positions[subject, :, axis].max())
        if low > high:
            return None
        shift[axis] = draw.rng.uniform(low, high)
    return positions + shift


def render(scene: Scene) -> Clip:
    """Render a scene into frames, full-silhouette masks, centre trajectories and a caption."""
    if scene.relation not in _MOTIONS:
        raise ValueError(
            f"unknown relation {scene.relation!r}; choose one of {tuple(RELATIONS) + tuple(GENERIC_MOTIONS)}"
        )
    for shape, color in (scene.subject1, scene.subject2):
        if shape not in SHAPES or color not in COLORS:
            raise ValueError(f"unknown subject {(shape, color)!r}; shapes {SHAPES}, colours {tuple(COLORS)}")
    if scene.background not in BACKGROUNDS:
        raise ValueError(f"unknown background {scene.background!r}; choose one of {tuple(BACKGROUNDS)}")

    rng = np.random.default_rng(scene.seed)
    draw = _Draw(rng, scene.params)
    t = np.arange(scene.frames, dtype=float)
    sprite_sizes = (
        int(scene.params.get("size1", DEFAULT_SPRITE_SIZE)),
        int(scene.params.get("size2", DEFAULT_SPRITE_SIZE)),
    )
    contact = (sprite_sizes[0] + sprite_sizes[1]) / 2  # centre distance at which the boxes touch
    for _attempt in range(200):
        local, lift = _MOTIONS[scene.relation](draw, t, contact)
        positions = _place(draw, local, lift, scene.relation, scene.size, sprite_sizes)
        if positions is None:
            continue
        if scene.relation in GENERIC_MOTIONS and not _is_generic_by_construction(
            scene.relation, positions, contact
        ):
            continue
        break
    else:
        raise ValueError(
            f"could not fit {scene.relation!r} into a {scene.size}px frame with {dict(scene.params)}"
        )

    period = BACKGROUND_PERIODS[scene.background]
    phase = (draw.integer("bg_phase_y", 0, period - 1), draw.integer("bg_phase_x", 0, period - 1))
    brightness = draw.integer("bg_brightness", -4, 4)
    background = background_image(scene.background, scene.size, phase, brightness)

    frames = np.repeat(background[None], scene.frames, axis=0)
    masks = np.zeros((2, scene.frames, scene.size, scene.size), dtype=bool)
    for subject_index, (shape, color) in enumerate((scene.subject1, scene.subject2)):
        sprite = sprite_mask(shape, sprite_sizes[subject_index])
        for frame_index in range(scene.frames):
            _stamp(masks[subject_index, frame_index], sprite, positions[subject_index, frame_index])
        # Subject 2 is painted second, so it is on top where the two overlap.
        frames[masks[subject_index]] = COLORS[color]

    mover = int(draw.used.get("mover", 0))
    return Clip(frames, masks, positions, caption_for(scene, mover), scene, dict(draw.used))


def _stamp(canvas: np.ndarray, sprite: np.ndarray, centre: np.ndarray) -> None:
    """OR a sprite into a boolean canvas so that its pixel centre lands on ``centre`` (clipped at edges)."""
    size = sprite.shape[0]
    top = int(np.floor(centre[1] - (size - 1) / 2 + 0.5))
    left = int(np.floor(centre[0] - (size - 1) / 2 + 0.5))
    height, width = canvas.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size, height), min(left + size, width)
    if y0 >= y1 or x0 >= x1:
        return
    canvas[y0:y1, x0:x1] |= sprite[y0 - top : y1 - top, x0 - left : x1 - left]


def sample_scenes(
    relation: str,
    n: int,
    rng: np.random.Generator,
    shapes: Sequence[str] = SHAPES,
    colors: Sequence[str] = tuple(COLORS),
    backgrounds: Sequence[str] = tuple(BACKGROUNDS),
    frames: int = DEFAULT_FRAMES,
    size: int = DEFAULT_SIZE,
) -> list[Scene]:
    """``n`` scenes of one relation with random subjects (two different colours) and backgrounds."""
    if len(colors) < 2:
        raise ValueError("need at least two colours: the oracle tells the subjects apart by colour")
    scenes = []
    for _ in range(n):
        shape1, shape2 = (str(shapes[i]) for i in rng.integers(0, len(shapes), size=2))
        color1, color2 = (str(colors[i]) for i in rng.choice(len(colors), size=2, replace=False))
        background = str(backgrounds[int(rng.integers(0, len(backgrounds)))])
        seed = int(rng.integers(0, 2**31 - 1))
        scenes.append(
            Scene((shape1, color1), (shape2, color2), relation, background, seed, frames=frames, size=size)
        )
    return scenes


# ----------------------------------------------------------------------------- dataset folder


def mask_image(masks: np.ndarray, frame_index: int) -> np.ndarray:
    """One mask PNG: subject 1 red, subject 2 green (on top, as in the video), black elsewhere."""
    first, second = masks[0, frame_index], masks[1, frame_index]
    image = np.zeros((*first.shape, 3), dtype=np.uint8)
    image[first & ~second] = (255, 0, 0)
    image[second] = (0, 255, 0)
    return image


def write_dataset_folder(
    clips: Sequence[Clip], root: str | Path, names: Sequence[str] | None = None, fps: int = 8
) -> list[Path]:
    """Write clips in the project's dataset-folder format; returns the video paths.

    ``<root>/<name>.mp4`` (lossless H.264, see :func:`write_mp4`), ``<root>/<name>.txt`` (caption) and
    ``<root>/masks/<name>/00000.png ...`` (one PNG per frame, see :func:`mask_image`).
    """
    root = Path(root)
    if names is None:
        names = [f"{index:04d}" for index in range(len(clips))]
    if len(names) != len(clips):
        raise ValueError(f"got {len(clips)} clips but {len(names)} names")
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for clip, name in zip(clips, names, strict=True):
        video_path = write_mp4(root / f"{name}.mp4", clip.frames, fps=fps)
        (root / f"{name}.txt").write_text(clip.caption + "\n", encoding="utf-8")
        mask_dir = root / "masks" / name
        mask_dir.mkdir(parents=True, exist_ok=True)
        for frame_index in range(clip.frames.shape[0]):
            Image.fromarray(mask_image(clip.masks, frame_index)).save(mask_dir / f"{frame_index:05d}.png")
        paths.append(video_path)
    return paths
