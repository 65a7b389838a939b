"""Wan2.1 I2V on its tiny config: the cache holds the pipeline's own condition latents and CLIP
tokens, training feeds the transformer as ``WanImageToVideoPipeline`` does, the LoRA changes
``generate --image`` and loads in plain diffusers bit-exactly, the ComfyUI file has Wan's original
names, resume is exact, and the bad inputs are one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from dreamrelation.backbones import TransformerOnly, backbone_class, load_backbone
from dreamrelation.cache import CachedDataset
from dreamrelation.cli import app
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.generation.comfyui import COMFYUI_LORA
from dreamrelation.generation.lora_files import INFERENCE_LORA
from dreamrelation.generation.render import load_inference_lora, render
from dreamrelation.testing import cached_first_frame, tiny_train_config, tiny_train_losses, write_tiny_cache
from dreamrelation.training.loop import Trainer

PROMPT = "a bear is shaking hands with a raccoon."
FRAMES, SIZE = 5, 16  # two latent frames of 2 x 2


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cache(
        tmp_path_factory.mktemp("wan_i2v"), "wan_i2v", n_videos=2, num_frames=FRAMES, size=SIZE
    )


@pytest.fixture(scope="module")
def run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("wan_i2v-run")
    config = tiny_train_config(cache, output, backbone="wan_i2v", first_frame=True, learning_rate=0.05)
    Trainer(config).run(show_progress=False)
    return output


def _first_frame(cache: Path) -> Image.Image:
    return cached_first_frame(cache, FRAMES, SIZE)


def _render(backbone, image: Image.Image) -> np.ndarray:
    return render(
        backbone, PROMPT, image=image, num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=3,
        guidance_scale=5.0, seed=3, show_progress=False,
    )  # fmt: skip


def test_cache_holds_the_pipelines_own_condition_latents_and_clip_tokens(cache: Path) -> None:
    item = CachedDataset([cache]).items[0]
    pipe = load_backbone("wan_i2v", "tiny").pipeline
    photo = _first_frame(cache)
    image = pipe.video_processor.preprocess(photo, height=SIZE, width=SIZE)
    _, condition = pipe.prepare_latents(image, 1, 16, SIZE, SIZE, FRAMES, torch.float32, torch.device("cpu"))
    torch.testing.assert_close(
        condition[0, 4:], item.image_condition["latents"], rtol=0, atol=1e-5
    )  # after the mask
    with torch.no_grad():
        tokens = pipe.encode_image(photo, torch.device("cpu"))
    # the penultimate CLIP layer: a class token and 2 x 2 patches of the tiny 32 px encoder
    assert item.image_condition["image_embeds"].shape == (5, 16)
    torch.testing.assert_close(tokens[0], item.image_condition["image_embeds"], rtol=0, atol=1e-6)


def test_training_feeds_mask_condition_and_clip_tokens_like_the_pipeline(cache: Path, tmp_path: Path) -> None:
    bb = load_backbone("wan_i2v", "tiny", components="transformer")
    seen, grads = [], []
    bb.transformer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw), with_kwargs=True)

    def keep_grad(module: torch.nn.Module, args: tuple, out: tuple) -> None:
        out[0].register_hook(grads.append)

    bb.transformer.register_forward_hook(keep_grad)
    config = tiny_train_config(cache, tmp_path / "run", backbone="wan_i2v", first_frame=True)
    trainer = Trainer(config, backbone=bb)
    trainer.micro_step(0, 0)
    (given,) = seen
    item = trainer.dataset.items[trainer.batch_indices(0)[0]]
    inputs = given["hidden_states"]
    assert inputs.shape[1] == 36  # 16 noisy latent + 4 mask + 16 condition channels
    assert torch.all(inputs[:, 16:20, 0] == 1) and torch.all(inputs[:, 16:20, 1:] == 0)
    assert torch.equal(inputs[:, 20:], item.image_condition["latents"][None])
    assert torch.equal(given["encoder_hidden_states_image"], item.image_condition["image_embeds"][None])
    assert given["encoder_hidden_states"].shape[1] == 512  # diffusers splits image from text at 512
    assert torch.any(grads[0][:, :, 0] != 0)  # the first frame is denoised too: it stays in the loss
    # the triplet is on Wan2.1's Q/K/V/O; the image tokens' own K/V projections stay frozen
    adapted = {n.split(".lora_")[0] for n, _ in bb.transformer.named_parameters() if ".lora_" in n}
    assert adapted and not any("add_k_proj" in n or "add_v_proj" in n for n in adapted)


def test_lora_changes_generate_image_and_diffusers_own_loader_reproduces_it(
    run: Path, cache: Path, tmp_path: Path
) -> None:
    photo = _first_frame(cache)
    path = tmp_path / "photo.png"
    photo.save(path)
    args = ["generate", "-p", PROMPT, "--image", str(path), "-o", str(tmp_path / "v"), "--backbone",
            "wan_i2v", "--model", "tiny", "--dtype", "float32", "--num-frames", str(FRAMES), "--height",
            str(SIZE), "--width", str(SIZE), "--steps", "2", "--lora", str(run / INFERENCE_LORA)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "v").glob("*.mp4"))) == 1

    ours = load_backbone("wan_i2v", "tiny")
    load_inference_lora(ours, run / INFERENCE_LORA)
    expected = _render(ours, photo)
    plain = load_backbone("wan_i2v", "tiny")
    plain.pipeline.load_lora_weights(str(run / INFERENCE_LORA))  # WanImageToVideoPipeline's own loader
    assert np.array_equal(_render(plain, photo), expected)  # bit-exact
    assert not np.array_equal(_render(load_backbone("wan_i2v", "tiny"), photo), expected)


def test_comfyui_file_has_wans_original_names(run: Path) -> None:
    comfy, ours = load_file(str(run / COMFYUI_LORA)), load_file(str(run / INFERENCE_LORA))
    layers = {k.removesuffix(".lora_A.weight") for k in comfy if k.endswith(".lora_A.weight")}
    # relation (Q, K) + ffn (O) on self- and cross-attention of both blocks, as for Wan2.1 T2V
    assert layers == {
        f"diffusion_model.blocks.{i}.{attn}.{p}"
        for i in (0, 1)
        for attn in ("self_attn", "cross_attn")
        for p in "qko"
    }
    assert torch.equal(
        comfy["diffusion_model.blocks.1.cross_attn.k.lora_B.weight"],
        ours["transformer.blocks.1.attn2.to_k.lora_B.weight"],
    )


def test_resume_is_exact(cache: Path, tmp_path: Path) -> None:
    settings = {"backbone": "wan_i2v", "first_frame": True, "checkpoint_every": 2, "max_steps": 4}
    whole = tiny_train_losses(cache, tmp_path / "whole", **settings)
    tiny_train_losses(cache, tmp_path / "parts", stop_after=2, **settings)
    assert tiny_train_losses(cache, tmp_path / "parts", **settings) == whole


def test_bad_inputs_are_one_line_and_write_nothing(run: Path, cache: Path, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    _first_frame(cache).save(photo)
    wan_run = tmp_path / "wan-run"  # a text-to-video (Wan2.1 T2V) LoRA
    wan_cache = write_tiny_cache(tmp_path / "wan", "wan", n_videos=2, num_frames=FRAMES, size=SIZE)
    Trainer(tiny_train_config(wan_cache, wan_run, backbone="wan", max_steps=1)).run(show_progress=False)
    common = ["generate", "-p", PROMPT, "--backbone", "wan_i2v", "--model", "tiny", "--dtype", "float32",
              "--num-frames", str(FRAMES), "--height", str(SIZE), "--width", str(SIZE),
              "--steps", "2"]  # fmt: skip
    cases = [
        ([*common, "--lora", str(run / INFERENCE_LORA)], "image-to-video only"),
        ([*common, "--image", str(photo), "--lora", str(wan_run / INFERENCE_LORA)], "was trained on wan,"),
        (["train", "--cache", str(cache), "--backbone", "wan_i2v", "--model", "tiny"], "pass --first-frame"),
    ]
    validating = ["train", "--cache", str(cache), "--backbone", "wan_i2v", "--model", "tiny", "--first-frame",
                  "--set", "validation_every=2", "--set", "validation_prompts=[a bear.]"]  # fmt: skip
    cases.append((validating, "validation_image: wan_i2v is image-to-video only"))
    for n, (args, message) in enumerate(cases):
        out = tmp_path / f"out{n}"
        result = CliRunner().invoke(app, [*args, "-o", str(out)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len([line for line in result.output.splitlines() if line.startswith("error: ")]) == 1
        assert not out.exists()
    with pytest.raises(InputError, match="trained on wan_i2v, not wan"):  # and the other way round
        load_inference_lora(load_backbone("wan", "tiny"), run / INFERENCE_LORA)
    with pytest.raises(ConfigError, match="needs 512"):
        backbone_class("wan_i2v")(TransformerOnly(torch.nn.Linear(1, 1)), max_sequence_length=256)


@pytest.mark.parametrize("method", ["direct_lora", "reversion", "motion_inversion"])
def test_each_method_class_trains_from_the_first_frame_and_changes_generate_image(
    method: str, cache: Path, tmp_path: Path
) -> None:
    # the other methods are DreamRelation's class (recipes) or these plus RCL (motion_inversion_rcl)
    config = tiny_train_config(
        cache, tmp_path / "run", backbone="wan_i2v", method=method, first_frame=True, max_steps=2,
        learning_rate=0.05,
    )  # fmt: skip
    result = Trainer(config).run(show_progress=False)
    photo = _first_frame(cache)
    prompt = "a bear <R> a raccoon." if method == "reversion" else PROMPT
    adapted = load_backbone("wan_i2v", "tiny")
    load_inference_lora(adapted, result.lora_path)
    kwargs = dict(image=photo, num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=2, seed=0)
    base = render(load_backbone("wan_i2v", "tiny"), prompt, show_progress=False, **kwargs)
    assert not np.array_equal(render(adapted, prompt, show_progress=False, **kwargs), base)


def test_loads_from_a_diffusers_folder_with_its_image_encoder(tmp_path: Path) -> None:
    tiny = load_backbone("wan_i2v", "tiny")
    tiny.pipeline.save_pretrained(tmp_path / "wan21-i2v")
    full = load_backbone("wan_i2v", str(tmp_path / "wan21-i2v"))  # the real from_pretrained path
    alone = load_backbone("wan_i2v", str(tmp_path / "wan21-i2v"), components="transformer")
    expected = tiny.transformer.state_dict()
    assert all(torch.equal(alone.transformer.state_dict()[k], v) for k, v in expected.items())
    video = torch.randint(0, 255, (1, FRAMES, SIZE, SIZE, 3), dtype=torch.uint8)
    loaded, built = full.encode_image_condition(video), tiny.encode_image_condition(video)
    assert all(torch.equal(loaded[key], built[key]) for key in ("latents", "image_embeds"))
