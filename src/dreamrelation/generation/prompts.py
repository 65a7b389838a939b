"""The evaluation prompt set (26 relations x 40 prompts with unusual subjects) and prompt files.

How the shipped set is built (``build_eval_set``; deterministic, no random-number generator whose
algorithm could change between Python or NumPy versions):

1. ``SUBJECTS`` is a fixed list of 24 subjects that never appear in NTU (animals, toys, characters).
2. For relation R, every ordered pair (a, b) of two different subjects gets the key
   ``sha256("dreamrelation-eval-v1/" + R.name + "/" + a + "/" + b)``; the 40 pairs with the smallest
   keys, in key order, are R's prompts. This is a seeded uniform choice without replacement.
3. Prompt k of R is ``R.caption(a, b)`` from the shared relation table (``dreamrelation.relations``),
   e.g. "A dog is shaking hands with a cat.", and renders with seed ``100 * R.action_id + k``.

``python -m dreamrelation.generation.prompts`` rewrites the shipped file; a test checks that the
rebuild equals it byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from dreamrelation.errors import InputError
from dreamrelation.files import write_text_atomic
from dreamrelation.relations import RELATIONS, Relation, get_relation

EVAL_SET_NAME = "paper"
EVAL_SET_FILE = "eval_prompts.jsonl"
PROMPTS_PER_RELATION = 40
SUBJECTS: tuple[str, ...] = (
    "a dog",
    "a cat",
    "a bear",
    "a raccoon",
    "a panda",
    "a penguin",
    "a monkey",
    "a fox",
    "a rabbit",
    "a kangaroo",
    "a lion",
    "a tiger",
    "an elephant",
    "a giraffe",
    "a koala",
    "a sloth",
    "a frog",
    "an otter",
    "a polar bear",
    "a gorilla",
    "a robot",
    "an astronaut",
    "a teddy bear",
    "a snowman",
)


@dataclass(frozen=True)
class PromptEntry:
    """One video to render: its prompt, the seed of its noise, and (for the judge) its relation."""

    id: str
    prompt: str
    seed: int
    relation: str | None = None
    subject1: str | None = None
    subject2: str | None = None

    def to_json(self) -> dict:
        """The entry as written in prompt files and manifests; with a relation, also its NTU-style
        caption ("A person is shaking hands with a person.") for reference."""
        data = {k: v for k, v in asdict(self).items() if v is not None}
        if self.relation is not None:
            data["ntu_caption"] = get_relation(self.relation).caption()
        return data


def _pair_key(relation: Relation, a: str, b: str) -> str:
    return hashlib.sha256(f"dreamrelation-eval-v1/{relation.name}/{a}/{b}".encode()).hexdigest()


def relation_prompts(relation: Relation, count: int = PROMPTS_PER_RELATION) -> list[PromptEntry]:
    """The ``count`` prompts of one relation (steps 2 and 3 of the module's procedure)."""
    pairs = sorted(
        ((a, b) for a in SUBJECTS for b in SUBJECTS if a != b), key=lambda p: _pair_key(relation, *p)
    )
    return [
        PromptEntry(
            id=f"{relation.code}-{k:02d}",
            prompt=relation.caption(a, b),
            seed=100 * relation.action_id + k,
            relation=relation.name,
            subject1=a,
            subject2=b,
        )
        for k, (a, b) in enumerate(pairs[:count])
    ]


def build_eval_set() -> list[PromptEntry]:
    """All 26 x 40 prompts, relations in table order."""
    return [entry for relation in RELATIONS for entry in relation_prompts(relation)]


def dump_jsonl(entries: list[PromptEntry]) -> str:
    return "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in entries)


def shipped_eval_set_text() -> str:
    return resources.files("dreamrelation.generation").joinpath("data", EVAL_SET_FILE).read_text("utf-8")


def entry_from_json(item: object, index: int, source: Path) -> PromptEntry:
    """One prompt-file or manifest entry, checked; errors name ``source`` and the entry."""
    if isinstance(item, str):
        item = {"prompt": item}
    if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
        raise InputError(
            source, f"entry {index} has no 'prompt' text", 'give each entry as {"prompt": "...", "seed": 0}'
        )
    unknown = set(item) - {"id", "prompt", "seed", "relation", "subject1", "subject2", "ntu_caption"}
    if unknown:
        raise InputError(source, f"entry {index} has unknown keys {sorted(unknown)}", "remove them")
    relation = item.get("relation")
    if relation is not None:
        try:
            relation = get_relation(relation).name
        except KeyError as exc:
            raise InputError(source, f"entry {index}: {exc.args[0]}", "fix the relation name") from None
    seed = item.get("seed", index)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(source, f"entry {index} has seed {seed!r}", "use a non-negative integer seed")
    return PromptEntry(
        id=str(item.get("id", f"{index:04d}")),
        prompt=item["prompt"].strip(),
        seed=seed,
        relation=relation,
        subject1=item.get("subject1"),
        subject2=item.get("subject2"),
    )


def load_prompt_file(spec: str | Path, relations: str | None = None) -> list[PromptEntry]:
    """A prompt set: the shipped one by name (``paper``), or a JSON list / JSONL file whose entries
    are strings or ``{"prompt", "seed", "relation", "id", "subject1", "subject2"}`` objects
    (missing seed: the entry's index; missing id: its index). ``relations`` keeps only those
    relations (comma-separated names, codes or ids)."""
    if str(spec) == EVAL_SET_NAME:
        source, text = Path(f"<shipped {EVAL_SET_FILE}>"), shipped_eval_set_text()
        is_jsonl = True
    else:
        source = Path(spec)
        if not source.is_file():
            raise InputError(
                source,
                "prompt file not found",
                f"give a .json/.jsonl file, or '{EVAL_SET_NAME}' for the shipped set",
            )
        text = source.read_text("utf-8")
        is_jsonl = source.suffix.lower() == ".jsonl"
    try:
        if is_jsonl:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            source, f"is not valid JSON ({exc})", "fix the file (JSONL: one object per line)"
        ) from None
    if isinstance(items, dict) and "prompts" in items:
        items = items["prompts"]
    if not isinstance(items, list) or not items:
        raise InputError(source, "holds no prompts", "give a non-empty list of prompts")
    entries = [entry_from_json(item, i, source) for i, item in enumerate(items)]
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise InputError(source, "has repeated ids", "give every entry its own 'id'")
    if relations:
        from dreamrelation.relations import select_relations

        try:
            wanted = {r.name for r in select_relations(relations)}
        except KeyError as exc:
            raise InputError(source, exc.args[0], "fix --relations") from None
        entries = [e for e in entries if e.relation in wanted]
        if not entries:
            raise InputError(source, f"has no prompt of relation(s) {relations}", "check --relations")
    return entries


if __name__ == "__main__":
    target = Path(__file__).parent / "data" / EVAL_SET_FILE
    write_text_atomic(target, dump_jsonl(build_eval_set()))
    print(f"wrote {target}")
