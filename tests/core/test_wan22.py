"""Wan2.2 on its tiny configs: A14B's two experts (one triplet each, each trained on its own noise
range, two LoRA files that diffusers' own loader applies), TI2V-5B's per-token timesteps and 16x VAE,
and the bad inputs that are Wan2.2's own (a missing expert, a missing or swapped expert file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dreamrelation.backbones import load_backbone
from dreamrelation.cli import app
from dreamrelation.errors import InputError
from dreamrelation.generation.comfyui import COMFYUI_LORA
from dreamrelation.generation.lora_files import (
    EXPERT_FILES_KEY,
    EXPERT_KEY,
    INFERENCE_LORA,
    read_lora_metadata,
)
from dreamrelation.generation.render import load_inference_lora, render
from dreamrelation.testing import (
    tiny_train_config,
    tiny_train_losses,
    write_tiny_cache,
    write_two_subject_dataset,
)
from dreamrelation.training.adapters import TripletConfig, add_triplet
from dreamrelation.training.loop import Trainer

PROMPT = "a bear is shaking hands with a raccoon."
# (frames, size): the 5B VAE is 16x; 9 frames = 3 latent frames, so image-to-video keeps 2 for RCL
GEOMETRY = {"wan22_5b": (9, 32), "wan22_a14b": (5, 16)}
LOW_NOISE_LORA = "relation_lora_low_noise.safetensors"


def _render(backbone, geo: tuple[int, int], seed: int = 3) -> np.ndarray:
    frames, size = geo
    return render(
        backbone, PROMPT, num_frames=frames, height=size, width=size, num_inference_steps=4,
        guidance_scale=6.0, seed=seed, show_progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made = {}
    for backbone, (frames, size) in GEOMETRY.items():
        made[backbone] = write_tiny_cache(
            tmp_path_factory.mktemp(backbone), backbone, n_videos=2, num_frames=frames, size=size
        )
    return made


@pytest.fixture(scope="module")
def a14b_run(caches: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six DreamRelation steps on the tiny A14B (the seed's noise levels reach both experts)."""
    output = tmp_path_factory.mktemp("a14b-run")
    Trainer(tiny_train_config(caches["wan22_a14b"], output, backbone="wan22_a14b", learning_rate=0.05)).run(
        show_progress=False
    )
    return output


# ----- A14B: two experts ----------------------------------------------------------------------
def test_each_sample_goes_to_the_expert_that_owns_its_noise_level() -> None:
    bb = load_backbone("wan22_a14b", "tiny", components="transformer")
    experts = bb.transformer
    latents = torch.randn(2, 16, 2, 2, 2)
    text = {"prompt_embeds": torch.randn(2, 16, 32)}
    sigma = torch.tensor([0.95, 0.3])  # boundary 0.875: high noise, then low noise
    with torch.no_grad():
        both = bb.predict(latents, sigma, text)
        for row, expert in ((0, experts.high_noise), (1, experts.low_noise)):
            alone = expert(
                hidden_states=latents[row : row + 1],
                timestep=bb.model_timestep(sigma[row : row + 1]),
                encoder_hidden_states=text["prompt_embeds"][row : row + 1],
                return_dict=False,
            )[0]
            torch.testing.assert_close(both[row : row + 1], alone, rtol=0, atol=1e-6)


def test_an_expert_trains_only_on_its_own_noise_range(caches: dict[str, Path], tmp_path: Path) -> None:
    config = tiny_train_config(caches["wan22_a14b"], tmp_path / "run", backbone="wan22_a14b", max_steps=1)
    for sigma, trained, untouched in (
        (0.95, "high_noise.", "low_noise."),
        (0.5, "low_noise.", "high_noise."),
    ):
        trainer = Trainer(config)
        trainer.method.sample_sigma = lambda batch, generator, s=sigma: torch.full((batch,), s)
        trainer.micro_step(0, 0)
        grads = {n: p.grad for n, p in trainer.transformer.named_parameters() if "lora_" in n}
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(trained))
        assert all(g is None for n, g in grads.items() if n.startswith(untouched))


