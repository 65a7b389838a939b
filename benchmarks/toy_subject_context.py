"""Why the toy base misses the *second* subject of most relation prompts: its words' context.

    python benchmarks/toy_subject_context.py [MODEL] [--runs BENCHMARK_OUTPUT [--method base] | --sample N]
    python benchmarks/toy_subject_context.py [MODEL] --swap N

The toy text encoder binds a colour to its shape by mixing every token with its neighbours at
offsets -2..+2 (``toyworld.backbone.build_text_encoder``). The base is pretrained on the four
generic motions only, so the words next to a subject are always generic-motion words; in six of
the eight relation prompts ("{a} is pushing {b} on ...") the second subject is surrounded by a
relation word and by "on", which it never saw there. This prints, per relation:

1. how far the second (and first) subject's token embeddings are from the same subjects' embeddings
   in the nearest generic caption: mean cosine similarity over ``--prompts`` calibration prompts
   (prompt seed 2025), taking the best-matching generic template for each;
2. how often the oracle finds the first / the second subject not drawn (``oracle.subject_verdict``):
   with ``--runs`` (the output folder of ``dreamrelation toy benchmark``), in that method's videos
   over every finished seed; with ``--sample N``, in MODEL's videos of N calibration prompts per
   relation (prompt seed 2025, the default sampler; about 5 s a video on one CPU thread).

3. ``--swap N``, the intervention: N calibration prompts per relation rendered twice from the same
   noise, once as they are and once with the second subject's three token vectors replaced by those
   of the same phrase in the best-matching generic caption (everything else, the relation words
   included, untouched). If the unseen neighbours are the cause, the second subject's misses fall to
   the generic relations' level in the swapped videos.

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
from dreamrelation.generation.render import to_uint8
from dreamrelation.toyworld.backbone import GUIDANCE_SCALE, NUM_INFERENCE_STEPS, SHIPPED_WEIGHTS, ToyBackbone
from dreamrelation.toyworld.oracle import subject_verdict, track_subjects
from dreamrelation.toyworld.pretrain import evaluation_prompts, sample_videos
from dreamrelation.toyworld.protocol import CALIBRATION_PROMPT_SEED
from dreamrelation.toyworld.video_io import read_mp4
from dreamrelation.toyworld.world import (
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    GENERIC_MOTIONS,
    RELATIONS,
    Subject,
    subject_phrase,
)


def phrase_span(tokenizer, text: str, phrase: str) -> slice:  # noqa: ANN001
    """Token positions of ``phrase`` where it first occurs in ``text`` (as the pipeline tokenizes)."""
    words = tokenizer(phrase, add_special_tokens=False).input_ids
    row = tokenizer(text).input_ids
    start = next(i for i in range(len(row)) if row[i : i + len(words)] == words)
    return slice(start, start + len(words))


def phrase_embeddings(tokenizer, text_encoder, text: str, phrase: str) -> torch.Tensor:  # noqa: ANN001
    """The encoder's output vectors of ``phrase``'s tokens where it first occurs in ``text``."""
    ids = tokenizer(text, return_tensors="pt").input_ids.to(text_encoder.device)
    with torch.no_grad():
        hidden = text_encoder(ids).last_hidden_state[0]
    return hidden[phrase_span(tokenizer, text, phrase)]


def nearest_generic(tokenizer, text_encoder, prompt: str, subjects: tuple[Subject, Subject]):  # noqa: ANN001, ANN201
    """(first similarity, second similarity, the generic caption nearest for the second subject)."""
    background = prompt.rsplit(" on a ", 1)[1]
    a, b = (subject_phrase(s) for s in subjects)
    generic = [f"{t.format(a=a, b=b)} on a {background}" for t in GENERIC_MOTIONS.values()]
    scores = []
    for phrase in (a, b):
        here = phrase_embeddings(tokenizer, text_encoder, prompt, phrase)
        scores.append(
            [
                torch.cosine_similarity(here, phrase_embeddings(tokenizer, text_encoder, t, phrase), dim=-1)
                .mean()
                .item()
                for t in generic
            ]
        )
    return max(scores[0]), max(scores[1]), generic[int(np.argmax(scores[1]))]


def context_similarity(model: str, n_prompts: int) -> dict[str, tuple[float, float]]:
    """relation -> (first, second subject's mean cosine similarity to the nearest generic caption)."""
    pipeline = ToyBackbone.from_pretrained(model).pipeline
    tokenizer, text_encoder = pipeline.tokenizer, pipeline.text_encoder
    items = evaluation_prompts(n_prompts, CALIBRATION_PROMPT_SEED)
    result = {}
    for relation in RELATIONS:
        scores = [
            nearest_generic(tokenizer, text_encoder, prompt, subjects)[:2]
            for name, prompt, subjects in items
            if name == relation
        ]
        result[relation] = (float(np.mean([f for f, _ in scores])), float(np.mean([s for _, s in scores])))
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
    """Counts over ``method``'s finished video folders of a ``toy benchmark`` output."""
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


@torch.no_grad()
def swap_second_subject(model: str, per_relation: int, device: str = "auto") -> tuple[Counts, Counts]:
    """Counts for the calibration prompts as they are and with the second subject's token vectors
    taken from the nearest generic caption (same noise seeds)."""
    backbone = ToyBackbone.from_pretrained(model).to(resolve_device(device))
    pipe = backbone.pipeline
    pipe.set_progress_bar_config(disable=True)
    items = [i for i in evaluation_prompts(per_relation, CALIBRATION_PROMPT_SEED) if i[0] in RELATIONS]
    max_length = backbone.max_sequence_length

    def encode(texts: list[str]) -> tuple[torch.Tensor, ...]:
        return pipe.encode_prompt(texts, max_sequence_length=max_length, device=pipe.device)

    embeds, mask, negative, negative_mask = encode([prompt for _, prompt, _ in items])
    swapped = embeds.clone()
    for row, (_relation, prompt, subjects) in enumerate(items):
        phrase = subject_phrase(subjects[1])
        generic = nearest_generic(pipe.tokenizer, pipe.text_encoder, prompt, subjects)[2]
        reference = encode([generic])[0][0]
        target = phrase_span(pipe.tokenizer, prompt, phrase)
        swapped[row, target] = reference[phrase_span(pipe.tokenizer, generic, phrase)]
    counts = []
    for prompt_embeds in (embeds, swapped):
        frames = []
        for begin in range(0, len(items), 16):
            chunk = slice(begin, begin + 16)
            out = pipe(
                prompt_embeds=prompt_embeds[chunk],
                prompt_attention_mask=mask[chunk],
                negative_prompt_embeds=negative[chunk],
                negative_prompt_attention_mask=negative_mask[chunk],
                num_frames=DEFAULT_FRAMES,
                height=DEFAULT_SIZE,
                width=DEFAULT_SIZE,
                num_inference_steps=NUM_INFERENCE_STEPS,
                # video i from generator seed i, as sample_videos draws them
                generator=[torch.Generator().manual_seed(begin + i) for i in range(len(items[chunk]))],
                output_type="np",
                guidance_scale=GUIDANCE_SCALE,
                max_sequence_length=max_length,
            )
            frames.extend(to_uint8(np.asarray(out.frames, dtype=np.float32)))
        tally: Counts = {}
        for video, (relation, _prompt, subjects) in zip(frames, items, strict=True):
            _count(tally, relation, video, list(subjects))
        counts.append(tally)
    return counts[0], counts[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="?", default=str(SHIPPED_WEIGHTS))
    parser.add_argument("--prompts", type=int, default=10, help="calibration prompts per relation")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--runs", type=Path, help="output folder of `dreamrelation toy benchmark`")
    source.add_argument("--sample", type=int, help="render this many calibration prompts per relation")
    source.add_argument("--swap", type=int, help="the intervention, on this many prompts per relation")
    parser.add_argument("--method", default="base", help="with --runs: whose videos")
    parser.add_argument("--device", default="auto", help="with --sample: auto (a GPU if any), cpu, cuda")
    args = parser.parse_args()
    similarity = context_similarity(args.model, args.prompts)
    drawn, label = None, ""
    if args.runs:
        drawn, label = not_drawn_in_runs(args.runs, args.method), args.method
    elif args.sample:
        drawn, label = not_drawn_in_samples(args.model, args.sample, args.device), "sampled"
    if args.swap:
        as_is, swapped = swap_second_subject(args.model, args.swap, args.device)
        print("| relation | videos | subject 2 not drawn, prompt as is | with generic subject-2 vectors |")
        print("| --- | --- | --- | --- |")
        for relation in RELATIONS:
            n, _, before = as_is[relation]
            after = swapped[relation][2]
            print(f"| {relation} | {n} | {before} ({before / n:.0%}) | {after} ({after / n:.0%}) |")
        return
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
