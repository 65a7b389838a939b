"""The relation LoRA triplet lands exactly where configured, on every backbone."""

from __future__ import annotations

import pytest
import torch

from dreamrelation.backbones import load_backbone
from dreamrelation.training.adapters import (
    INFERENCE_DRAW,
    TripletConfig,
    activate,
    adapter_parameters,
    adapters_for_selection,
    add_triplet,
    lora_layers,
    merged_lora,
    selection_mask,
)


def _blocks(prefix: str, n: int, names: list[str]) -> list[str]:
    return [f"{prefix}.{i}.{name}" for i in range(n) for name in names]


# Written out by hand from the tiny configs (2 blocks each), independent of the backbone code.
EXPECTED = {
    "mochi": {
        "relation": _blocks(
            "transformer_blocks", 2, ["attn1.to_q", "attn1.to_k", "attn1.add_q_proj", "attn1.add_k_proj"]
        ),
        "subject1": _blocks("transformer_blocks", 2, ["attn1.to_v", "attn1.add_v_proj"]),
        # Mochi's last block is context_pre_only: it has no text output projection.
        "ffn": [
            "transformer_blocks.0.attn1.to_out.0",
            "transformer_blocks.0.attn1.to_add_out",
            "transformer_blocks.1.attn1.to_out.0",
        ],
    },
    "wan": {
        "relation": _blocks("blocks", 2, ["attn1.to_q", "attn1.to_k", "attn2.to_q", "attn2.to_k"]),
        "subject1": _blocks("blocks", 2, ["attn1.to_v", "attn2.to_v"]),
        "ffn": _blocks("blocks", 2, ["attn1.to_out.0", "attn2.to_out.0"]),
    },
    "hunyuan": {
        "relation": _blocks(
            "transformer_blocks", 2, ["attn.to_q", "attn.to_k", "attn.add_q_proj", "attn.add_k_proj"]
        )
        + _blocks("single_transformer_blocks", 2, ["attn.to_q", "attn.to_k"]),
        "subject1": _blocks("transformer_blocks", 2, ["attn.to_v", "attn.add_v_proj"])
        + _blocks("single_transformer_blocks", 2, ["attn.to_v"]),
        "ffn": _blocks("transformer_blocks", 2, ["attn.to_out.0", "attn.to_add_out"]),
    },
}


def _wrapped(transformer: torch.nn.Module) -> dict[str, set[str]]:
    return {name: set(layer.lora_A.keys()) for name, layer in lora_layers(transformer)}


@pytest.mark.parametrize("backbone", sorted(EXPECTED))
def test_triplet_lands_exactly_on_configured_modules(backbone: str) -> None:
    bb = load_backbone(backbone, "tiny")
    targets = add_triplet(bb, TripletConfig(rank=4, alpha=4))
    expected = dict(EXPECTED[backbone])
    expected["subject2"] = expected["subject1"]
    assert {a: sorted(m) for a, m in targets.items()} == {a: sorted(m) for a, m in expected.items()}
    wrapped = _wrapped(bb.transformer)
    by_module: dict[str, set[str]] = {}
    for adapter, modules in expected.items():
        for m in modules:
            by_module.setdefault(m, set()).add(adapter)
    assert wrapped == by_module  # nothing else (e.g. Hunyuan's token refiner) got a LoRA
    # text and vision tokens have separate weights: different parameters per stream
    rel = adapter_parameters(bb.transformer, "relation")
    assert len(rel) == 2 * len(expected["relation"])


def test_placement_is_configurable_per_adapter() -> None:
    bb = load_backbone("mochi", "tiny")
    cfg = TripletConfig(
        rank=2,
        alpha=2,
        placement={"relation": ["v"], "subject1": ["q", "k"], "subject2": ["q", "k"], "ffn": []},
        streams=["vision"],
    )
    targets = add_triplet(bb, cfg)
    assert set(targets) == {"relation", "subject1", "subject2"}
    assert targets["relation"] == ["transformer_blocks.0.attn1.to_v", "transformer_blocks.1.attn1.to_v"]
    assert all("add_" not in m for mods in targets.values() for m in mods)


def test_rank_per_adapter() -> None:
    bb = load_backbone("mochi", "tiny")
    add_triplet(bb, TripletConfig(rank=4, alpha=4, ranks={"ffn": 2}))
    layer = dict(lora_layers(bb.transformer))["transformer_blocks.0.attn1.to_out.0"]
    assert layer.lora_A["ffn"].weight.shape[0] == 2
    layer = dict(lora_layers(bb.transformer))["transformer_blocks.0.attn1.to_q"]
    assert layer.lora_A["relation"].weight.shape[0] == 4