def test_a14b_run_writes_one_diffusers_and_one_comfyui_file_per_expert(a14b_run: Path) -> None:
    high, low = a14b_run / INFERENCE_LORA, a14b_run / LOW_NOISE_LORA
    files = {"high_noise": INFERENCE_LORA, "low_noise": LOW_NOISE_LORA}
    for path, expert in ((high, "high_noise"), (low, "low_noise")):
        meta = read_lora_metadata(path)
        assert meta[EXPERT_KEY] == expert and meta[EXPERT_FILES_KEY] == files
        assert all(k.startswith("transformer.blocks.") for k in load_file(str(path)))
    comfy_high = load_file(str(a14b_run / COMFYUI_LORA))
    comfy_low = load_file(str(a14b_run / "relation_lora_low_noise_comfyui.safetensors"))
    for comfy, ours in ((comfy_high, load_file(str(high))), (comfy_low, load_file(str(low)))):
        # Wan2.2's original names are Wan2.1's: blocks.N.self_attn.q ... (no fused layers)
        assert all(k.startswith("diffusion_model.blocks.") for k in comfy)
        q = comfy["diffusion_model.blocks.0.self_attn.q.lora_A.weight"]
        assert torch.equal(q, ours["transformer.blocks.0.attn1.to_q.lora_A.weight"])
    # both experts learned something different (each from its own steps)
    assert not torch.equal(
        load_file(str(high))["transformer.blocks.0.attn1.to_q.lora_B.weight"],
        load_file(str(low))["transformer.blocks.0.attn1.to_q.lora_B.weight"],
    )


def test_export_command_writes_each_experts_comfyui_file(a14b_run: Path, tmp_path: Path) -> None:
    for name in (INFERENCE_LORA, LOW_NOISE_LORA):
        out = tmp_path / name.replace(".safetensors", "_comfyui.safetensors")
        result = CliRunner().invoke(app, ["export", "comfyui", str(a14b_run / name), "-o", str(out)])
        assert result.exit_code == 0, result.output
        written = load_file(str(a14b_run / name.replace(".safetensors", "_comfyui.safetensors")))
        again = load_file(str(out))
        assert again.keys() == written.keys() and all(torch.equal(again[k], written[k]) for k in written)


def test_diffusers_own_loader_reproduces_generate_with_both_experts(a14b_run: Path) -> None:
    geo = GEOMETRY["wan22_a14b"]
    ours = load_backbone("wan22_a14b", "tiny")
    load_inference_lora(ours, a14b_run / INFERENCE_LORA)
    expected = _render(ours, geo)

    plain = load_backbone("wan22_a14b", "tiny")
    pipe = plain.pipeline  # the two lines of docs/wan22.md
    pipe.load_lora_weights(str(a14b_run / INFERENCE_LORA))
    pipe.load_lora_weights(str(a14b_run / LOW_NOISE_LORA), load_into_transformer_2=True)
    assert np.array_equal(_render(plain, geo), expected)  # bit-exact
    assert not np.array_equal(_render(load_backbone("wan22_a14b", "tiny"), geo), expected)

    # either expert's file names the run: --lora relation_lora_low_noise.safetensors loads the same
    either = load_backbone("wan22_a14b", "tiny")
    load_inference_lora(either, a14b_run / LOW_NOISE_LORA)
    assert np.array_equal(_render(either, geo), expected)


@pytest.mark.parametrize("backbone", sorted(GEOMETRY))
def test_resume_is_exact(backbone: str, caches: dict[str, Path], tmp_path: Path) -> None:
    cache, settings = caches[backbone], {"backbone": backbone, "checkpoint_every": 2}
    whole = tiny_train_losses(cache, tmp_path / "whole", **settings)
    tiny_train_losses(cache, tmp_path / "parts", stop_after=2, **settings)
    assert tiny_train_losses(cache, tmp_path / "parts", **settings) == whole


