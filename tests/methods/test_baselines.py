"""The paper's baselines on the training harness: each method trains only its own parameters on every
backbone, saves a file that generate applies, and keeps its defining properties (zero-init motion
embeddings, the focal noise-level density, the steering loss, exact resume)."""

from __future__ import annotations

import functools
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamrelation.backbones import load_backbone
from dreamrelation.config import GenerateConfig, TrainConfig, load_config
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.generation.lora_files import read_lora_metadata
from dreamrelation.generation.render import generate, load_inference_lora, render
from dreamrelation.testing import tiny_train_config, write_tiny_cache
from dreamrelation.training.loop import Trainer
from dreamrelation.training.methods import METHOD_NAMES
from dreamrelation.training.methods.motion_inversion import (
    MotionEmbeddings,
    attention_blocks,
    frame_difference,
)
from dreamrelation.training.methods.reversion import (
    focal_sigma_cdf,
    focal_sigma_density,
    relation_caption,
    sample_focal_sigma,
    steering_loss,
)
from dreamrelation.training.methods.settings import TRIPLET_RECIPES

# One small clip geometry per backbone (the VAE's temporal grouping: Mochi 6k+1, Wan/Hunyuan 4k+1,
# toy 2k with its fixed 32x32 frames).
GEOMETRY = {
    "mochi": {"num_frames": 7, "size": 16},
    "wan": {"num_frames": 5, "size": 16},
    "hunyuan": {"num_frames": 5, "size": 16},
    "wan22_5b": {"num_frames": 5, "size": 32},  # 16x VAE
    "wan22_a14b": {"num_frames": 5, "size": 16},
    "hunyuan15": {"num_frames": 5, "size": 32},  # 16x VAE
    "ltx2": {"num_frames": 9, "size": 64},  # 8k+1 frames, 32x VAE
    "toy": {"num_frames": 16, "size": 32},
}
PROMPTS = {"reversion": "a bear <R> a raccoon."}
PROMPT = "a bear is shaking hands with a raccoon."


@pytest.fixture(scope="session")
def caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """backbone -> a cache of two clips ("a red square is shaking hands with a blue square.")."""
    made = {}
    for backbone, geo in GEOMETRY.items():
        made[backbone] = write_tiny_cache(
            tmp_path_factory.mktemp(f"cache-{backbone}"),
            backbone,
            n_videos=2,
            num_frames=geo["num_frames"],
            size=geo["size"],
        )
    return made


def _config(cache: Path, output: Path, backbone: str, method: str, **overrides: object) -> TrainConfig:
    # learning rate 0.05: large enough that two steps visibly change what generation draws
    values = {"method": method, "max_steps": 2, "checkpoint_every": 2, "learning_rate": 0.05}
    return tiny_train_config(cache, output, backbone=backbone, **{**values, **overrides})


def _frozen_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every parameter of every pipeline component except the method's own, copied."""
    own = {id(p) for p in trainer.lora_params}
    state = {}
    for component, module in trainer.backbone.pipeline.components.items():
        if isinstance(module, torch.nn.Module):
            for name, p in module.named_parameters():
                if id(p) not in own:
                    state[f"{component}.{name}"] = p.detach().clone()
    return state


def _render(backbone, prompt: str, geo: dict[str, int]) -> np.ndarray:
    return render(
        backbone,
        prompt,
        num_frames=geo["num_frames"],
        height=geo["size"],
        width=geo["size"],
        num_inference_steps=2,
        guidance_scale=3.0,
        seed=0,
        show_progress=False,
    )


@functools.cache
def _base_video(backbone: str, prompt: str) -> np.ndarray:
    """What the untouched tiny base model draws (deterministic, so rendered once per session)."""
    return _render(load_backbone(backbone, "tiny"), prompt, GEOMETRY[backbone])