def test_selection_strategy() -> None:
    present = ["relation", "subject1", "subject2", "ffn"]
    assert adapters_for_selection("relation", present) == ["relation", "subject1", "subject2", "ffn"]
    assert adapters_for_selection("subject2", present) == ["subject2", "ffn"]
    assert adapters_for_selection("relation", ["relation", "ffn"]) == ["relation", "ffn"]
    with pytest.raises(ValueError, match="choose from"):
        adapters_for_selection("ffn", present)
    # the fourth draw (hmt.inference_draw) trains what inference uses, on the relation mask
    assert adapters_for_selection(INFERENCE_DRAW, present) == ["relation", "ffn"]
    assert adapters_for_selection(INFERENCE_DRAW, ["relation"]) == ["relation"]
    assert selection_mask(INFERENCE_DRAW) == "relation" and selection_mask("subject1") == "subject1"


def _trained_triplet_and_input():
    bb = load_backbone("mochi", "tiny")
    add_triplet(bb, TripletConfig(rank=2, alpha=4), seed=0)
    with torch.no_grad():  # peft starts B at zero; give every adapter a non-zero update
        for name, p in bb.transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    x = torch.randn(1, 12, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cond = bb.encode_prompts(["a cat is hugging a dog."])
    return bb, x, cond


def test_zero_scaled_inactive_adapters_change_nothing_in_the_forward_pass() -> None:
    bb, x, cond = _trained_triplet_and_input()
    selected = adapters_for_selection("subject1", ["relation", "subject1", "subject2", "ffn"])
    activate(bb.transformer, selected)
    frozen = bb.predict(x, torch.tensor([0.5]), cond)
    activate(bb.transformer, selected, inactive="zero_scaled")
    zero_scaled = bb.predict(x, torch.tensor([0.5]), cond)
    assert torch.equal(frozen, zero_scaled)
    # ...but every adapter is computed and trains: the unselected get a zero gradient, not None
    zero_scaled.square().mean().backward()
    for adapter in ("relation", "subject2"):
        grads = [p.grad for p in adapter_parameters(bb.transformer, adapter).values()]
        assert all(g is not None and not g.any() for g in grads)
    assert any(p.grad.any() for p in adapter_parameters(bb.transformer, "subject1").values())
    # the saved update keeps each adapter's full alpha/r, whatever the last step scaled to 0
    merged = merged_lora(bb.transformer, ["relation", "ffn"])
    activate(bb.transformer, ["relation", "ffn"], trainable=False)
    assert all(
        torch.equal(merged[k][1], v[1]) for k, v in merged_lora(bb.transformer, ["relation", "ffn"]).items()
    )
    layer = dict(lora_layers(bb.transformer))["transformer_blocks.0.attn1.to_q"]
    assert layer.scaling["relation"] == 2.0


@pytest.mark.parametrize(("inactive", "moves"), [("frozen", False), ("zero_scaled", True)])
def test_adamw_moves_an_unselected_adapter_only_when_zero_scaled(inactive: str, moves: bool) -> None:
    bb, x, cond = _trained_triplet_and_input()
    present = ["relation", "subject1", "subject2", "ffn"]
    params = [p for n, p in bb.transformer.named_parameters() if "lora_" in n]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
    for selected in ("relation", "subject1"):  # relation trains on step 1, is not selected on step 2
        activate(bb.transformer, adapters_for_selection(selected, present), inactive=inactive)
        optimizer.zero_grad(set_to_none=True)
        bb.predict(x, torch.tensor([0.5]), cond).square().mean().backward()
        optimizer.step()
        if selected == "relation":
            before = {
                k: p.detach().clone() for k, p in adapter_parameters(bb.transformer, "relation").items()
            }
    after = adapter_parameters(bb.transformer, "relation")
    moved = any(not torch.equal(before[k], after[k].detach()) for k in before)
    assert moved is moves


def test_inactive_adapters_are_not_computed_and_get_no_grad() -> None:
    bb = load_backbone("mochi", "tiny")
    add_triplet(bb, TripletConfig(rank=2, alpha=2))
    # Poison subject2 and relation: if they were computed, the output would be NaN.
    with torch.no_grad():
        for adapter in ("relation", "subject2"):
            for p in adapter_parameters(bb.transformer, adapter).values():
                p.fill_(float("nan"))
    activate(bb.transformer, adapters_for_selection("subject1", ["relation", "subject1", "subject2", "ffn"]))
    x = torch.randn(1, 12, 2, 4, 4)
    cond = bb.encode_prompts(["a cat is hugging a dog."])
    out = bb.predict(x, torch.tensor([0.5]), cond)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for adapter in ("relation", "subject2"):
        assert all(
            p.grad is None and not p.requires_grad
            for p in adapter_parameters(bb.transformer, adapter).values()
        )
    for adapter in ("subject1", "ffn"):
        grads = [p.grad for p in adapter_parameters(bb.transformer, adapter).values()]
        assert all(g is not None for g in grads)


def test_projection_modules_still_found_after_a_lora_is_loaded() -> None:
    bb = load_backbone("mochi", "tiny")
    before = bb.projection_modules("q")
    add_triplet(bb, TripletConfig(rank=2, alpha=2))
    assert bb.projection_modules("q") == before