def test_missing_expert_file_is_one_line_and_writes_nothing(a14b_run: Path, tmp_path: Path) -> None:
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(a14b_run / INFERENCE_LORA, lonely / INFERENCE_LORA)
    with pytest.raises(InputError, match="low-noise expert's LoRA is missing"):
        load_inference_lora(load_backbone("wan22_a14b", "tiny"), lonely / INFERENCE_LORA)
    out = tmp_path / "videos"
    args = ["generate", "-p", PROMPT, "-o", str(out), "--backbone", "wan22_a14b", "--model", "tiny",
            "--dtype", "float32", "--num-frames", "5", "--height", "16", "--width", "16",
            "--steps", "2", "--lora", str(lonely / INFERENCE_LORA)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert LOW_NOISE_LORA in result.output and not out.exists()


def test_swapped_expert_files_are_refused(a14b_run: Path, tmp_path: Path) -> None:
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copy(a14b_run / INFERENCE_LORA, swapped / LOW_NOISE_LORA)
    shutil.copy(a14b_run / LOW_NOISE_LORA, swapped / INFERENCE_LORA)
    with pytest.raises(InputError, match="trained for the low_noise expert, not high_noise"):
        load_inference_lora(load_backbone("wan22_a14b", "tiny"), swapped / LOW_NOISE_LORA)


def test_a14b_lora_on_another_backbone_is_refused(a14b_run: Path) -> None:
    for other in ("wan", "wan22_5b"):
        with pytest.raises(InputError, match="trained on wan22_a14b"):
            load_inference_lora(load_backbone(other, "tiny"), a14b_run / INFERENCE_LORA)


def test_checkpoint_missing_an_expert_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "wan22-a14b"
    load_backbone("wan22_a14b", "tiny").pipeline.save_pretrained(folder)
    # a complete folder loads, both experts in place (the real from_pretrained path)
    loaded = load_backbone("wan22_a14b", str(folder), components="transformer")
    assert loaded.transformer.boundary_timestep == 875.0
    index = json.loads((folder / "model_index.json").read_text())
    assert index["boundary_ratio"] == 0.875
    shutil.rmtree(folder / "transformer_2")
    for components in ("all", "transformer"):
        with pytest.raises(InputError, match="has no transformer_2"):
            load_backbone("wan22_a14b", str(folder), components=components)
    args = ["analyze", "features", str(folder), "--backbone", "wan22_a14b", "--prompt", PROMPT,
            "-o", str(tmp_path / "maps")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "transformer_2" in result.output, result.output
    assert not (tmp_path / "maps").exists()


# ----- TI2V-5B ----------------------------------------------------------------------------------
def test_ti2v_training_feeds_one_timestep_per_token_like_its_pipeline() -> None:
    bb = load_backbone("wan22_5b", "tiny", components="transformer")
    seen = []
    bb.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["timestep"]), with_kwargs=True
    )
    latents = torch.randn(1, 8, 2, 4, 4)
    with torch.no_grad():
        bb.predict(latents, torch.tensor([0.4]), {"prompt_embeds": torch.randn(1, 16, 32)})
    # (batch, frames x rows/2 x cols/2) tokens, each at σ x 1000, as WanPipeline(expand_timesteps=True)
    assert seen[0].shape == (1, 2 * 2 * 2) and torch.all(seen[0] == 400.0)
    assert load_backbone("wan22_5b", "tiny").pipeline.config.expand_timesteps