# Every method on every backbone, except where another test already covers the backbone-specific part:
# motion_inversion_rcl is motion_inversion's class plus the trainer's RCL term, and direct_lora's file
# is the LoRA that tests/core/test_generation.py loads on every backbone (kept here on Mochi and toy).
# The triplet recipes are DreamRelation's class with other defaults: one backbone each.
# The Wan2.2 backbones, HunyuanVideo-1.5 and LTX-2 run every method: their experts, per-token timesteps
# and channel-stacked conditions are new to each.
WAN22 = ("wan22_5b", "wan22_a14b", "hunyuan15", "ltx2")
ONE_BACKBONE = {
    "motion_inversion_rcl": ("mochi", *WAN22),
    "direct_lora": ("mochi", "toy", *WAN22),
    **{recipe: ("toy", *WAN22) for recipe in TRIPLET_RECIPES},
}
CASES = [
    (method, backbone)
    for method in METHOD_NAMES
    for backbone in sorted(GEOMETRY)
    if method != "dreamrelation" and backbone in ONE_BACKBONE.get(method, GEOMETRY)
]


@pytest.mark.parametrize(("method", "backbone"), CASES)
def test_method_trains_only_its_parameters_and_its_file_changes_generation(
    method: str, backbone: str, caches: dict[str, Path], tmp_path: Path
) -> None:
    trainer = Trainer(_config(caches[backbone], tmp_path / "run", backbone, method))
    frozen = _frozen_state(trainer)
    own = [p.detach().clone() for p in trainer.lora_params]
    result = trainer.run(show_progress=False)

    after = _frozen_state(trainer)
    assert frozen.keys() == after.keys()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen), "a frozen parameter moved"
    assert any(not torch.equal(a, p.detach()) for a, p in zip(own, trainer.lora_params, strict=True))
    assert read_lora_metadata(result.lora_path)["dreamrelation.method"] == method

    geo = GEOMETRY[backbone]
    prompt = PROMPTS.get(method, PROMPT)
    base = _base_video(backbone, prompt)
    adapted = load_backbone(backbone, "tiny")
    load_inference_lora(adapted, result.lora_path)
    assert not np.array_equal(_render(adapted, prompt, geo), base)


@pytest.mark.parametrize("method", ["reversion", "motion_inversion"])
def test_saved_file_reproduces_the_trained_model_exactly(
    method: str, caches: dict[str, Path], tmp_path: Path
) -> None:
    # the whole pipeline (training alone loads only the transformer): it renders below
    full = load_backbone("mochi", "tiny")
    trainer = Trainer(_config(caches["mochi"], tmp_path / "run", "mochi", method), backbone=full)
    result = trainer.run(show_progress=False)
    trainer.method.inference_mode()
    device = trainer.accelerator.device  # training placed only what it runs there
    trainer.backbone.to(device)
    prompt = PROMPTS.get(method, PROMPT)
    in_memory = _render(trainer.backbone, prompt, GEOMETRY["mochi"])
    loaded = load_backbone("mochi", "tiny", device=device)
    load_inference_lora(loaded, result.lora_path)
    # equal up to float32 rounding (the text encoder runs with autograd on in the trainer)
    np.testing.assert_allclose(_render(loaded, prompt, GEOMETRY["mochi"]), in_memory, rtol=0, atol=1e-5)
    if method == "motion_inversion":  # the embeddings are per frame and token: another size is refused
        with pytest.raises(InputError, match="num_frames/height/width"):
            _render(loaded, prompt, {"num_frames": 13, "size": 16})


@pytest.mark.parametrize("backbone", sorted(GEOMETRY))
def test_motion_embeddings_at_zero_leave_the_base_output_unchanged(
    backbone: str, caches: dict[str, Path]
) -> None:
    from dreamrelation.cache import CachedDataset

    item = CachedDataset([caches[backbone]]).items[0]
    bb = load_backbone(backbone, "tiny")
    latents = item.latents[None]
    text = {k: v[None] for k, v in item.text.items()}
    sigma = torch.tensor([0.6])
    noisy = bb.add_noise(
        latents, torch.randn(latents.shape, generator=torch.Generator().manual_seed(0)), sigma
    )
    with torch.no_grad():
        reference = bb.predict(noisy, sigma, text)
        embeddings = MotionEmbeddings(attention_blocks(bb), bb.token_grid(latents.shape))
        embeddings.install(bb.transformer)
        assert torch.equal(bb.predict(noisy, sigma, text), reference)
        # and they are really in the forward pass: a non-zero value embedding changes the output
        for value in embeddings.value:  # every block's (Wan2.2 A14B: σ picks one expert's blocks)
            value.fill_(0.5)
        assert not torch.equal(bb.predict(noisy, sigma, text), reference)
        embeddings.remove()
        assert torch.equal(bb.predict(noisy, sigma, text), reference)


