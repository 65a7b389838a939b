"""The shipped evaluation set and prompt files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from dreamrelation.errors import InputError
from dreamrelation.generation.prompts import (
    SUBJECTS,
    build_eval_set,
    dump_jsonl,
    load_prompt_file,
    shipped_eval_set_text,
)
from dreamrelation.relations import RELATIONS, get_relation


def test_rebuilding_the_eval_set_reproduces_the_shipped_file_byte_for_byte() -> None:
    assert dump_jsonl(build_eval_set()) == shipped_eval_set_text()


def test_eval_set_has_40_distinct_unusual_prompts_per_relation_with_fixed_seeds() -> None:
    entries = load_prompt_file("paper")
    assert len(entries) == 26 * 40
    per_relation = Counter(e.relation for e in entries)
    assert set(per_relation) == {r.name for r in RELATIONS} and set(per_relation.values()) == {40}
    assert len({e.seed for e in entries}) == len(entries)
    for e in entries:
        relation = get_relation(e.relation)
        assert e.subject1 != e.subject2 and {e.subject1, e.subject2} <= set(SUBJECTS)
        assert e.prompt == relation.caption(e.subject1, e.subject2)
        assert "person" not in e.prompt
    prompts = [e.prompt for e in entries]
    assert len(set(prompts)) == len(prompts)
    first = json.loads(shipped_eval_set_text().splitlines()[0])
    assert first["ntu_caption"] == RELATIONS[0].caption()


def test_relation_filter_and_user_prompt_files(tmp_path: Path) -> None:
    only = load_prompt_file("paper", relations="shaking_hands,A055")
    assert {e.relation for e in only} == {"shaking_hands", "hugging"} and len(only) == 80
    plain = tmp_path / "p.json"
    plain.write_text(json.dumps(["a cat hugs a dog", {"prompt": "x", "seed": 7, "relation": "A058"}]))
    entries = load_prompt_file(plain)
    assert [(e.id, e.seed, e.relation) for e in entries] == [("0000", 0, None), ("0001", 7, "shaking_hands")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "sed": 1}\n')
    with pytest.raises(InputError, match="unknown keys"):
        load_prompt_file(bad)
    with pytest.raises(InputError, match="prompt file not found"):
        load_prompt_file(tmp_path / "missing.jsonl")
