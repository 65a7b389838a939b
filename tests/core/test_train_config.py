"""TrainConfig's cross-setting checks fail in validation, before any model or cache is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamrelation.config import TrainConfig, load_config
from dreamrelation.errors import ConfigError
from dreamrelation.training.methods import METHOD_NAMES, method_class
from dreamrelation.training.methods.lora import DreamRelationMethod
from dreamrelation.training.methods.settings import LORA_METHODS

# a cache folder that does not exist: every check below must fire without reading it
COMMON = {"cache": ["/nonexistent/cache"], "output": "/nonexistent/run"}


@pytest.mark.parametrize("method", ["reversion", "motion_inversion", "motion_inversion_rcl"])
def test_hybrid_masks_are_refused_for_methods_without_adapters(method: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(TrainConfig, **COMMON, method=method, sets={"loss.hybrid_masks": True})
    assert str(caught.value) == (
        f"method {method} has no LoRA adapters for hybrid mask training to select; "
        "set loss.hybrid_masks: false (its default)"
    )


def test_hybrid_masks_need_a_selectable_adapter_in_the_placement() -> None:
    with pytest.raises(ConfigError, match=r"^hybrid_masks needs at least one of relation/subject1/subject2"):
        load_config(TrainConfig, **COMMON, sets={"lora.placement": {"relation": [], "ffn": ["out"]}})
    only_subject = load_config(TrainConfig, **COMMON, sets={"lora.placement": {"subject1": ["v"]}})
    assert only_subject.loss.hybrid_masks
    assert load_config(
        TrainConfig, **COMMON, sets={"lora.placement": {"ffn": ["out"]}, "loss.hybrid_masks": False}
    ).lora.present() == ["ffn"]


def test_reversion_validation_prompts_must_use_the_token(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(
        "method: reversion\nvalidation_every: 10\n"
        "validation_prompts: ['A dog <R> a cat.', 'A dog and a cat.']\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(TrainConfig, config, **COMMON)
    # the file that holds the setting, the problem and the fix; not the whole config echoed back
    assert str(caught.value) == (
        f"{config}: validation prompt 'A dog and a cat.' does not use the relation token; write the "
        "relation as <R>, e.g. 'A dog <R> a cat.'"
    )
    ok = load_config(TrainConfig, config, **COMMON, sets={"validation_prompts": ["A dog <R> a cat."]})
    assert ok.validation_prompts == ["A dog <R> a cat."]
    # other methods have no token to use
    assert load_config(TrainConfig, config, **COMMON, method="dreamrelation").method == "dreamrelation"


def test_lora_methods_are_the_methods_with_the_triplet() -> None:
    for name in METHOD_NAMES:
        assert issubclass(method_class(name), DreamRelationMethod) == (name in LORA_METHODS), name