def test_ti2v_vae_compresses_space_16x_and_refuses_sizes_it_cannot_encode(tmp_path: Path) -> None:
    bb = load_backbone("wan22_5b", "tiny")
    video = torch.randint(0, 255, (1, 5, 32, 48, 3), dtype=torch.uint8)
    assert tuple(bb.encode_video(video).shape) == (1, 8, 2, 2, 3)
    args = ["generate", "-p", PROMPT, "-o", str(tmp_path / "v"), "--backbone", "wan22_5b", "--model",
            "tiny", "--num-frames", "5", "--height", "24", "--width", "32"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "multiples of 16" in result.output, result.output
    assert not (tmp_path / "v").exists()


def test_ti2v_lora_loads_in_plain_diffusers_bit_exactly(caches: dict[str, Path], tmp_path: Path) -> None:
    result = Trainer(
        tiny_train_config(caches["wan22_5b"], tmp_path, backbone="wan22_5b", learning_rate=0.05)
    ).run(show_progress=False)
    geo = GEOMETRY["wan22_5b"]
    ours = load_backbone("wan22_5b", "tiny")
    load_inference_lora(ours, result.lora_path)
    plain = load_backbone("wan22_5b", "tiny")
    plain.pipeline.load_lora_weights(str(result.lora_path))
    assert np.array_equal(_render(plain, geo), _render(ours, geo))
    assert not np.array_equal(_render(load_backbone("wan22_5b", "tiny"), geo), _render(ours, geo))


def test_a14b_subject_adapters_exist_in_both_experts() -> None:
    bb = load_backbone("wan22_a14b", "tiny", components="transformer")
    targets = add_triplet(bb, TripletConfig(rank=2, alpha=2))
    for adapter, modules in targets.items():
        assert {m.split(".", 1)[0] for m in modules} == {"high_noise", "low_noise"}, adapter


def test_a14b_fused_lora_matches_unfused(a14b_run: Path) -> None:
    geo = GEOMETRY["wan22_a14b"]
    unfused = load_backbone("wan22_a14b", "tiny")
    load_inference_lora(unfused, a14b_run / INFERENCE_LORA)
    fused = load_backbone("wan22_a14b", "tiny")
    load_inference_lora(fused, a14b_run / INFERENCE_LORA, fuse=True)  # both experts fused
    np.testing.assert_allclose(_render(fused, geo), _render(unfused, geo), atol=1e-4)


# ----- the memory switches and the benchmark runner -----------------------------------------------
SAVERS = {
    "checkpointing": ({"gradient_checkpointing": True}, 1e-5),
    "checkpoint_one_block": ({"gradient_checkpointing": True, "checkpoint_blocks": 1}, 1e-5),
    "block_offload": ({"block_offload": True, "gradient_checkpointing": True}, 1e-5),
    "fp8_base": ({"fp8_base": True}, 0.05),
}


@pytest.mark.parametrize("backbone", sorted(GEOMETRY))
@pytest.mark.parametrize("saver", sorted(SAVERS))
def test_memory_switches_keep_the_losses(
    backbone: str, saver: str, caches: dict[str, Path], tmp_path: Path
) -> None:
    overrides, tolerance = SAVERS[saver]
    cache = caches[backbone]
    plain = tiny_train_losses(
        cache, tmp_path / "plain", backbone=backbone, max_steps=3, gradient_checkpointing=False
    )
    saved = tiny_train_losses(cache, tmp_path / saver, backbone=backbone, max_steps=3, **overrides)
    assert saved == pytest.approx(plain, rel=tolerance)


def test_benchmark_run_on_a14b(tmp_path: Path) -> None:
    from dreamrelation.benchmark import BenchmarkConfig, run_benchmark
    from dreamrelation.testing.evaluation import write_tiny_clip

    data = write_two_subject_dataset(tmp_path / "data" / "shaking_hands", n_videos=2, num_frames=5, size=16)
    geometry = {"num_frames": 5, "height": 16, "width": 16}
    config = BenchmarkConfig.model_validate(
        {
            "model": {"backbone": "wan22_a14b", "model": "tiny", "dtype": "float32"},
            "relations": [{"name": "shaking_hands", "data": str(data)}],
            "methods": ["dreamrelation"],
            "seeds": [0],
            "cache": {"video": geometry},
            "train": {"max_steps": 2, "warmup_steps": 0, "checkpoint_every": 2},
            "prompts": {"set": "paper", "per_relation": 1},
            "generation": {"num_inference_steps": 2, **geometry, "fps": 8},
            "evaluation": {"metrics": ["clip"], "clip_model": str(write_tiny_clip(tmp_path / "clip"))},
            "device": "cpu",
        }
    )
    averaged = run_benchmark(config, tmp_path / "out", show_progress=False)
    assert set(averaged) == {"base", "dreamrelation"}
    run = tmp_path / "out/runs/shaking_hands/dreamrelation/seed0"
    assert (run / INFERENCE_LORA).is_file() or any(run.rglob(INFERENCE_LORA))
    assert any(run.rglob(LOW_NOISE_LORA))


# ----- relations from a still image (TI2V-5B's image-to-video form) ------------------------------
def _first_frame_png(cache: Path, path: Path, size: int = 32) -> Path:
    """The first frame of a cached clip's source video, as a PNG."""
    from PIL import Image

    from dreamrelation.data import read_video

    manifest = json.loads((cache / "manifest.json").read_text())
    video = read_video(Path(manifest["items"][0]["video"]), 5, size, size, 1, 0)
    Image.fromarray(video[0].numpy()).save(path)
    return path


def test_the_cached_first_latent_frame_is_the_image_condition(caches: dict[str, Path]) -> None:
    """The VAE encodes the first frame alone, so the cache already holds what image-to-video needs."""
    from dreamrelation.cache import CachedDataset
    from dreamrelation.data import read_video

    bb = load_backbone("wan22_5b", "tiny")
    manifest = json.loads((caches["wan22_5b"] / "manifest.json").read_text())
    video = read_video(Path(manifest["items"][0]["video"]), 5, 32, 32, 1, 0)
    alone = bb.encode_video(video[None, :1])
    cached = CachedDataset([caches["wan22_5b"]]).items[0].latents
    torch.testing.assert_close(alone[0, :, 0], cached[:, 0], rtol=0, atol=1e-5)


def test_image_to_video_training_keeps_the_first_frame_clean_and_out_of_the_loss(
    caches: dict[str, Path], tmp_path: Path
) -> None:
    bb = load_backbone("wan22_5b", "tiny", components="transformer")
    seen, grads = [], []
    bb.transformer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw), with_kwargs=True)

    def keep_grad(module: torch.nn.Module, args: tuple, out: tuple) -> None:
        out[0].register_hook(grads.append)

    bb.transformer.register_forward_hook(keep_grad)
    config = tiny_train_config(caches["wan22_5b"], tmp_path / "run", backbone="wan22_5b", first_frame=True)
    trainer = Trainer(config, backbone=bb)
    latents = trainer.collate(trainer.batch_indices(0), torch.Generator().manual_seed(0))["latents"]
    trainer.micro_step(0, 0)
    given = seen[-1]
    # the model saw the clean first latent frame, at timestep 0 for its tokens only
    assert torch.equal(given["hidden_states"][:, :, 0], latents[:, :, 0])
    tokens_per_frame = 1  # 32 px / 16 (VAE) / 2 (patch): one token per latent frame
    assert torch.all(given["timestep"][:, :tokens_per_frame] == 0)
    assert torch.all(given["timestep"][:, tokens_per_frame:] > 0)
    # and the model's output for that frame is in no loss (no gradient), the others are
    assert torch.all(grads[0][:, :, 0] == 0) and torch.any(grads[0][:, :, 1:] != 0)
    result = Trainer(config).run(show_progress=False)
    assert read_lora_metadata(result.lora_path)["dreamrelation.config"]["first_frame"] is True


