"""Feature and attention maps on the tiny random Mochi, Wan and HunyuanVideo: right shapes, exact
softmax rows, and a generation that is bit-for-bit the one made without watching it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from dreamrelation.analysis.maps import (
    AttentionMaps,
    FeatureMaps,
    attention_maps,
    compare_attention,
    feature_maps,
    locate_word,
    save_attention_figure,
    save_feature_figure,
    upsample_maps,
)
from dreamrelation.backbones import load_backbone
from dreamrelation.cli.maps import register
from dreamrelation.errors import ConfigError
from dreamrelation.generation.lora_files import save_lora_files
from dreamrelation.generation.render import render
from dreamrelation.training.adapters import TripletConfig, add_triplet

# 32x32 gives Mochi and Wan a 2x2 token grid (VAE 8x, patch 2); HunyuanVideo has patch 1.
GEOMETRY = {
    "mochi": {"num_frames": 7, "height": 32, "width": 32},
    "wan": {"num_frames": 5, "height": 32, "width": 32},
    "hunyuan": {"num_frames": 5, "height": 16, "width": 16},
    "wan22_5b": {"num_frames": 5, "height": 64, "width": 64},  # 16x VAE, patch 2
    "wan22_a14b": {"num_frames": 5, "height": 32, "width": 32},
    "hunyuan15": {"num_frames": 5, "height": 32, "width": 32},  # 16x VAE, patch 1
    "ltx2": {"num_frames": 9, "height": 64, "width": 64},  # 8k+1 frames, 32x VAE, packed tokens
}
JOINT = {"mochi", "hunyuan", "hunyuan15"}
# Hunyuan: 2 dual- + 2 single-stream; Wan2.2 A14B: the 2 layers of the expert that runs at the step
TEXT_ATTENTION_LAYERS = {
    "mochi": 2,
    "wan": 2,
    "hunyuan": 4,
    "wan22_5b": 2,
    "wan22_a14b": 2,
    "hunyuan15": 2,
    "ltx2": 2,
}
PROMPT = "a bear is shaking hands with a raccoon."
STEPS = {"num_inference_steps": 3, "step": 2}


def _render_kwargs(backbone: str) -> dict[str, object]:
    return dict(GEOMETRY[backbone], guidance_scale=6.0, seed=1, show_progress=False)


@dataclass
class Run:
    reference: np.ndarray
    features: FeatureMaps
    attention: AttentionMaps


@pytest.fixture(scope="module", params=sorted(GEOMETRY))
def run(request: pytest.FixtureRequest) -> tuple[str, Run]:
    """One plain generation and the same one watched for features and for attention."""
    name = request.param
    backbone = load_backbone(name, "tiny")
    kwargs = _render_kwargs(name)
    reference = render(backbone, PROMPT, num_inference_steps=STEPS["num_inference_steps"], **kwargs)
    features = feature_maps(backbone, PROMPT, **STEPS, **kwargs)
    attention = attention_maps(backbone, PROMPT, "shaking", keep_rows=True, **STEPS, **kwargs)
    return name, Run(reference, features, attention)


def test_feature_maps_have_the_token_grid_shape_and_are_finite(run: tuple[str, Run]) -> None:
    name, result = run
    grid = result.features.grid
    assert (grid.frames, grid.height, grid.width) == (2, 2, 2)
    for role in ("q", "k", "v"):
        assert result.features.per_frame[role].shape == (grid.frames, grid.height, grid.width)
        assert result.features.maps[role].shape == (grid.height, grid.width)
        assert torch.isfinite(result.features.per_frame[role]).all()
        torch.testing.assert_close(result.features.maps[role], result.features.per_frame[role].mean(0))
        assert result.features.layers[role]  # every layer's projection was seen


def test_watching_features_or_attention_leaves_the_video_unchanged(run: tuple[str, Run]) -> None:
    _, result = run
    assert np.array_equal(result.features.frames, result.reference)
    assert np.array_equal(result.attention.frames, result.reference)


def test_attention_maps_are_per_token_frame_and_non_negative(run: tuple[str, Run]) -> None:
    name, result = run
    att = result.attention
    grid = att.grid
    assert att.maps.shape == (grid.frames, grid.height, grid.width)
    assert att.per_layer.shape == (len(att.layers), grid.frames, grid.height, grid.width)
    assert (att.maps >= 0).all() and torch.isfinite(att.maps).all()
    # LTX-2's Gemma pads on the left: the 10 prompt tokens end the 16 text positions
    assert att.tokens == ["shaking"] and att.positions == [3 + (6 if name == "ltx2" else 0)]
    # Each text-attention layer seen once: the conditional call only, not the CFG negative.
    assert len(att.layers) == TEXT_ATTENTION_LAYERS[name]
    assert att.direction == ("text_to_video" if name in JOINT else "video_to_text")
    height, width = GEOMETRY[name]["height"], GEOMETRY[name]["width"]
    assert att.upsampled().shape == (grid.frames, height, width)
    assert att.video_frame_maps().shape == (GEOMETRY[name]["num_frames"], height, width)


def test_captured_rows_are_the_models_own_softmax(run: tuple[str, Run]) -> None:
    name, result = run
    att = result.attention
    assert att.rows is not None and len(att.rows) == len(att.layers)
    for rows in att.rows:
        # Summed over ALL keys (video and text), every captured row is a probability distribution.
        torch.testing.assert_close(rows.sum(-1), torch.ones(rows.shape[:-1]), atol=1e-5, rtol=0)
        assert (rows >= 0).all()
    # Applied to the values, the rows give back the attention op's own output.
    assert att.max_output_error < 1e-5
    lo, hi = att.row_sum_range
    assert abs(lo - 1) < 1e-5 and abs(hi - 1) < 1e-5
    if name in JOINT:
        # One query row (the word's token) per head; keys = video tokens + the prompt's text tokens,
        # so the conditional half was captured (the empty negative prompt has a single token).
        num_text = len(locate_word(load_backbone(name, "tiny"), PROMPT, "shaking").prompt_tokens)
        for rows in att.rows:
            assert rows.shape[1] == 1
            # Mochi drops the padding; HunyuanVideo keeps its 16; HunyuanVideo-1.5 adds 8 ByT5 and 729
            # (masked) image tokens
            assert rows.shape[2] in (
                att.grid.size + num_text,
                att.grid.size + 16,
                att.grid.size + 16 + 8 + 729,
            )
        # The map is the mean over layers, heads and word tokens of the rows' video part.
        video_part = torch.stack([r[..., : att.grid.size].mean(dim=(0, 1)) for r in att.rows])
        torch.testing.assert_close(att.per_layer.flatten(1), video_part)
    else:
        # Cross-attention: every video query's distribution over the text keys.
        for rows in att.rows:
            assert rows.shape[1] == att.grid.size
        word_part = torch.stack([r[..., att.positions].mean(-1).mean(0) for r in att.rows])
        torch.testing.assert_close(att.per_layer.flatten(1), word_part)


def test_missing_word_lists_the_prompts_tokens() -> None:
    backbone = load_backbone("wan", "tiny")
    with pytest.raises(ConfigError, match=r"'hugging'.*a bear is shaking hands with a raccoon"):
        locate_word(backbone, PROMPT, "hugging")
    with pytest.raises(ConfigError, match="unknown reduction"):
        feature_maps(backbone, PROMPT, reduce="max", **STEPS, **_render_kwargs("wan"))
    with pytest.raises(ConfigError, match="outside"):
        attention_maps(backbone, PROMPT, "shaking", step=3, num_inference_steps=3, **_render_kwargs("wan"))


def test_multi_token_phrase_is_found_in_the_template_cropped_sequence() -> None:
    backbone = load_backbone("hunyuan", "tiny")
    backbone.prompt_template = {"template": "describe the video . {}", "crop_start": 4}
    located = locate_word(backbone, "A dog is shaking hands with a cat", "shaking hands")
    assert located.tokens == ["shaking", "hands"] and located.positions == [3, 4]
    assert located.prompt_tokens[:3] == ["a", "dog", "is"]


def test_upsample_maps_keeps_constant_maps_constant() -> None:
    maps = torch.full((2, 3, 4), 0.25)
    up = upsample_maps(maps, 12, 16)
    assert up.shape == (2, 12, 16)
    torch.testing.assert_close(up, torch.full((2, 12, 16), 0.25))


def _relation_lora(path: Path) -> Path:
    bb = load_backbone("mochi", "tiny")
    add_triplet(bb, TripletConfig(rank=4, alpha=8))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in bb.transformer.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    lora, _ = save_lora_files(
        bb.transformer, path, "{}", bb.name, ["relation", "subject1", "subject2", "ffn"]
    )
    return lora


@pytest.mark.parametrize("run", ["mochi"], indirect=True)
def test_lora_comparison_figures_and_base_restored(run: tuple[str, Run], tmp_path: Path) -> None:
    _, result = run
    backbone = load_backbone("mochi", "tiny")
    base, tuned = compare_attention(
        backbone, _relation_lora(tmp_path), PROMPT, "shaking", **STEPS, **_render_kwargs("mochi")
    )
    assert np.array_equal(base.frames, result.reference)
    assert not np.array_equal(tuned.frames, result.reference)
    assert tuned.max_output_error < 1e-5 and tuned.label == "relation LoRA"
    # The LoRA is removed again: the backbone renders the base video.
    again = render(backbone, PROMPT, num_inference_steps=3, **_render_kwargs("mochi"))
    assert np.array_equal(again, result.reference)
    att = save_attention_figure(base, None, tmp_path / "attention.png", lora=tuned)
    feat = save_feature_figure(result.features, result.features.frames, tmp_path / "features.png")
    for path in (att, feat):
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_register_adds_commands_that_run_on_the_tiny_model(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    common = ["tiny", "--prompt", PROMPT, "--steps", "1", "--step", "0", "--dtype", "float32"]
    common += ["--num-frames", "5", "--height", "16", "--width", "16", "--device", "cpu"]
    out = runner.invoke(
        app, ["features", *common, "--backbone", "wan", "--reduce", "norm", "--output", str(tmp_path / "f")]
    )
    assert out.exit_code == 0, out.output
    assert (tmp_path / "f" / "features.png").is_file()
    saved = np.load(tmp_path / "f" / "features.npz")
    assert saved["base_v"].shape == (1, 1) and saved["base_v_per_frame"].shape == (2, 1, 1)
    assert (saved["base_q"] >= 0).all()  # L2 norms
    out = runner.invoke(
        app,
        ["attention", *common, "--backbone", "hunyuan", "--word", "shaking", "--output", str(tmp_path / "a")],
    )
    assert out.exit_code == 0, out.output
    assert np.load(tmp_path / "a" / "attention.npz")["base"].shape == (2, 2, 2)
    out = runner.invoke(
        app,
        ["attention", *common, "--backbone", "hunyuan", "--word", "dancing", "--output", str(tmp_path / "b")],
    )
    assert out.exit_code == 2 and "dancing" in out.output
