"""Why the toy base misses the *second* subject of most relation prompts: its words' context.

    python benchmarks/toy_subject_context.py [MODEL] [--runs BENCHMARK_OUTPUT [--method base] | --sample N]

The toy text encoder binds a colour to its shape by mixing every token with its neighbours at
offsets -2..+2 (``toyworld.backbone.build_text_encoder``). The base is pretrained on the four
generic motions only, so the words next to a subject are always generic-motion words; in six of
the eight relation prompts ("{a} is pushing {b} on ...") the second subject is surrounded by a
relation word and by "on", which it never saw there. This prints, per relation:

1. how far the second (and first) subject's token embeddings are from the same subjects' embeddings
   in the nearest generic caption: mean cosine similarity over ``--prompts`` calibration prompts
   (prompt seed 2025), taking the best-matching generic template for each;
2. how often the oracle finds the first / the second subject not drawn (``oracle.subject_verdict``):
   with ``--runs`` (the output folder of ``dreamrelation benchmark toy``), in that method's videos
   over every finished seed; with ``--sample N``, in MODEL's videos of N calibration prompts per
   relation (prompt seed 2025, the default sampler; about 5 s a video on one CPU thread).

It measures; it changes nothing. Part 1 needs only the text encoder (seconds on a CPU); ``--runs``
only the oracle on videos already rendered.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dreamrelation.devices import resolve_device
from dreamrelation.toyworld.backbone import SHIPPED_WEIGHTS, ToyBackbone
from dreamrelation.toyworld.oracle import subject_verdict, track_subjects
from dreamrelation.toyworld.pretrain import evaluation_prompts, sample_videos
from dreamrelation.toyworld.protocol import CALIBRATION_PROMPT_SEED
from dreamrelation.toyworld.video_io import read_mp4
from dreamrelation.toyworld.world import GENERIC_MOTIONS, RELATIONS, Subject, subject_phrase


def phrase_embeddings(tokenizer, text_encoder, text: str, phrase: str) -> torch.Tensor:  # noqa: ANN001
    """The encoder's output vectors of ``phrase``'s tokens where it first occurs in ``text``."""
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = text_encoder(ids).last_hidden_state[0]
    words = tokenizer(phrase, add_special_tokens=False).input_ids
    row = ids[0].tolist()
    start = next(i for i in range(len(row)) if row[i : i + len(words)] == words)
    return hidden[start : start + len(words)]


def context_similarity(model: str, n_prompts: int) -> dict[str, tuple[float, float]]:
    """relation -> (first, second subject's mean cosine similarity to the nearest generic caption)."""
    pipeline = ToyBackbone.from_pretrained(model).pipeline
    tokenizer, text_encoder = pipeline.tokenizer, pipeline.text_encoder
    items = evaluation_prompts(n_prompts, CALIBRATION_PROMPT_SEED)
    result = {}
    for relation in RELATIONS:
        first, second = [], []
        for _relation, prompt, subjects in (item for item in items if item[0] == relation):
            background = prompt.rsplit(" on a ", 1)[1]
            a, b = (subject_phrase(s) for s in subjects)
            generic = [f"{t.format(a=a, b=b)} on a {background}" for t in GENERIC_MOTIONS.values()]
            for phrase, out in ((a, first), (b, second)):
                here = phrase_embeddings(tokenizer, text_encoder, prompt, phrase)
                out.append(
                    max(
                        torch.cosine_similarity(
                            here, phrase_embeddings(tokenizer, text_encoder, text, phrase), dim=-1
                        )
                        .mean()
                        .item()
                        for text in generic
                    )
                )
        result[relation] = (float(np.mean(first)), float(np.mean(second)))
    return result


def _subject(phrase: str) -> Subject:
    """``"a red triangle"`` -> ``("triangle", "red")``."""
    _article, color, shape = phrase.split()
    return shape, color


Counts = dict[str, list[int]]  # relation -> [videos, first subject not drawn, second not drawn]


def _count(counts: Counts, relation: str, video: np.ndarray, subjects: list[Subject]) -> None:
    tracks = track_subjects(video, subjects)
    verdicts = [subject_verdict(t, s[0]) for t, s in zip(tracks, subjects, strict=True)]
    row = counts.setdefault(relation, [0, 0, 0])
    row[0] += 1
    row[1] += verdicts[0] != "ok"
    row[2] += verdicts[1] != "ok"


def not_drawn_in_runs(runs: Path, method: str) -> Counts:
    """Counts over ``method``'s finished video folders of a ``benchmark toy`` output."""
    counts: Counts = {}
    for relation in RELATIONS:
        for manifest in sorted((runs / "runs" / relation / method).glob("seed*/videos/manifest.json")):
            if not (manifest.parent / "DONE.json").is_file():
                continue  # still rendering
            for entry in json.loads(manifest.read_text())["videos"]:
                subjects = [_subject(entry["subject1"]), _subject(entry["subject2"])]
                _count(counts, relation, read_mp4(manifest.parent / entry["video"]), subjects)
    if not counts:
        raise SystemExit(f"{runs}: no finished {method!r} videos under runs/RELATION/{method}/seed*/videos")
    return counts


def not_drawn_in_samples(model: str, per_relation: int, device: str = "auto") -> Counts:
    """Counts over MODEL's videos of ``per_relation`` calibration prompts of every relation."""
    items = [i for i in evaluation_prompts(per_relation, CALIBRATION_PROMPT_SEED) if i[0] in RELATIONS]
    backbone = ToyBackbone.from_pretrained(model).to(resolve_device(device))
    videos = sample_videos(backbone, [prompt for _, prompt, _ in items], batch_size=16)
    counts: Counts = {}
    for video, (relation, _prompt, subjects) in zip(videos, items, strict=True):
        _count(counts, relation, video, list(subjects))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="?", default=str(SHIPPED_WEIGHTS))
    parser.add_argument("--prompts", type=int, default=10, help="calibration prompts per relation")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--runs", type=Path, help="output folder of `dreamrelation benchmark toy`")
    source.add_argument("--sample", type=int, help="render this many calibration prompts per relation")
    parser.add_argument("--method", default="base", help="with --runs: whose videos")
    parser.add_argument("--device", default="auto", help="with --sample: auto (a GPU if any), cpu, cuda")
    args = parser.parse_args()
    similarity = context_similarity(args.model, args.prompts)
    drawn, label = None, ""
    if args.runs:
        drawn, label = not_drawn_in_runs(args.runs, args.method), args.method
    elif args.sample:
        drawn, label = not_drawn_in_samples(args.model, args.sample, args.device), "sampled"
    header = "| relation | subject 1 similarity | subject 2 similarity |"
    if drawn:
        header += f" {label}: videos | subject 1 not drawn | subject 2 not drawn |"
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for relation, (first, second) in similarity.items():
        row = f"| {relation} | {first:.3f} | {second:.3f} |"
        if drawn:
            n, miss1, miss2 = drawn.get(relation, [0, 0, 0])
            row += f" {n} | {miss1} ({miss1 / max(n, 1):.0%}) | {miss2} ({miss2 / max(n, 1):.0%}) |"
        print(row)


if __name__ == "__main__":
    main()