def test_generate_from_a_still_image_uses_it_as_the_first_frame(
    caches: dict[str, Path], tmp_path: Path
) -> None:
    image = _first_frame_png(caches["wan22_5b"], tmp_path / "photo.png")
    run = tmp_path / "run"
    Trainer(
        tiny_train_config(caches["wan22_5b"], run, backbone="wan22_5b", first_frame=True, learning_rate=0.05)
    ).run(show_progress=False)
    out = tmp_path / "videos"
    args = ["generate", "-p", PROMPT, "--image", str(image), "-o", str(out), "--backbone", "wan22_5b",
            "--model", "tiny", "--dtype", "float32", "--num-frames", "9", "--height", "32", "--width", "32",
            "--steps", "2", "--lora", str(run / INFERENCE_LORA)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.mp4"))) == 1

    from PIL import Image

    bb = load_backbone("wan22_5b", "tiny")
    photo = Image.open(image).convert("RGB")
    kwargs = dict(num_frames=5, height=32, width=32, num_inference_steps=2, seed=0, show_progress=False)
    with_image = render(bb, PROMPT, image=photo, **kwargs)
    without = render(bb, PROMPT, **kwargs)
    assert not np.array_equal(with_image, without)
    # the first frame is the photo through the VAE alone (the causal decoder's first frame sees only
    # the first latent frame, which is the photo's): what the tiny random VAE makes of it
    with torch.no_grad():
        pixels = torch.from_numpy(np.asarray(photo)).permute(2, 0, 1)[None, :, None].float() / 127.5 - 1
        decoded = bb.vae.decode(bb.vae.encode(pixels).latent_dist.mode(), return_dict=False)[0]
    expected = ((decoded[0, :, 0].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()
    np.testing.assert_allclose(with_image[0], expected, atol=1e-4)


def test_image_errors_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.new("RGB", (64, 32)).save(wide)
    base = ["generate", "-p", PROMPT, "-o", str(tmp_path / "v"), "--model", "tiny", "--num-frames", "5"]
    cases = [
        (["--backbone", "mochi", "--num-frames", "7", "--height", "32", "--width", "32", "--image", wide],
         "mochi has no image-to-video form"),
        (["--backbone", "wan22_5b", "--height", "32", "--width", "32", "--image", str(wide)],
         "is 64x32 (aspect 2.00) but the video is 32x32"),
        (["--backbone", "wan22_5b", "--height", "32", "--width", "32", "--image", str(tmp_path / "none.png")],
         "image not found"),
    ]  # fmt: skip
    for extra, message in cases:
        result = CliRunner().invoke(app, [*base, *map(str, extra)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len([line for line in result.output.splitlines() if line.startswith("error: ")]) == 1
    assert not (tmp_path / "v").exists()
    train = ["train", "--cache", str(tmp_path / "c"), "-o", str(tmp_path / "r"), "--backbone", "wan22_a14b",
             "--model", "tiny", "--first-frame"]  # fmt: skip
    result = CliRunner().invoke(app, train)
    assert result.exit_code == 2 and "wan22_a14b has no image-to-video form" in result.output, result.output
    assert not (tmp_path / "r").exists()


# ----- Wan2.2 I2V-A14B: the image on the input channels, its condition latents in the cache ------------
@pytest.fixture(scope="module")
def i2v_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cache(
        tmp_path_factory.mktemp("wan22_a14b_i2v"), "wan22_a14b_i2v", n_videos=2, num_frames=5, size=16
    )


def test_i2v_cache_holds_the_pipelines_own_image_condition(i2v_cache: Path) -> None:
    from PIL import Image

    from dreamrelation.cache import CachedDataset
    from dreamrelation.data import read_video

    item = CachedDataset([i2v_cache]).items[0]
    manifest = json.loads((i2v_cache / "manifest.json").read_text())
    first = read_video(Path(manifest["items"][0]["video"]), 5, 16, 16, 1, 0)[0].numpy()
    pipe = load_backbone("wan22_a14b_i2v", "tiny").pipeline
    image = pipe.video_processor.preprocess(Image.fromarray(first), height=16, width=16)
    _, condition = pipe.prepare_latents(image, 1, 16, 16, 16, 5, torch.float32, torch.device("cpu"))
    torch.testing.assert_close(condition[0, 4:], item.image_condition, rtol=0, atol=1e-5)  # after the mask
    assert torch.equal(condition[0, :4, 0], torch.ones_like(condition[0, :4, 0]))


def test_i2v_training_feeds_mask_and_condition_and_keeps_every_frame_in_the_loss(
    i2v_cache: Path, tmp_path: Path
) -> None:
    bb = load_backbone("wan22_a14b_i2v", "tiny", components="transformer")
    seen, grads = [], []

    def keep(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append(kwargs["hidden_states"])

    def keep_grad(module: torch.nn.Module, args: tuple, out: tuple) -> None:
        out[0].register_hook(grads.append)

    for expert in bb.transformer.experts.values():
        expert.register_forward_pre_hook(keep, with_kwargs=True)
        expert.register_forward_hook(keep_grad)
    config = tiny_train_config(i2v_cache, tmp_path / "run", backbone="wan22_a14b_i2v", first_frame=True)
    trainer = Trainer(config, backbone=bb)
    trainer.micro_step(0, 0)
    (inputs,) = seen
    assert (
        inputs.shape[1] == 36 and torch.all(inputs[:, 16:20, 0] == 1) and torch.all(inputs[:, 16:20, 1:] == 0)
    )
    assert torch.equal(
        inputs[:, 20:], trainer.dataset.items[trainer.batch_indices(0)[0]].image_condition[None]
    )
    assert torch.any(grads[0][:, :, 0] != 0)  # the first frame is denoised too: it stays in the loss
    result = Trainer(config).run(show_progress=False)
    assert (result.output / LOW_NOISE_LORA).is_file()


def test_i2v_generates_from_an_image_and_refuses_text_alone(i2v_cache: Path, tmp_path: Path) -> None:
    from PIL import Image

    run = tmp_path / "run"
    config = tiny_train_config(
        i2v_cache, run, backbone="wan22_a14b_i2v", first_frame=True, learning_rate=0.05
    )
    Trainer(config).run(show_progress=False)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(photo)
    common = ["generate", "-p", PROMPT, "--backbone", "wan22_a14b_i2v", "--model", "tiny",
              "--dtype", "float32", "--num-frames", "5", "--height", "16", "--width", "16", "--steps", "2",
              "--lora", str(run / INFERENCE_LORA)]  # fmt: skip
    result = CliRunner().invoke(app, [*common, "--image", str(photo), "-o", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, [*common, "-o", str(tmp_path / "w")])
    assert result.exit_code == 2 and "image-to-video only" in result.output and not (tmp_path / "w").exists()
    train = ["train", "--cache", str(i2v_cache), "-o", str(tmp_path / "r"), "--backbone", "wan22_a14b_i2v",
             "--model", "tiny"]  # fmt: skip
    result = CliRunner().invoke(app, train)
    assert result.exit_code == 2 and "pass --first-frame" in result.output and not (tmp_path / "r").exists()
