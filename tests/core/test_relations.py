import pytest

from dreamrelation.relations import RELATIONS, get_relation, select_relations


def test_table_has_the_papers_26_two_person_relations():
    ids = [r.action_id for r in RELATIONS]
    assert ids == list(range(50, 61)) + list(range(106, 121))
    assert len({r.name for r in RELATIONS}) == 26


def test_caption_is_ntu_style():
    assert get_relation("A058").caption() == "A person is shaking hands with a person."
    assert get_relation(58).caption("a dog", "a cat") == "A dog is shaking hands with a cat."


def test_lookup_by_name_code_or_id_and_selection_order():
    assert get_relation("shaking-hands") is get_relation("A058") is get_relation("58")
    assert [r.name for r in select_relations("A112, hugging,55")] == ["hugging", "high_five"]
    assert len(select_relations("all")) == 26


def test_unknown_relation_names_the_choices():
    with pytest.raises(KeyError, match="shaking_hands"):
        get_relation("handshake")