def test_motion_embeddings_cover_every_vision_attention_block() -> None:
    bb = load_backbone("hunyuan", "tiny")
    blocks = attention_blocks(bb)
    # two dual-stream blocks (vision projections) and two single-stream blocks (joint projections)
    assert sorted(blocks) == [
        "single_transformer_blocks.0.attn",
        "single_transformer_blocks.1.attn",
        "transformer_blocks.0.attn",
        "transformer_blocks.1.attn",
    ]
    assert [b["joint"] for b in blocks.values()] == [True, True, False, False]
    emb = MotionEmbeddings(blocks, (2, 3, 5), value_stride=2)
    assert tuple(emb.qk[0].shape) == (2, 20) and tuple(emb.value[0].shape) == (2, 2, 3, 20)
    with torch.no_grad():
        emb.value[0].copy_(torch.arange(2 * 2 * 3 * 20, dtype=torch.float32).view(2, 2, 3, 20))
        emb.qk[0].copy_(torch.arange(40, dtype=torch.float32).view(2, 20))
    tokens = emb.token_embeddings(0, "v").view(2, 3, 5, 20)
    # token (f, r, c) reads the coarse cell (f, r // 2, c // 2)
    assert torch.equal(tokens[1, 2, 4], emb.value[0][1, 1, 2])
    assert torch.equal(tokens[0, 1, 3], emb.value[0][0, 0, 1])
    qk = emb.token_embeddings(0, "qk").view(2, 15, 20)
    assert torch.equal(qk[1], emb.qk[0][1].expand(15, 20))  # shared over space


def test_frame_difference_debiasing_ignores_what_is_constant_over_frames() -> None:
    x = torch.randn(1, 3, 4, 2, 2)
    np.testing.assert_allclose(frame_difference(x)[:, :, 1].numpy(), (x[:, :, 2] - x[:, :, 1]).numpy())
    constant = torch.randn(1, 3, 1, 2, 2).expand(1, 3, 4, 2, 2)
    torch.testing.assert_close(frame_difference(x + constant), frame_difference(x))


def test_focal_sigma_sampling_follows_its_density() -> None:
    alpha = 0.5
    # the density integrates to one and favours high noise
    grid = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    assert abs(torch.trapezoid(focal_sigma_density(grid, alpha), grid).item() - 1) < 1e-9
    assert (
        focal_sigma_density(torch.tensor(1.0), alpha) == 1.5
        and focal_sigma_density(torch.tensor(0.0), alpha) == 0.5
    )
    samples = sample_focal_sigma(200_000, alpha, torch.Generator().manual_seed(0)).double()
    assert samples.min() >= 0 and samples.max() <= 1
    edges = torch.linspace(0, 1, 21, dtype=torch.float64)
    observed = torch.histc(samples, bins=20, min=0, max=1) / len(samples)
    expected = focal_sigma_cdf(edges[1:], alpha) - focal_sigma_cdf(edges[:-1], alpha)
    assert (observed - expected).abs().max() < 0.003, (observed, expected)
    # E[σ] = 1/2 + 2α/π² by integrating σ(1 − α cos πσ)
    assert abs(samples.mean().item() - (0.5 + 2 * alpha / math.pi**2)) < 0.003
    # the same generator state gives the same draws (exact resume)
    assert torch.equal(
        sample_focal_sigma(8, alpha, torch.Generator().manual_seed(3)),
        sample_focal_sigma(8, alpha, torch.Generator().manual_seed(3)),
    )


def test_steering_loss_matches_a_hand_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    anchor, positives, negatives = (
        torch.randn(6, generator=gen),
        torch.randn(3, 6, generator=gen),
        torch.randn(5, 6, generator=gen),
    )
    tau = 0.07

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    a, p, n = (unit(t.double().numpy()) for t in (anchor, positives, negatives))
    pos = np.exp(p @ a / tau)
    neg = np.exp(n @ a / tau)
    expected = -np.log(pos.sum() / (pos.sum() + neg.sum()))
    assert steering_loss(anchor, positives, negatives, tau).item() == pytest.approx(expected, rel=1e-5)


