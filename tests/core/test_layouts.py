"""The one table of attention layouts (backbones/layouts.py) against the live modules of every
registered backbone, built from its tiny random config; the backbones and the Q/K/V analysis
both read it, so they find the same projections."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from dreamrelation.analysis.subspace import discover_projections
from dreamrelation.backbones import _LAZY, BACKBONES, ROLES, backbone_class, layouts

#: registered backbone -> its family in the table (the toy backbone is Mochi at toy size)
FAMILY_OF = {
    "mochi": "mochi",
    "wan": "wan",
    "hunyuan": "hunyuan",
    "toy": "mochi",
    "wan22_5b": "wan",
    "wan22_a14b": "wan",
    "hunyuan15": "hunyuan15",
    "hunyuan15_i2v": "hunyuan15",
    "ltx2": "ltx2",
    "wan22_a14b_i2v": "wan",
    "wan_i2v": "wan",
}
#: backbones made of several transformers: the regex before each block (Wan2.2 A14B's experts)
EXPERT_PREFIX = {"wan22_a14b": r"(?:high_noise|low_noise)\.", "wan22_a14b_i2v": r"(?:high_noise|low_noise)\."}
#: attention layers that carry no adapters on purpose (the table's comments say why)
NOT_IN_TABLE = {
    "hunyuan": re.compile(r"context_embedder\.token_refiner\..*"),
    "hunyuan15": re.compile(r"context_embedder\.token_refiner\..*"),
    # LTX-2's relation is learned on the video stream: its audio attention and the audio<->video
    # cross-attention carry no adapters
    "ltx2": re.compile(
        r"transformer_blocks\.\d+\.(audio_attn[12]|audio_to_video_attn|video_to_audio_attn)\..*"
    ),
    "mochi": re.compile(r"time_embed\.pooler\..*"),
    # Wan2.1 I2V's cross-attention projects the CLIP image tokens too: they carry the given frame's
    # appearance, not the relation, so the triplet leaves them out
    "wan": re.compile(r"blocks\.\d+\.attn2\.add_[kv]_proj"),
}
PROJECTIONS = {*layouts.VISION_PROJECTIONS.values(), *layouts.TEXT_PROJECTIONS.values()}


def test_the_table_imports_nothing() -> None:
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('layouts', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'peft') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, layouts.__file__], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_registered_backbone_has_a_layout() -> None:
    assert set(FAMILY_OF) == {*BACKBONES, *_LAZY}
    assert set(FAMILY_OF.values()) <= set(layouts.ATTENTION_LAYOUTS)
    assert layouts.ROLES == ROLES


@pytest.mark.parametrize("name", sorted(FAMILY_OF))
def test_the_table_names_exactly_the_live_attention_projections(name: str) -> None:
    cls = backbone_class(name)
    family = FAMILY_OF[name]
    prefix = EXPERT_PREFIX.get(name, "")
    assert cls.streams == layouts.streams(family, prefix=prefix)
    assert layouts.TRANSFORMER_CLASSES[cls.transformer_class.__name__] == family
    backbone = cls.tiny_transformer(seed=0)
    modules = dict(backbone.transformer.named_modules())

    # every Linear projection of every attention layer of the live model ...
    attentions = [n for n, m in modules.items() if isinstance(getattr(m, "to_q", None), torch.nn.Linear)]
    live = {
        f"{attention}.{projection}"
        for attention in attentions
        for projection in PROJECTIONS
        if isinstance(modules.get(f"{attention}.{projection}"), torch.nn.Linear)
    }
    skipped = NOT_IN_TABLE.get(family)
    live = {n for n in live if skipped is None or not skipped.fullmatch(n)}
    # ... is named by the table, and the table names nothing the model lacks
    named: set[str] = set()
    for stream, (block, attention, roles) in layouts.ATTENTION_LAYOUTS[family].items():
        matched = [a for a in attentions if re.fullmatch(rf"{prefix}{block}\.{attention}", a)]
        assert matched, f"{name}: stream {stream} matches no attention layer"
        for role, projection in roles.items():
            present = [f"{a}.{projection}" for a in matched if f"{a}.{projection}" in modules]
            assert present, f"{name}: {stream}/{role} ({projection}) is in no layer"
            named |= set(present)
    assert named == live

    # the backbone's LoRA targets and the analysis' discovery are the same modules
    targets = {
        (stream, role, module)
        for stream in cls.streams
        for role in ROLES
        for module in backbone.projection_modules(role, [stream])
    }
    # the analysis reads one checkpoint (one expert) at a time
    experts = getattr(backbone.transformer, "experts", {"": backbone.transformer})
    discovered = {
        (stream, role, f"{expert}.{tensor.removesuffix('.weight')}".lstrip("."))
        for expert, module in experts.items()
        for streams in discover_projections([n for n, _ in module.named_parameters()], family=family).values()
        for stream, by_role in streams.items()
        for role, tensor in by_role.items()
    }
    assert targets == discovered
    assert {module for _, _, module in targets} == live


def test_readme_table_lists_every_backbone_with_its_hub_id() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for name, cls in BACKBONES.items():
        if name in _LAZY:  # the toy backbone ships its own weights
            continue
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"README's backbone table has no row for {name}"
        assert f"`{cls.hub_id}`" in row and f"--backbone {name} " in row


@pytest.mark.parametrize("name", sorted(FAMILY_OF))
def test_tiny_transformer_is_the_transformer_of_tiny(name: str) -> None:
    # Backbone.tiny_transformer builds the transformer alone (training from a cache needs no more):
    # it must be the very weights and sequence length of the full tiny pipeline for the same seed
    cls = backbone_class(name)
    alone, full = cls.tiny_transformer(seed=3), cls.tiny(seed=3)
    assert alone.max_sequence_length == full.max_sequence_length
    expected = full.transformer.state_dict()
    got = alone.transformer.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[key], expected[key]) for key in expected)
