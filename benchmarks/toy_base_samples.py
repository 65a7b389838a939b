"""A contact sheet of a toy base model's samples, with the oracle's verdict on every subject.

    python benchmarks/toy_base_samples.py [MODEL] --output docs/toy_base_samples.png

Renders ``--per-relation`` calibration prompts of every relation (prompt seed 2025, the prompts the
sampler was chosen on, never the acceptance ones) at the default sampler, prints for each video
whether each prompted subject is drawn (its colour in at least half the frames, and its shape), and
writes frames 0, 5, 10 and 15 of every video as one row of a PNG (two panels side by side).
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
from PIL import Image

from dreamrelation.toyworld.backbone import SHIPPED_WEIGHTS, ToyBackbone
from dreamrelation.toyworld.oracle import subject_verdict, track_subjects
from dreamrelation.toyworld.pretrain import evaluation_prompts, sample_videos
from dreamrelation.toyworld.protocol import CALIBRATION_PROMPT_SEED
from dreamrelation.toyworld.world import RELATIONS

FRAMES = (0, 5, 10, 15)


def verdict(video: np.ndarray, subjects: list[tuple[str, str]]) -> list[str]:
    """The oracle's verdict on each prompted subject (``oracle.subject_verdict``)."""
    tracks = track_subjects(video, subjects)
    return [subject_verdict(track, shape) for track, (shape, _color) in zip(tracks, subjects, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="?", default=str(SHIPPED_WEIGHTS))
    parser.add_argument("--output", required=True)
    parser.add_argument("--per-relation", type=int, default=3)
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    items = [
        item
        for item in evaluation_prompts(args.per_relation, CALIBRATION_PROMPT_SEED)
        if item[0] in RELATIONS
    ]
    backbone = ToyBackbone.from_pretrained(args.model)
    videos = sample_videos(backbone, [prompt for _, prompt, _ in items], batch_size=12)
    counts: collections.Counter[str] = collections.Counter()
    rows = []
    for video, (_relation, prompt, subjects) in zip(videos, items, strict=True):
        result = verdict(video, list(subjects))
        counts["both drawn" if result == ["ok", "ok"] else " + ".join(sorted(result))] += 1
        print(f"{prompt:<95} {result}")
        rows.append(np.concatenate([video[f] for f in FRAMES], axis=1))
    print(dict(counts))
    half = (len(rows) + 1) // 2
    left = np.concatenate(rows[:half], axis=0)
    right = np.concatenate(rows[half:] + [np.zeros_like(rows[0])] * (2 * half - len(rows)), axis=0)
    gap = np.full((left.shape[0], 8, 3), 255, dtype=np.uint8)
    sheet = np.concatenate([left, gap, right], axis=1)
    size = (sheet.shape[1] * args.scale, sheet.shape[0] * args.scale)
    Image.fromarray(sheet).resize(size, Image.NEAREST).save(args.output, optimize=True)


if __name__ == "__main__":
    main()
