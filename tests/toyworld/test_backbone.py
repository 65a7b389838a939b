"""The toy backbone is a tiny real Mochi behind the Backbone interface, with an exact codec and
shipped pretrained weights that reproduce a recorded sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamrelation.backbones import load_backbone, register_backbone
from dreamrelation.backbones.mochi import MochiBackbone
from dreamrelation.generation.lora_files import save_lora_files
from dreamrelation.generation.render import load_inference_lora, render, render_batch
from dreamrelation.toyworld.backbone import (
    MAX_SEQUENCE_LENGTH,
    SHIPPED_WEIGHTS,
    TRANSFORMER_SIZES,
    ToyBackbone,
    ToyPipeline,
    ToyVideoCodec,
    toy_vocabulary,
)
from dreamrelation.toyworld.pretrain import (
    PretrainConfig,
    evaluation_prompts,
    learning_rate_at,
    pretrain,
    training_clips,
)
from dreamrelation.toyworld.world import GENERIC_MOTIONS, RELATIONS, Scene, caption_for
from dreamrelation.toyworld.world import render as render_scene
from dreamrelation.training.adapters import TripletConfig, add_triplet

# diffusers' Mochi RoPE asks for a float32 autocast on CPU, which torch refuses harmlessly.
pytestmark = pytest.mark.filterwarnings("ignore:In CPU autocast")

# Recorded once from the shipped weights (docs/toy_backbone.md): the settings of a 4-step sample,
# its mean, std and 16 pixels. Re-record it whenever the shipped weights are retrained.
RECORDED_SAMPLE_FILE = Path(__file__).with_name("toy_backbone_sample.json")


@pytest.fixture(scope="module")
def toy() -> ToyBackbone:
    # The registry import path the CLI uses; importing the module registered the class.
    register_backbone(ToyBackbone)
    return load_backbone("toy", "tiny")


def test_codec_round_trips_random_videos_exactly() -> None:
    codec = ToyVideoCodec()
    video = torch.rand(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    posterior = codec.encode(video).latent_dist
    latents = posterior.mode()
    assert latents.shape == (2, 96, 8, 8, 8)
    assert torch.equal(posterior.sample(generator=torch.Generator().manual_seed(1)), latents)
    assert torch.equal(codec.decode(latents, return_dict=False)[0], video)
    assert torch.equal(codec.decode(latents).sample, video)


def test_codec_latent_cell_holds_its_own_pixels() -> None:
    """Latent (f, i, j) is exactly the 2x4x4 block of frames 2f..2f+1, rows 4i.., columns 4j.."""
    codec = ToyVideoCodec()
    video = torch.randn(1, 3, 4, 8, 8)
    latents = codec.encode(video).latent_dist.mode()
    block = video[0, :, 2:4, 4:8, 0:4]  # (c, t, y, x) of latent frame 1, row 1, column 0
    assert torch.equal(latents[0, :, 1, 1, 0], block.reshape(-1))


def test_codec_rejects_bad_geometry() -> None:
    with pytest.raises(ValueError, match="multiple of 2"):
        ToyVideoCodec().encode(torch.zeros(1, 3, 15, 32, 32))


def test_toy_backbone_plugs_into_the_interface(toy: ToyBackbone) -> None:
    assert isinstance(toy.pipeline, ToyPipeline)
    assert toy.frame_groups(16) == [[2 * i, 2 * i + 1] for i in range(8)]
    assert toy.latent_hw(32, 32) == (8, 8)
    video = torch.randint(0, 256, (1, 16, 32, 32, 3), dtype=torch.uint8)
    latents = toy.encode_video(video)
    assert latents.shape == (1, 96, 8, 8, 8)
    # encode_video maps uint8 to [-1, 1] and the codec is exact: the latents are the pixels.
    decoded = toy.vae.decode(latents / toy.vae.config.scaling_factor, return_dict=False)[0]
    np.testing.assert_allclose((decoded + 1) * 127.5, video.permute(0, 4, 1, 2, 3).float(), atol=1e-4)
    conditioning = toy.encode_prompts(
        ["a red circle and a blue square are standing still on a dark background."]
    )
    assert conditioning["prompt_embeds"].shape == (1, MAX_SEQUENCE_LENGTH, 64)
    sigma = torch.tensor([0.5])
    prediction = toy.predict(toy.add_noise(latents, torch.randn_like(latents), sigma), sigma, conditioning)
    assert prediction.shape == latents.shape


def test_toy_backbone_is_mochi_with_the_same_projection_roles(toy: ToyBackbone) -> None:
    assert isinstance(toy, MochiBackbone)
    assert toy.flow_convention == MochiBackbone.flow_convention == "data_minus_noise"
    assert toy.streams == MochiBackbone.streams
    mochi = load_backbone("mochi", "tiny")
    for role in ("q", "k", "v", "out"):
        for stream in ("vision", "text"):
            toy_names = toy.projection_modules(role, [stream])
            mochi_names = mochi.projection_modules(role, [stream])
            suffix = {name.split(".", 2)[2] for name in toy_names}
            assert toy_names and suffix == {name.split(".", 2)[2] for name in mochi_names}


def test_pipeline_uses_the_codec_geometry(toy: ToyBackbone) -> None:
    pipe = toy.pipeline
    assert (pipe.vae_temporal_scale_factor, pipe.vae_spatial_scale_factor) == (2, 4)
    out = pipe(
        prompt="a red circle and a blue square are standing still on a dark background.",
        num_frames=16,
        height=32,
        width=32,
        num_inference_steps=2,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
        **toy.pipeline_kwargs(5.0),
    )
    assert out.frames.shape == (1, 96, 8, 8, 8)


def test_batched_render_equals_one_render_per_prompt(toy: ToyBackbone) -> None:
    """pretrain.sample_videos renders in batches; each video must be the one `render` gives alone."""
    prompts = ["a red circle and a blue square are standing still.", "a green cross is moving."]
    kwargs = {"num_frames": 4, "height": 16, "width": 16, "num_inference_steps": 2, "show_progress": False}
    batch = render_batch(toy, prompts, [3, 7], **kwargs)
    assert batch.shape == (2, 4, 16, 16, 3)
    for video, prompt, seed in zip(batch, prompts, (3, 7), strict=True):
        np.testing.assert_allclose(video, render(toy, prompt, seed=seed, **kwargs), atol=1e-5)
    with pytest.raises(ValueError, match="one seed per prompt"):
        render_batch(toy, prompts, [3], **kwargs)


def test_vocabulary_covers_every_caption_word() -> None:
    tokenizer = ToyBackbone.tiny().pipeline.tokenizer
    vocabulary = set(tokenizer.get_vocab())
    rng = np.random.default_rng(0)
    from dreamrelation.toyworld.world import sample_scenes

    longest = 0
    for relation in (*RELATIONS, *GENERIC_MOTIONS):
        for scene in sample_scenes(relation, 20, rng):
            for mover in (0, 1):
                ids = tokenizer(caption_for(scene, mover)).input_ids
                assert tokenizer.unk_token_id not in ids, caption_for(scene, mover)
                longest = max(longest, len(ids))
    assert longest <= MAX_SEQUENCE_LENGTH
    assert set(toy_vocabulary()) <= vocabulary


def test_text_encoder_binds_colour_to_shape(toy: ToyBackbone) -> None:
    """Swapping the colours of the two subjects changes what the shape tokens say."""
    a, b = (
        toy.encode_prompts([p])["prompt_embeds"][0]
        for p in ("a red triangle and a blue circle", "a blue triangle and a red circle")
    )
    triangle = 2
    cosine = torch.nn.functional.cosine_similarity(a[triangle], b[triangle], dim=0)
    assert cosine < 0.95


def test_inference_lora_loads_through_the_toy_pipeline(tmp_path: Path) -> None:
    """MochiPipeline.load_lora_weights works on ToyPipeline (the path `dreamrelation generate` takes)."""
    trained = ToyBackbone.tiny(seed=0)
    add_triplet(trained, TripletConfig(rank=2, alpha=2))
    with torch.no_grad():
        for name, parameter in trained.transformer.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.3)
    lora_path, _ = save_lora_files(trained.transformer, tmp_path, "{}", "toy", ["relation", "ffn"])
    kwargs = {"num_frames": 4, "height": 16, "width": 16, "num_inference_steps": 2, "show_progress": False}
    base = render(ToyBackbone.tiny(seed=0), "a red circle", **kwargs)
    loaded = ToyBackbone.tiny(seed=0)
    load_inference_lora(loaded, lora_path)
    assert np.abs(render(loaded, "a red circle", **kwargs) - base).max() > 1e-3


def test_save_and_from_pretrained_round_trip(tmp_path: Path, toy: ToyBackbone) -> None:
    toy.save_pretrained(tmp_path / "pipe")
    loaded = load_backbone("toy", str(tmp_path / "pipe"))
    kwargs = {"num_frames": 4, "height": 16, "width": 16, "num_inference_steps": 2, "show_progress": False}
    np.testing.assert_array_equal(
        render(loaded, "a red circle", **kwargs), render(toy, "a red circle", **kwargs)
    )


def test_shipped_weights_reproduce_the_recorded_sample() -> None:
    assert (SHIPPED_WEIGHTS / "model_index.json").is_file()
    recorded = json.loads(RECORDED_SAMPLE_FILE.read_text())
    settings = recorded["settings"]
    frames = render(
        load_backbone("toy", "shipped"),
        settings["prompt"],
        num_frames=16,
        height=32,
        width=32,
        num_inference_steps=settings["num_inference_steps"],
        guidance_scale=settings["guidance_scale"],
        seed=settings["seed"],
        show_progress=False,
    )
    assert frames.shape == (16, 32, 32, 3)
    np.testing.assert_allclose(frames.mean(), recorded["mean"], atol=1e-4)
    np.testing.assert_allclose(frames.std(), recorded["std"], atol=1e-4)
    pixels = [frames[tuple(index)] for index in recorded["pixel_index"]]
    np.testing.assert_allclose(pixels, recorded["pixels"], atol=2e-3)


def test_shipped_recipe_records_the_run() -> None:
    recipe = json.loads((SHIPPED_WEIGHTS / "recipe.json").read_text())
    assert recipe["command"].startswith("dreamrelation toy pretrain")
    assert 0 < recipe["steps"] <= recipe["config"]["steps"]  # a time budget may stop it earlier
    assert recipe["clips_seen"] == recipe["steps"] * recipe["config"]["batch_size"]
    assert set(recipe["config"]["motions"]) == set(GENERIC_MOTIONS)
    # the exact lineage: the stage it continued from, with that stage's own command
    assert recipe["init_recipe"]["command"].startswith("dreamrelation toy pretrain")
    assert recipe["machine"] and "validation_denoising_mse" in recipe
    # the transformer is the architecture the "base" size names (so `--size base` rebuilds it)
    config = json.loads((SHIPPED_WEIGHTS / "transformer" / "config.json").read_text())
    assert all(config[key] == value for key, value in TRANSFORMER_SIZES["base"].items())
    # what ships (a retraining's checkpoint/ stays out of git and the wheel: .gitignore, pyproject)
    shipped = [f for f in SHIPPED_WEIGHTS.rglob("*") if f.is_file() and "checkpoint" not in f.parts]
    assert sum(f.stat().st_size for f in shipped) < 20 * 2**20


def test_training_clips_are_generic_and_deterministic() -> None:
    config = PretrainConfig(output="unused", batch_size=3, seed=5)
    videos, captions = training_clips(7, config)
    again, captions_again = training_clips(7, config)
    assert videos.shape == (3, 16, 32, 32, 3) and videos.dtype == np.uint8
    assert np.array_equal(videos, again) and captions == captions_again
    # the verb phrase of each relation template ("is shaking hands with", "are walking towards each other")
    relation_phrases = [
        part.strip()
        for template in RELATIONS.values()
        for part in template.replace("{b}", "{a}").split("{a}")
        if part.strip() not in ("", "and")
    ]
    for caption in captions:
        assert not any(phrase in caption for phrase in relation_phrases), caption


def test_learning_rate_warms_up_then_decays() -> None:
    config = PretrainConfig(
        output="unused", steps=100, warmup_steps=10, learning_rate=1e-3, min_learning_rate=1e-4
    )
    assert learning_rate_at(0, config) == pytest.approx(1e-4)
    assert learning_rate_at(9, config) == pytest.approx(1e-3)
    assert learning_rate_at(100, config) == pytest.approx(1e-4)


def test_evaluation_prompts_cover_every_relation() -> None:
    items = evaluation_prompts(2)
    assert [relation for relation, _, _ in items][::2] == [*RELATIONS, *GENERIC_MOTIONS]
    scene = Scene(("circle", "red"), ("square", "blue"), "hugging", "dark", seed=0)
    assert render_scene(scene).caption == caption_for(scene)


def test_pretrain_smoke_run_saves_a_loadable_pipeline(tmp_path: Path) -> None:
    record = pretrain(
        output=tmp_path / "base",
        steps=2,
        seed=0,
        size="tiny",
        batch_size=2,
        warmup_steps=1,
        show_progress=False,
    )
    assert record["steps"] == 2 and np.isfinite(record["loss_last_100"])
    backbone = load_backbone("toy", str(tmp_path / "base"))
    assert backbone.transformer.config.num_layers == 2
    frames = render(
        backbone,
        "a red circle",
        num_frames=4,
        height=16,
        width=16,
        num_inference_steps=2,
        show_progress=False,
    )
    assert frames.shape == (4, 16, 16, 3)


def test_pretrain_continues_from_a_saved_stage_and_records_its_lineage(tmp_path: Path) -> None:
    """--init-from starts from the folder's weights (not random, not zeroed) and keeps its recipe."""
    common = {"size": "tiny", "batch_size": 2, "warmup_steps": 1, "show_progress": False}
    pretrain(output=tmp_path / "stage1", steps=2, seed=0, **common)
    (tmp_path / "stage1" / "recipe.json").write_text(json.dumps({"command": "stage one"}))
    stage1 = load_backbone("toy", str(tmp_path / "stage1")).transformer.state_dict()

    # Zero steps of learning rate: the second stage must save exactly the weights it started from.
    record = pretrain(
        output=tmp_path / "stage2",
        init_from=tmp_path / "stage1",
        steps=1,
        seed=1,
        learning_rate=1e-12,
        min_learning_rate=0.0,
        ema_decay=0.0,
        **common,
    )
    assert record["init_recipe"] == {"command": "stage one"}
    assert record["config"]["init_from"] == str(tmp_path / "stage1")
    stage2 = load_backbone("toy", str(tmp_path / "stage2")).transformer.state_dict()
    assert stage1.keys() == stage2.keys()
    for name, weight in stage1.items():
        torch.testing.assert_close(stage2[name], weight, atol=1e-3, rtol=1e-3, msg=name)
    # The stage-1 model was not zero-initialised again (its output layer is not all zeros).
    assert stage2["proj_out.weight"].abs().sum() > 0
