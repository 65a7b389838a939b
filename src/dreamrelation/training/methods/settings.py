"""Which training method, its own settings, and the defaults each method brings (import-light).

``TrainConfig.method`` picks the method; each method may change other ``TrainConfig`` fields'
defaults (e.g. MotionInversion's lr 0.02 and 400 steps). A default only applies where the user did
not set that field (YAML, ``--set`` or a keyword), so every default can still be overridden.
Kept free of torch/diffusers imports so ``dreamrelation.config`` can read it cheaply.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

MethodName = Literal[
    "dreamrelation",
    "direct_lora",
    "dreamrelation_official_optimizer",
    "dreamrelation_inference_steps",
    "relation_only",
    "relation_ffn",
    "reversion",
    "motion_inversion",
    "motion_inversion_rcl",
]
METHOD_NAMES: tuple[str, ...] = get_args(MethodName)
#: recipes of the relation LoRA triplet: DreamRelation's machinery with other adapters or another
#: Hybrid Mask Training; each is a method name whose defaults are below (docs/baselines.md)
TRIPLET_RECIPES: tuple[str, ...] = (
    "dreamrelation_official_optimizer",
    "dreamrelation_inference_steps",
    "relation_only",
    "relation_ffn",
)
#: the methods that train the LoRA triplet (the others have no adapter for Hybrid Mask Training
#: to select; tests/methods/test_baselines.py checks this against the method classes)
LORA_METHODS: tuple[str, ...] = ("dreamrelation", "direct_lora", *TRIPLET_RECIPES)

#: A basis of English prepositions: ReVersion's positives (relations live near prepositions in
#: the text-embedding space). Written for this project, not taken from the ReVersion release.
PREPOSITIONS: tuple[str, ...] = tuple(
    """about above across after against along alongside amid among around at before behind below
    beneath beside besides between beyond by down during except for from in inside into near of off
    on onto opposite out outside over past round since through throughout to toward towards under
    underneath unlike until up upon via with within without""".split()
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ReVersionConfig(_Strict):
    """ReVersion adapted to a video DiT: one learned relation token in the text encoder(s)."""

    #: the placeholder written in training captions and in generation prompts
    token: str = "<R>"
    #: word whose embedding initialises the token (the ReVersion release uses "and")
    initializer: str = "and"
    #: how the relation appears in the training captions: a template with ``{a}`` and ``{b}``
    #: ("{a} is shaking hands with {b}": caption -> "<a> <R> <b>"), or a plain phrase replaced by
    #: the token ("is shaking hands with"). None: the NTU template of the item's relation label.
    relation_template: str | None = None
    #: weight of the relation-steering contrastive loss
    steering_weight: float = Field(0.01, ge=0)
    #: temperature τ of the steering loss
    steering_temperature: float = Field(0.07, gt=0)
    #: prepositions drawn as positives per step
    num_positives: int = Field(4, gt=0)
    #: the positives' pool (default: English prepositions)
    positive_words: list[str] = Field(default_factory=lambda: list(PREPOSITIONS))
    #: caption words never used as negatives (articles carry no appearance)
    ignore_words: list[str] = Field(default_factory=lambda: ["a", "an", "the"])
    #: relation-focal importance sampling: p(σ) = 1 − α·cos(πσ) on [0, 1] (σ = 1 is pure noise)
    importance_sampling: bool = True
    #: α of the importance-sampling density (0: uniform σ)
    importance_alpha: float = Field(0.5, ge=0, lt=1)


class MotionInversionConfig(_Strict):
    """MotionInversion adapted to MM-DiT: motion embeddings on every vision attention input."""

    #: the value embedding lives on a grid ``stride`` times coarser than the token grid (1: one
    #: vector per token, the paper's form; larger strides save memory on large backbones)
    value_stride: int = Field(1, gt=0)
    #: "frame_difference": diffusion loss on frame differences of prediction and target (debiasing);
    #: "none": the plain diffusion loss
    debias: Literal["frame_difference", "none"] = "frame_difference"


_NO_MASKS_NO_RCL: dict[str, Any] = {"loss.hybrid_masks": False, "loss.contrastive_weight": 0.0}

#: TrainConfig defaults per method (dotted keys), applied where the user set nothing.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "dreamrelation": {},
    # the authors' optimizer: adapters not selected on a step are computed at scale 0, so AdamW's
    # momentum and weight decay keep moving them (here, by default, they are frozen for the step)
    "dreamrelation_official_optimizer": {"hmt.inactive_adapters": "zero_scaled"},
    # HMT with a fourth draw that trains the combination used at inference (relation + FFN on the
    # relation mask), which the paper's three draws never train as such
    "dreamrelation_inference_steps": {"hmt.inference_draw": True},
    # the relation LoRA alone on Q, K (both streams), every step on the relation mask, with RCL
    "relation_only": {"lora.placement": {"relation": ["q", "k"]}},
    # relation + FFN LoRAs, no subject LoRAs (the ablation "w/o subject LoRAs")
    "relation_ffn": {"lora.placement": {"relation": ["q", "k"], "ffn": ["out"]}},
    # plain LoRA on every attention projection of every stream, one adapter, plain loss
    "direct_lora": {"lora.placement": {"relation": ["q", "k", "v", "out"]}, **_NO_MASKS_NO_RCL},
    # the ReVersion release: constant lr 2.5e-4 scaled by its batch of 8 (2 x 4 accumulation),
    # 3000 steps, no warmup; no caption dropout (the token must be in the caption to learn)
    "reversion": {
        **_NO_MASKS_NO_RCL,
        "learning_rate": 2e-3,
        "max_steps": 3000,
        "warmup_steps": 0,
        "caption_dropout": 0.0,
    },
    # MotionInversion: lr ~0.02, ~400 steps
    "motion_inversion": {**_NO_MASKS_NO_RCL, "learning_rate": 0.02, "max_steps": 400, "warmup_steps": 0},
    "motion_inversion_rcl": {
        "loss.hybrid_masks": False,
        "learning_rate": 0.02,
        "max_steps": 400,
        "warmup_steps": 0,
    },
}


def _is_set(data: dict[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if isinstance(node, BaseModel):
            if part not in node.model_fields_set:
                return False
            node = getattr(node, part)
        elif isinstance(node, dict):
            if part not in node:
                return False
            node = node[part]
        else:
            return False
    return True


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if isinstance(child, BaseModel):
            child = child.model_dump(exclude_unset=True)
        node[part] = dict(child or {})
        node = node[part]
    node[leaf] = value


def apply_method_defaults(data: Any) -> Any:
    """Fill in the chosen method's defaults for every field the user left unset (raw config data)."""
    if not isinstance(data, dict):
        return data
    method = data.get("method", "dreamrelation")
    defaults = METHOD_DEFAULTS.get(method)
    if not defaults:
        return data
    data = dict(data)
    for key, value in defaults.items():
        if not _is_set(data, key):
            _set(data, key, value)
    return data
