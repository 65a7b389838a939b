"""The paper's 26 two-person relations (NTU RGB+D A50–A60, NTU RGB+D 120 A106–A120), in one table.

NTU ingestion (`dreamrelation prepare ntu`) and the evaluation set both read this table; nothing
else restates it. Each relation has a stable name (used for folders and on the command line),
its NTU action id, and a caption template in NTU style: ``{a}`` is the actor (subject 1 of the
masks), ``{b}`` the other subject. Import-free on purpose (no torch), so it loads instantly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    name: str
    action_id: int
    #: NTU-style caption with the two subjects as ``{a}`` (actor) and ``{b}``
    template: str

    @property
    def code(self) -> str:
        """NTU file-name code, e.g. ``A058``."""
        return f"A{self.action_id:03d}"

    def caption(self, a: str = "a person", b: str = "a person") -> str:
        """``caption("a dog", "a cat")`` -> ``"A dog is shaking hands with a cat."``."""
        text = self.template.format(a=a, b=b)
        return text[0].upper() + text[1:] + "."


RELATIONS: tuple[Relation, ...] = (
    Relation("punching", 50, "{a} is punching {b}"),
    Relation("kicking", 51, "{a} is kicking {b}"),
    Relation("pushing", 52, "{a} is pushing {b}"),
    Relation("patting_back", 53, "{a} is patting {b} on the back"),
    Relation("pointing_finger", 54, "{a} is pointing a finger at {b}"),
    Relation("hugging", 55, "{a} is hugging {b}"),
    Relation("giving_object", 56, "{a} is giving something to {b}"),
    Relation("touching_pocket", 57, "{a} is touching the pocket of {b}"),
    Relation("shaking_hands", 58, "{a} is shaking hands with {b}"),
    Relation("walking_towards", 59, "{a} and {b} are walking towards each other"),
    Relation("walking_apart", 60, "{a} and {b} are walking apart from each other"),
    Relation("hitting_with_object", 106, "{a} is hitting {b} with an object"),
    Relation("wielding_knife", 107, "{a} is wielding a knife towards {b}"),
    Relation("knocking_over", 108, "{a} is knocking over {b}"),
    Relation("grabbing_stuff", 109, "{a} is grabbing stuff from {b}"),
    Relation("shooting_with_gun", 110, "{a} is shooting at {b} with a gun"),
    Relation("stepping_on_foot", 111, "{a} is stepping on the foot of {b}"),
    Relation("high_five", 112, "{a} is giving a high-five to {b}"),
    Relation("cheers_and_drink", 113, "{a} and {b} are clinking glasses and drinking"),
    Relation("carrying_together", 114, "{a} and {b} are carrying an object together"),
    Relation("taking_photo", 115, "{a} is taking a photo of {b}"),
    Relation("following", 116, "{a} is following {b}"),
    Relation("whispering", 117, "{a} is whispering in the ear of {b}"),
    Relation("exchanging_things", 118, "{a} and {b} are exchanging things"),
    Relation("supporting_with_hand", 119, "{a} is supporting {b} with a hand"),
    Relation("rock_paper_scissors", 120, "{a} and {b} are playing rock-paper-scissors"),
)

BY_NAME: dict[str, Relation] = {r.name: r for r in RELATIONS}
BY_ACTION_ID: dict[int, Relation] = {r.action_id: r for r in RELATIONS}


def get_relation(key: str | int) -> Relation:
    """Look a relation up by name (``shaking_hands``), code (``A058``) or action id (``58``)."""
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        relation = BY_ACTION_ID.get(int(key))
    elif isinstance(key, str) and key[:1] in "Aa" and key[1:].isdigit():
        relation = BY_ACTION_ID.get(int(key[1:]))
    else:
        relation = BY_NAME.get(str(key).strip().lower().replace("-", "_").replace(" ", "_"))
    if relation is None:
        raise KeyError(
            f"unknown relation {key!r}; use a name ({', '.join(BY_NAME)}), "
            "an NTU code such as A058, or an action id"
        )
    return relation


def select_relations(spec: str) -> list[Relation]:
    """``"all"`` or a comma-separated list of names, codes or ids, in table order, without repeats."""
    if spec.strip().lower() == "all":
        return list(RELATIONS)
    chosen = {get_relation(part.strip()).action_id for part in spec.split(",") if part.strip()}
    if not chosen:
        raise KeyError("no relation named; give 'all' or names such as shaking_hands,hugging")
    return [r for r in RELATIONS if r.action_id in chosen]
