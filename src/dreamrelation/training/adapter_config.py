"""The relation LoRA triplet as data: adapter names, what HMT selects, and :class:`TripletConfig`.

Import-light (pydantic and the plain-data layout table only), so reading a training config imports
neither torch nor peft; :mod:`dreamrelation.training.adapters` injects what this describes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dreamrelation.backbones.layouts import ROLES

ADAPTERS: tuple[str, ...] = ("relation", "subject1", "subject2", "ffn")
#: adapters the LoRA selection strategy picks from, one per iteration
SELECTABLE: tuple[str, ...] = ("relation", "subject1", "subject2")
#: adapters used at inference: subject LoRAs are excluded so exemplar appearance stays out
INFERENCE_ADAPTERS: tuple[str, ...] = ("relation", "ffn")
#: the optional fourth HMT draw (``hmt.inference_draw``): the inference adapters on the relation mask
INFERENCE_DRAW = "inference"


class TripletConfig(BaseModel):
    """Where each adapter goes and how big it is. Defaults: the paper (rank 16, alpha 16)."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False
    )  # a typo (`rnak: 8`) is an error, not a default

    #: rank of every adapter (paper and official code: 16)
    rank: int = Field(16, gt=0)
    #: LoRA alpha; the update is scaled by alpha / rank
    alpha: float = Field(16.0, gt=0)
    #: dropout on the adapters' input
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    #: adapter -> projection roles it is injected into; an empty list removes the adapter (ablations)
    placement: dict[str, list[str]] = Field(
        default_factory=lambda: {"relation": ["q", "k"], "subject1": ["v"], "subject2": ["v"], "ffn": ["out"]}
    )
    #: per-adapter rank overrides
    ranks: dict[str, int] = Field(default_factory=dict)
    #: token streams that get adapters (None = every stream the backbone has)
    streams: list[str] | None = None

    @field_validator("placement")
    @classmethod
    def _known_placement(cls, placement: dict[str, list[str]]) -> dict[str, list[str]]:
        for adapter, roles in placement.items():
            if adapter not in ADAPTERS:
                raise ValueError(
                    f"unknown adapter {adapter!r} in placement; adapters are {', '.join(ADAPTERS)}"
                )
            bad = [r for r in roles if r not in ROLES]
            if bad:
                raise ValueError(f"adapter {adapter!r}: unknown roles {bad}; roles are {', '.join(ROLES)}")
        return placement

    @field_validator("ranks")
    @classmethod
    def _known_ranks(cls, ranks: dict[str, int]) -> dict[str, int]:
        unknown = [a for a in ranks if a not in ADAPTERS]
        if unknown:
            raise ValueError(f"unknown adapter(s) {unknown} in ranks; adapters are {', '.join(ADAPTERS)}")
        bad = {a: r for a, r in ranks.items() if r < 1}
        if bad:
            raise ValueError(f"ranks must be at least 1, got {bad}")
        return ranks

    def rank_of(self, adapter: str) -> int:
        return self.ranks.get(adapter, self.rank)

    def present(self) -> list[str]:
        """Adapters this config creates, in canonical order."""
        return [a for a in ADAPTERS if self.placement.get(a)]
