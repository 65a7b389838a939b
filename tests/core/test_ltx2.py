"""LTX-2 on its tiny config: the relation is learned on the video stream with the audio stream cut
off (isolate_modalities), generation keeps the joint audio-video sampling and writes the sound, and
the LoRA loads through diffusers' own loader."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dreamrelation.backbones import load_backbone
from dreamrelation.cli import app
from dreamrelation.generation.render import load_inference_lora, render
from dreamrelation.testing import tiny_train_config, tiny_train_losses, write_tiny_cache
from dreamrelation.training.loop import Trainer

PROMPT = "a bear is shaking hands with a raccoon."
FRAMES, SIZE = 9, 64  # 8k+1 frames, a 32x VAE: 2 latent frames of 2 x 2


def _render(backbone, **extra: object) -> np.ndarray:
    return render(
        backbone, PROMPT, num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=2,
        guidance_scale=3.0, seed=1, show_progress=False, **extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cache(tmp_path_factory.mktemp("ltx2"), "ltx2", n_videos=2, num_frames=FRAMES, size=SIZE)


@pytest.fixture(scope="module")
def lora(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("run")
    return (
        Trainer(tiny_train_config(cache, output, backbone="ltx2", learning_rate=0.05))
        .run(show_progress=False)
        .lora_path
    )


def test_training_sees_the_video_stream_alone(cache: Path) -> None:
    """With the modalities isolated the audio tokens cannot change the video prediction; in the
    joint form (sampling) they do."""
    from diffusers import LTX2Pipeline

    from dreamrelation.cache import CachedDataset

    item = CachedDataset([cache]).items[0]
    bb = load_backbone("ltx2", "tiny", components="transformer")
    latents, text = item.latents[None], {k: v[None] for k, v in item.text.items()}
    tokens = LTX2Pipeline._pack_latents(latents, 1, 1)
    common = dict(
        hidden_states=tokens, timestep=torch.tensor([600.0]), sigma=torch.tensor([600.0]), num_frames=2,
        height=2, width=2, fps=24.0, audio_num_frames=bb.audio_tokens(2), use_cross_timestep=False,
        return_dict=False, **bb.transformer_kwargs(text, tokens),
    )  # fmt: skip
    quiet = torch.zeros(1, bb.audio_tokens(2), 4)
    loud = torch.randn(quiet.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        isolated = [
            bb.transformer(audio_hidden_states=a, isolate_modalities=True, **common)[0] for a in (quiet, loud)
        ]
        joint = [
            bb.transformer(audio_hidden_states=a, isolate_modalities=False, **common)[0]
            for a in (quiet, loud)
        ]
        predicted = bb.predict(latents, torch.tensor([0.6]), text)
    assert torch.equal(isolated[0], isolated[1]) and not torch.equal(joint[0], joint[1])
    # predict packs, calls the isolated form, and unpacks to (B, C, F, H, W)
    torch.testing.assert_close(predicted, LTX2Pipeline._unpack_latents(isolated[0], 2, 2, 2), rtol=0, atol=0)


def test_diffusers_own_loader_reproduces_generate(lora: Path) -> None:
    ours = load_backbone("ltx2", "tiny")
    load_inference_lora(ours, lora)
    plain = load_backbone("ltx2", "tiny")
    plain.pipeline.load_lora_weights(str(lora))
    expected = _render(ours)
    assert np.array_equal(_render(plain), expected)
    assert not np.array_equal(_render(load_backbone("ltx2", "tiny")), expected)


def test_generate_writes_the_sound_unless_asked_not_to(lora: Path, tmp_path: Path) -> None:
    args = ["generate", "-p", PROMPT, "--backbone", "ltx2", "--model", "tiny", "--dtype", "float32",
            "--num-frames", str(FRAMES), "--height", str(SIZE), "--width", str(SIZE), "--steps", "2",
            "--lora", str(lora)]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "with")])
    assert result.exit_code == 0, result.output
    (mp4,) = (tmp_path / "with").glob("*.mp4")
    with wave.open(str(mp4.with_suffix(".wav"))) as sound:
        assert sound.getnchannels() == 2 and sound.getframerate() == 16000 and sound.getnframes() > 0
    result = CliRunner().invoke(app, [*args, "--set", "audio=false", "-o", str(tmp_path / "without")])
    assert result.exit_code == 0, result.output
    (silent,) = (tmp_path / "without").glob("*.mp4")
    assert not silent.with_suffix(".wav").exists()


def test_resume_is_exact(cache: Path, tmp_path: Path) -> None:
    settings = {"backbone": "ltx2", "checkpoint_every": 2}
    whole = tiny_train_losses(cache, tmp_path / "whole", **settings)
    tiny_train_losses(cache, tmp_path / "parts", stop_after=2, **settings)
    assert tiny_train_losses(cache, tmp_path / "parts", **settings) == whole


def test_the_run_writes_the_comfyui_file_under_the_original_names(lora: Path) -> None:
    """Training writes the ComfyUI file beside the LoRA: every layer under ComfyUI's LTX-2 (LTXAV)
    name, ``diffusion_model.transformer_blocks.<i>.attn1|attn2.to_*``, none on the audio stream."""
    from safetensors.torch import load_file

    comfy = load_file(str(lora.with_name("relation_lora_comfyui.safetensors")))
    ours = load_file(str(lora))
    layer = re.compile(r"diffusion_model\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)")
    assert comfy and all(layer.fullmatch(k.rsplit(".lora_", 1)[0]) for k in comfy), sorted(comfy)
    # the same modules as the diffusers file, one LoRA each (nothing fused), only the prefix differs
    assert {k.replace("diffusion_model.", "transformer.", 1) for k in comfy} == set(ours)
    # diffusers reads LoRAs under the original LTX-2 names too (_convert_non_diffusers_ltx2_lora_to_
    # diffusers): the ComfyUI file must generate what the diffusers file does
    from_comfy, from_ours = load_backbone("ltx2", "tiny"), load_backbone("ltx2", "tiny")
    from_comfy.pipeline.load_lora_weights(str(lora.with_name("relation_lora_comfyui.safetensors")))
    from_ours.pipeline.load_lora_weights(str(lora))
    assert np.array_equal(_render(from_comfy), _render(from_ours))


@pytest.mark.parametrize(
    "saver",
    [{"gradient_checkpointing": True}, {"block_offload": True, "gradient_checkpointing": True}],
    ids=["checkpointing", "block_offload"],
)
def test_memory_switches_keep_the_losses(saver: dict, cache: Path, tmp_path: Path) -> None:
    plain = tiny_train_losses(
        cache, tmp_path / "plain", backbone="ltx2", max_steps=3, gradient_checkpointing=False
    )
    saved = tiny_train_losses(cache, tmp_path / "saved", backbone="ltx2", max_steps=3, **saver)
    assert saved == pytest.approx(plain, rel=1e-5)


# ----- relations from a still image (LTX2ImageToVideoPipeline's form) ---------------------------------
def test_the_cached_first_latent_frame_is_the_image_condition(cache: Path) -> None:
    import json

    from dreamrelation.cache import CachedDataset
    from dreamrelation.data import read_video

    bb = load_backbone("ltx2", "tiny")
    manifest = json.loads((cache / "manifest.json").read_text())
    video = read_video(Path(manifest["items"][0]["video"]), FRAMES, SIZE, SIZE, 1, 0)
    alone = bb.encode_video(video[None, :1])
    torch.testing.assert_close(
        alone[0, :, 0], CachedDataset([cache]).items[0].latents[:, 0], rtol=0, atol=1e-5
    )


def test_image_to_video_training_and_generation(cache: Path, tmp_path: Path) -> None:
    from PIL import Image

    bb = load_backbone("ltx2", "tiny", components="transformer")
    seen = []
    bb.transformer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw), with_kwargs=True)
    config = tiny_train_config(cache, tmp_path / "run", backbone="ltx2", first_frame=True, learning_rate=0.05)
    config.loss.contrastive_weight = 0.0  # 2 latent frames: one is given, RCL needs two more
    trainer = Trainer(config, backbone=bb)
    trainer.micro_step(0, 0)
    timestep = seen[-1]["timestep"]  # per token: the first latent frame's 4 tokens at 0, the rest not
    assert timestep.shape == (1, 8) and torch.all(timestep[:, :4] == 0) and torch.all(timestep[:, 4:] > 0)
    lora = Trainer(config).run(show_progress=False).lora_path

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(photo)
    args = ["generate", "-p", PROMPT, "--image", str(photo), "-o", str(tmp_path / "v"), "--backbone", "ltx2",
            "--model", "tiny", "--dtype", "float32", "--num-frames", str(FRAMES), "--height", str(SIZE),
            "--width", str(SIZE), "--steps", "2", "--lora", str(lora)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "v").glob("*.mp4"))) == 1 and len(list((tmp_path / "v").glob("*.wav"))) == 1
    base = load_backbone("ltx2", "tiny")
    image = Image.open(photo).convert("RGB")
    assert not np.array_equal(_render(base, image=image), _render(base))