def test_relation_caption_rewrites_the_relation_as_the_token() -> None:
    assert relation_caption(
        "A person is shaking hands with a person.", "{a} is shaking hands with {b}", "<R>"
    ) == ("A person <R> a person.")
    assert (
        relation_caption(
            "a red circle and a blue square are walking towards each other on a dark background.",
            "{a} and {b} are walking towards each other",
            "<R>",
        )
        == "a red circle <R> a blue square on a dark background."
    )
    assert relation_caption("A cat is   Hugging a dog.", "is hugging", "<R>") == "A cat <R> a dog."
    with pytest.raises(ValueError, match="does not follow"):
        relation_caption("A cat sits.", "{a} is hugging {b}", "<R>")


def test_hybrid_masks_are_refused_for_methods_without_adapters(
    caches: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="hybrid_masks"):
        Trainer(
            _config(
                caches["mochi"], tmp_path / "run", "mochi", "motion_inversion", **{"loss.hybrid_masks": True}
            )
        )


def test_reversion_needs_to_find_the_relation_in_the_captions(
    caches: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="relation_template"):
        Trainer(
            _config(
                caches["mochi"],
                tmp_path / "run",
                "mochi",
                "reversion",
                **{"reversion.relation_template": "{a} hugs {b}"},
            )
        )


def test_generate_refuses_prompts_without_the_relation_token(caches: dict[str, Path], tmp_path: Path) -> None:
    result = Trainer(_config(caches["mochi"], tmp_path / "run", "mochi", "reversion", max_steps=1)).run(
        show_progress=False
    )
    cfg = load_config(
        GenerateConfig,
        **{
            "model.backbone": "mochi",
            "model.model": "tiny",
            "model.dtype": "float32",
            "lora": str(result.lora_path),
            "prompts": [PROMPT],
            "output": str(tmp_path / "videos"),
            "num_frames": 7,
            "height": 16,
            "width": 16,
            "num_inference_steps": 2,
        },
    )
    with pytest.raises(InputError, match="<R>"):
        generate(cfg, show_progress=False)


def test_each_method_sets_its_defaults_unless_the_user_does(tmp_path: Path) -> None:
    common = {"cache": [str(tmp_path)], "output": str(tmp_path)}
    mi = load_config(TrainConfig, **common, method="motion_inversion")
    assert (mi.learning_rate, mi.max_steps, mi.warmup_steps) == (0.02, 400, 0)
    assert not mi.loss.hybrid_masks and mi.loss.contrastive_weight == 0
    assert load_config(TrainConfig, **common, method="motion_inversion_rcl").loss.contrastive_weight == 0.01
    assert (
        load_config(TrainConfig, **common, method="motion_inversion", learning_rate=0.01).learning_rate
        == 0.01
    )
    direct = load_config(TrainConfig, **common, method="direct_lora", **{"lora.rank": 8})
    assert direct.lora.placement == {"relation": ["q", "k", "v", "out"]} and direct.lora.rank == 8
    assert not direct.loss.hybrid_masks and direct.loss.contrastive_weight == 0
    rev = load_config(TrainConfig, **common, method="reversion")
    assert (rev.learning_rate, rev.caption_dropout, rev.reversion.steering_weight) == (2e-3, 0.0, 0.01)
    paper = load_config(TrainConfig, **common)
    assert paper.method == "dreamrelation" and paper.learning_rate == 2e-4 and paper.loss.hybrid_masks
    with pytest.raises(ConfigError, match="method"):
        load_config(TrainConfig, **common, method="textual_inversion")


