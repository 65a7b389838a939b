"""Q/K/V subspace analysis: the measure, discovery on tiny random diffusers models, streaming, report, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import (
    CogVideoXTransformer3DModel,
    HunyuanVideoTransformer3DModel,
    MochiTransformer3DModel,
    WanTransformer3DModel,
)
from safetensors.torch import save_file
from typer.testing import CliRunner

from dreamrelation.analysis import (
    PAIRS,
    analyze_checkpoint,
    discover_projections,
    open_checkpoint,
    save_report,
    subspace_similarity,
)
from dreamrelation.cli.analyze import analyze_app
from dreamrelation.errors import ConfigError, InputError

RANKS = (2, 4, 8)


# ----- the measure ---------------------------------------------------------------------------
def _orthonormal(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    return q


def _rank_r_weight(
    basis: torch.Tensor, singular_values: torch.Tensor, in_dim: int, generator
) -> torch.Tensor:
    """basis diag(s) Vᵀ: a weight whose column space is exactly span(basis)."""
    right = _orthonormal(in_dim, basis.shape[1], generator)
    return basis @ torch.diag(singular_values) @ right.T


def test_identical_subspaces_have_similarity_one() -> None:
    weight = torch.randn(20, 12, generator=torch.Generator().manual_seed(0))
    for rank in (1, 4, 12):
        assert subspace_similarity(weight, weight, rank) == pytest.approx(1.0, abs=1e-10)


def test_similarity_is_invariant_to_rotation_and_scaling_within_the_subspace() -> None:
    generator = torch.Generator().manual_seed(1)
    out_dim, in_dim, rank = 24, 16, 4
    basis = _orthonormal(out_dim, rank, generator)
    w1 = _rank_r_weight(basis, torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64), in_dim, generator)
    rotation = _orthonormal(rank, rank, generator)
    w2 = _rank_r_weight(
        basis @ rotation, torch.tensor([9.0, 0.5, 0.2, 0.1], dtype=torch.float64), in_dim, generator
    )
    column_scaled = w1 @ torch.diag(torch.linspace(0.1, 10.0, in_dim, dtype=torch.float64))

    assert subspace_similarity(w1, w2, rank) == pytest.approx(1.0, abs=1e-8)
    assert subspace_similarity(w1, column_scaled, rank) == pytest.approx(1.0, abs=1e-8)
    assert subspace_similarity(w1, 1000.0 * w1, rank) == pytest.approx(1.0, abs=1e-8)


def test_orthogonal_subspaces_have_similarity_zero() -> None:
    generator = torch.Generator().manual_seed(2)
    basis = _orthonormal(32, 8, generator)
    values = torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    w1 = _rank_r_weight(basis[:, :4], values, 16, generator)
    w2 = _rank_r_weight(basis[:, 4:], values, 16, generator)
    assert subspace_similarity(w1, w2, 4) == pytest.approx(0.0, abs=1e-10)


def test_random_weights_have_similarity_near_rank_over_dimension() -> None:
    out_dim, rank = 64, 4
    values = []
    for seed in range(20):
        generator = torch.Generator().manual_seed(100 + seed)
        values.append(
            subspace_similarity(
                torch.randn(out_dim, out_dim, generator=generator),
                torch.randn(out_dim, out_dim, generator=generator),
                rank,
            )
        )
    # For independent uniformly random r-subspaces of R^d the expectation is exactly r/d.
    mean = sum(values) / len(values)
    assert 0.5 * rank / out_dim <= mean <= 2.0 * rank / out_dim
    assert all(0.0 <= v <= 1.0 for v in values)


def test_bad_rank_or_shapes_are_rejected() -> None:
    with pytest.raises(ConfigError):
        subspace_similarity(torch.randn(8, 4), torch.randn(8, 4), 5)
    with pytest.raises(ValueError):
        subspace_similarity(torch.randn(8, 4), torch.randn(6, 4), 2)


# ----- tiny random diffusers models, saved sharded ----------------------------------------------
def _tiny_model(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "mochi":
        return MochiTransformer3DModel(
            patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
            in_channels=12, out_channels=None, qk_norm="rms_norm", text_embed_dim=32, time_embed_dim=4,
            activation_fn="swiglu", max_sequence_length=16,
        )  # fmt: skip
    if family == "wan":
        return WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
            out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        )  # fmt: skip
    if family == "hunyuan":
        return HunyuanVideoTransformer3DModel(
            in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
            num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
            text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
        )  # fmt: skip
    return CogVideoXTransformer3DModel(
        num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=8, num_layers=2, sample_width=8, sample_height=8, sample_frames=8, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=8,
    )  # fmt: skip


FAMILIES = ("mochi", "wan", "hunyuan", "cogvideox")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    """family -> (pipeline-style folder with a sharded transformer/, the model's state_dict)."""
    root = tmp_path_factory.mktemp("tiny_checkpoints")
    saved = {}
    for family in FAMILIES:
        model = _tiny_model(family)
        folder = root / family
        model.save_pretrained(folder / "transformer", max_shard_size="20KB")
        saved[family] = (folder, {k: v.detach().clone() for k, v in model.state_dict().items()})
    return saved


VISION_TEXT_FULL = {"vision": {"q", "k", "v", "out"}, "text": {"q", "k", "v", "out"}}
EXPECTED_LAYOUT = {
    # Mochi's last block is context_pre_only: its text stream has no output projection.
    "mochi": {
        "transformer_blocks.0": VISION_TEXT_FULL,
        "transformer_blocks.1": {"vision": {"q", "k", "v", "out"}, "text": {"q", "k", "v"}},
    },
    "wan": {"blocks.0": VISION_TEXT_FULL, "blocks.1": VISION_TEXT_FULL},
    # The token refiner is not listed; single-stream blocks have no separate output projection.
    "hunyuan": {
        "transformer_blocks.0": VISION_TEXT_FULL,
        "single_transformer_blocks.0": {"joint": {"q", "k", "v"}},
    },
    "cogvideox": {
        "transformer_blocks.0": {"joint": {"q", "k", "v", "out"}},
        "transformer_blocks.1": {"joint": {"q", "k", "v", "out"}},
    },
}


@pytest.mark.parametrize("family", FAMILIES)
def test_discovery_finds_exactly_the_attention_projections_of_each_family(checkpoints, family: str) -> None:
    folder, state_dict = checkpoints[family]
    reader = open_checkpoint(folder)
    assert len(reader.files) > 1, "the tiny checkpoint should be sharded"
    assert set(reader.tensor_names()) == set(state_dict)

    # From the names alone and with the config.json hint: the same answer.
    for hint in (None, reader.class_name):
        layers = discover_projections(reader.tensor_names(), family=hint)
        found = {
            layer: {stream: set(roles) for stream, roles in streams.items()}
            for layer, streams in layers.items()
        }
        assert found == EXPECTED_LAYOUT[family]
        assert list(layers) == list(EXPECTED_LAYOUT[family])  # layer order, dual before single blocks
    assert reader.family_hint == family
    names = [name for streams in layers.values() for roles in streams.values() for name in roles.values()]
    assert all(name in state_dict and name.endswith(".weight") for name in names)
    assert not any("refiner" in name for name in names)


def test_discovery_of_an_unknown_layout_says_what_it_looked_for() -> None:
    with pytest.raises(InputError, match="looked for"):
        discover_projections(["encoder.layers.0.self_attn.q_proj.weight"])
    with pytest.raises(InputError, match="looked for"):
        discover_projections(["encoder.layers.0.self_attn.q_proj.weight"], family="mochi")
    with pytest.raises(ConfigError, match="unknown model family"):
        discover_projections(["x.weight"], family="sora")


def _reference_similarity(w1: torch.Tensor, w2: torch.Tensor, rank: int) -> float:
    """The definition, written independently of the library: plain float64 SVDs."""
    u1 = torch.linalg.svd(w1.double(), full_matrices=False)[0][:, :rank]
    u2 = torch.linalg.svd(w2.double(), full_matrices=False)[0][:, :rank]
    return float((u1.T @ u2).square().sum() / rank)


def test_library_similarity_matches_the_svd_definition() -> None:
    generator = torch.Generator().manual_seed(4)
    for shape in [(24, 24), (24, 40), (40, 12)]:  # square, wide and tall weights take different paths
        w1, w2 = torch.randn(*shape, generator=generator), torch.randn(*shape, generator=generator)
        for rank in (1, 3, min(shape)):
            assert subspace_similarity(w1, w2, rank) == pytest.approx(
                _reference_similarity(w1, w2, rank), abs=1e-9
            )


def _in_memory_similarities(state_dict, layers, ranks):
    return {
        layer: {
            stream: {
                f"{a}-{b}": {
                    str(r): subspace_similarity(state_dict[roles[a]], state_dict[roles[b]], r) for r in ranks
                }
                for a, b in PAIRS
            }
            for stream, roles in streams.items()
        }
        for layer, streams in layers.items()
    }


def _assert_close(actual: dict, expected: dict, atol: float = 1e-4) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        if isinstance(expected[key], dict):
            _assert_close(actual[key], expected[key], atol)
        else:
            assert actual[key] == pytest.approx(expected[key], abs=atol), key


@pytest.mark.parametrize("family", FAMILIES)
def test_streaming_analysis_equals_in_memory_computation(checkpoints, family: str) -> None:
    folder, state_dict = checkpoints[family]
    calls = []
    result = analyze_checkpoint(folder, ranks=RANKS, progress=lambda done, total, layer: calls.append(done))

    layers = discover_projections(state_dict)
    _assert_close(result["layers"], _in_memory_similarities(state_dict, layers, RANKS))
    assert calls == list(range(1, len(layers) + 1))
    assert result["family"] == family and result["ranks"] == list(RANKS)
    for stream, pairs in result["average"].items():
        rows = [streams[stream] for streams in result["layers"].values() if stream in streams]
        assert pairs["q-k"]["4"] == pytest.approx(sum(row["q-k"]["4"] for row in rows) / len(rows))
    json.dumps(result)  # JSON-serialisable


def test_lora_effective_weights_equal_w_plus_scaled_b_a(checkpoints, tmp_path: Path) -> None:
    folder, state_dict = checkpoints["mochi"]
    generator = torch.Generator().manual_seed(3)
    lora_rank, alpha, lora_scale = 2, 4.0, 0.5
    targets = [
        "transformer_blocks.0.attn1.to_q",
        "transformer_blocks.0.attn1.to_k",
        "transformer_blocks.1.attn1.add_v_proj",
        "transformer_blocks.1.ff.net.0.proj",  # not a Q/K/V projection: ignored by the analysis
    ]
    lora_tensors, effective = {}, dict(state_dict)
    for module in targets:
        out_dim, in_dim = state_dict[f"{module}.weight"].shape
        down = torch.randn(lora_rank, in_dim, generator=generator)
        up = 3.0 * torch.randn(out_dim, lora_rank, generator=generator)
        lora_tensors[f"transformer.{module}.lora_A.weight"] = down
        lora_tensors[f"transformer.{module}.lora_B.weight"] = up
        # One module stores alpha (scale alpha/r); the others have it folded into B (scale 1).
        alpha_scale = 1.0
        if module.endswith("to_q"):
            lora_tensors[f"transformer.{module}.alpha"] = torch.tensor(alpha)
            alpha_scale = alpha / lora_rank
        effective[f"{module}.weight"] = state_dict[f"{module}.weight"] + lora_scale * alpha_scale * up @ down
    lora_file = tmp_path / "relation_lora.safetensors"
    save_file(lora_tensors, lora_file)

    result = analyze_checkpoint(folder, ranks=RANKS, lora=lora_file, lora_scale=lora_scale)
    layers = discover_projections(state_dict)
    _assert_close(result["layers"], _in_memory_similarities(effective, layers, RANKS))
    assert result["lora_modules_applied"] == 3
    base = analyze_checkpoint(folder, ranks=RANKS)
    assert (
        result["layers"]["transformer_blocks.0"]["vision"]["q-k"]
        != base["layers"]["transformer_blocks.0"]["vision"]["q-k"]
    )


def test_a_file_without_lora_pairs_is_rejected(checkpoints, tmp_path: Path) -> None:
    folder, _ = checkpoints["mochi"]
    bad = tmp_path / "not_a_lora.safetensors"
    save_file({"transformer.x.lora_down.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(InputError, match="lora_A"):
        analyze_checkpoint(folder, ranks=RANKS, lora=bad)


def test_too_large_rank_is_rejected_before_any_work(checkpoints) -> None:
    folder, _ = checkpoints["mochi"]
    with pytest.raises(ConfigError, match="ranks <= 16"):
        analyze_checkpoint(folder, ranks=(4, 32))


def test_single_safetensors_file_and_model_folder_are_accepted(checkpoints, tmp_path: Path) -> None:
    _, state_dict = checkpoints["cogvideox"]
    single = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state_dict.items()}, single)
    result = analyze_checkpoint(single, ranks=(2,))
    assert result["family"] == "cogvideox" and result["class_name"] is None

    folder, _ = checkpoints["wan"]
    assert open_checkpoint(folder / "transformer").class_name == "WanTransformer3DModel"


def test_missing_path_and_offline_hub_id_give_actionable_errors(monkeypatch, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        open_checkpoint(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no transformer weights"):
        open_checkpoint(empty)

    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(InputError, match="local diffusers folder"):
        open_checkpoint("genmo/mochi-1-preview-not-cached")


def test_report_writes_json_and_one_heatmap_per_stream(checkpoints, tmp_path: Path) -> None:
    folder, _ = checkpoints["hunyuan"]
    result = analyze_checkpoint(folder, ranks=RANKS)
    files = save_report(result, tmp_path / "report")
    assert {f.name for f in files} == {
        "subspace.json",
        "subspace_vision.png",
        "subspace_text.png",
        "subspace_joint.png",
    }
    assert json.loads((tmp_path / "report" / "subspace.json").read_text()) == result
    for png in files[1:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_subspace_writes_the_report_and_prints_the_table(checkpoints, tmp_path: Path) -> None:
    folder, _ = checkpoints["wan"]
    out = tmp_path / "cli_report"
    runner = CliRunner()
    result = runner.invoke(analyze_app, ["subspace", str(folder), "--ranks", "2,4", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "Q–K" in result.output and "vision" in result.output
    assert (out / "subspace.json").is_file() and (out / "subspace_text.png").is_file()
    assert json.loads((out / "subspace.json").read_text())["ranks"] == [2, 4]

    missing = runner.invoke(analyze_app, ["subspace", str(tmp_path / "nowhere"), "--output", str(out)])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad_ranks = runner.invoke(analyze_app, ["subspace", str(folder), "--ranks", "four"])
    assert bad_ranks.exit_code == 2


def test_cli_help_explains_the_command() -> None:
    result = CliRunner().invoke(analyze_app, ["subspace", "--help"])
    assert result.exit_code == 0
    assert "--ranks" in result.output and "--lora" in result.output


def test_analysis_never_writes_to_the_checkpoint(checkpoints, tmp_path: Path) -> None:
    # float32 weights come back memory-mapped; adding a LoRA delta must not write through to the file.
    folder, state_dict = checkpoints["cogvideox"]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    module = "transformer_blocks.0.attn1.to_q"
    out_dim, in_dim = state_dict[f"{module}.weight"].shape
    lora_file = tmp_path / "lora.safetensors"
    save_file(
        {
            f"transformer.{module}.lora_A.weight": torch.ones(1, in_dim),
            f"transformer.{module}.lora_B.weight": torch.ones(out_dim, 1),
        },
        lora_file,
    )
    before = {p.name: p.read_bytes() for p in (copy / "transformer").iterdir()}
    analyze_checkpoint(copy, ranks=(2,), lora=lora_file)
    assert before == {p.name: p.read_bytes() for p in (copy / "transformer").iterdir()}