# recipe -> (adapters it creates, what HMT draws from, what the inference file holds, HMT settings)
RECIPES = {
    "dreamrelation": (["relation", "subject1", "subject2", "ffn"], ["relation", "subject1", "subject2"]),
    "dreamrelation_official_optimizer": (
        ["relation", "subject1", "subject2", "ffn"],
        ["relation", "subject1", "subject2"],
    ),
    "dreamrelation_inference_steps": (
        ["relation", "subject1", "subject2", "ffn"],
        ["relation", "subject1", "subject2", "inference"],
    ),
    "relation_only": (["relation"], ["relation"]),
    "relation_ffn": (["relation", "ffn"], ["relation"]),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_triplet_recipe_has_its_adapters_selection_and_file(
    recipe: str, caches: dict[str, Path], tmp_path: Path
) -> None:
    present, selectable = RECIPES[recipe]
    trainer = Trainer(
        _config(caches["toy"], tmp_path / "run", "toy", recipe, max_steps=8, checkpoint_every=8)
    )
    assert trainer.method.present == present and trainer.method.selectable == selectable
    assert trainer.config.loss.hybrid_masks and trainer.config.loss.contrastive_weight == 0.01
    zero_scaled = recipe == "dreamrelation_official_optimizer"
    assert trainer.config.hmt.inactive_adapters == ("zero_scaled" if zero_scaled else "frozen")
    drawn = {trainer.method.select(step) for step in range(64)}
    assert drawn == set(selectable)
    result = trainer.run(show_progress=False)
    meta = read_lora_metadata(result.lora_path)
    assert meta["dreamrelation.method"] == recipe
    assert meta["dreamrelation.adapters"] == ",".join(a for a in ("relation", "ffn") if a in present)
    assert read_lora_metadata(result.triplet_path)["dreamrelation.adapters"] == ",".join(present)


def test_inference_draw_needs_hybrid_masks_and_a_relation_lora(tmp_path: Path) -> None:
    common = {"cache": [str(tmp_path)], "output": str(tmp_path)}
    with pytest.raises(ConfigError, match="hybrid_masks"):
        load_config(TrainConfig, **common, **{"hmt.inference_draw": True, "loss.hybrid_masks": False})
    with pytest.raises(ConfigError, match="relation"):
        load_config(
            TrainConfig,
            **common,
            method="dreamrelation_inference_steps",
            **{"lora.placement": {"ffn": ["out"]}},
        )


@pytest.mark.parametrize("method", ["motion_inversion_rcl", "reversion"])
def test_kill_and_resume_reproduces_the_uninterrupted_run(
    method: str, caches: dict[str, Path], tmp_path: Path
) -> None:
    settings = {"max_steps": 6, "checkpoint_every": 3, "learning_rate": 0.01}
    full = Trainer(_config(caches["mochi"], tmp_path / "full", "mochi", method, **settings)).run(
        show_progress=False
    )
    interrupted = tmp_path / "interrupted"
    Trainer(_config(caches["mochi"], interrupted, "mochi", method, **settings)).run(
        show_progress=False, stop_after=4
    )
    resumed = Trainer(_config(caches["mochi"], interrupted, "mochi", method, **settings)).run(
        show_progress=False
    )
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    from safetensors.torch import load_file

    a, b = load_file(str(full.lora_path)), load_file(str(resumed.lora_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if method == "motion_inversion_rcl":
        assert any(r["contrastive_terms"] for r in full.history)  # the memory bank was in play


def test_resume_with_another_method_is_refused(caches: dict[str, Path], tmp_path: Path) -> None:
    Trainer(_config(caches["mochi"], tmp_path / "run", "mochi", "motion_inversion", max_steps=2)).run(
        show_progress=False
    )
    with pytest.raises(ConfigError, match="different `method`"):
        Trainer(_config(caches["mochi"], tmp_path / "run", "mochi", "direct_lora", max_steps=4)).run(
            show_progress=False
        )
    shutil.rmtree(tmp_path / "run")


def test_cli_trains_a_baseline_and_generates_with_its_file(caches: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dreamrelation.cli import app

    tiny = ["--backbone", "mochi", "--model", "tiny", "--dtype", "float32"]
    runner = CliRunner()
    run = tmp_path / "run"
    args = ["train", "--cache", str(caches["mochi"]), "--output", str(run), *tiny, "--max-steps", "1"]
    r = runner.invoke(
        app,
        [*args, "--method", "reversion", "--set", "reversion.relation_template=is shaking hands with"],
    )
    assert r.exit_code == 0, r.output
    token_file = run / "relation_token.safetensors"
    assert read_lora_metadata(token_file)["dreamrelation.config"]["reversion"]["relation_template"] == (
        "is shaking hands with"
    )
    geometry = ["--num-frames", "7", "--height", "16", "--width", "16", "--steps", "2"]
    out = tmp_path / "videos"
    r = runner.invoke(
        app,
        [
            "generate",
            "--lora",
            str(token_file),
            "--prompt",
            "a bear <R> a raccoon.",
            "-o",
            str(out),
            *tiny,
            *geometry,
        ],
    )
    assert r.exit_code == 0, r.output
    assert len(list(out.glob("*.mp4"))) == 1
    r = runner.invoke(app, [*args, "--method", "dream_relation"])
    assert r.exit_code == 2 and "method" in r.output
