"""HunyuanVideo-1.5 on its tiny config: its pipeline has no load_lora_weights, so the LoRA loads
through the transformer's peft adapter API, in generate and in the README's two plain-diffusers
lines; training calls the transformer exactly as the text-to-video pipeline does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dreamrelation.backbones import load_backbone
from dreamrelation.errors import InputError
from dreamrelation.generation.render import load_inference_lora, render
from dreamrelation.testing import tiny_train_config, tiny_train_losses, write_tiny_cache
from dreamrelation.training.loop import Trainer

PROMPT = "a bear is shaking hands with a raccoon."
FRAMES, SIZE = 5, 32  # the VAE compresses space 16x


def _render(backbone, guidance_scale: float = 6.0) -> np.ndarray:
    return render(
        backbone, PROMPT, num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=3,
        guidance_scale=guidance_scale, seed=2, show_progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cache(
        tmp_path_factory.mktemp("hunyuan15"), "hunyuan15", n_videos=2, num_frames=FRAMES, size=SIZE
    )


@pytest.fixture(scope="module")
def lora(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("run")
    config = tiny_train_config(cache, output, backbone="hunyuan15", learning_rate=0.05)
    return Trainer(config).run(show_progress=False).lora_path


def test_plain_diffusers_two_lines_reproduce_generate(lora: Path) -> None:
    ours = load_backbone("hunyuan15", "tiny")
    load_inference_lora(ours, lora)
    expected = _render(ours)

    plain = load_backbone("hunyuan15", "tiny")
    pipe = plain.pipeline
    assert not hasattr(pipe, "load_lora_weights")  # why the README shows these lines
    pipe.transformer.load_lora_adapter(str(lora), prefix="transformer", adapter_name="relation")
    pipe.transformer.set_adapters(["relation"], [1.0])
    assert np.array_equal(_render(plain), expected)  # bit-exact
    assert not np.array_equal(_render(load_backbone("hunyuan15", "tiny")), expected)


def test_fused_lora_matches_unfused(lora: Path) -> None:
    unfused = load_backbone("hunyuan15", "tiny")
    load_inference_lora(unfused, lora)
    fused = load_backbone("hunyuan15", "tiny")
    load_inference_lora(fused, lora, fuse=True)
    assert not any("lora_" in n for n, _ in fused.transformer.named_parameters())
    np.testing.assert_allclose(_render(fused), _render(unfused), atol=1e-4)


def test_training_calls_the_transformer_as_the_text_to_video_pipeline(cache: Path) -> None:
    from dreamrelation.cache import CachedDataset

    item = CachedDataset([cache]).items[0]
    bb = load_backbone("hunyuan15", "tiny", components="transformer")
    latents, text = item.latents[None], {k: v[None] for k, v in item.text.items()}
    sigma = torch.tensor([0.7])
    with torch.no_grad():
        got = bb.predict(latents, sigma, text)
        # the pipeline's t2v input: [latents, zero condition latents, zero mask], zero SigLIP tokens
        expected = bb.transformer(
            hidden_states=torch.cat(
                [latents, torch.zeros_like(latents), torch.zeros_like(latents[:, :1])], 1
            ),
            timestep=torch.tensor([700.0]),
            encoder_hidden_states=text["prompt_embeds"],
            encoder_attention_mask=text["prompt_attention_mask"],
            encoder_hidden_states_2=text["glyph_embeds"],
            encoder_attention_mask_2=text["glyph_attention_mask"],
            image_embeds=torch.zeros(1, 729, 12),
            return_dict=False,
        )[0]
    assert torch.equal(got, expected)


def test_guidance_scale_reaches_the_pipelines_guider() -> None:
    bb = load_backbone("hunyuan15", "tiny")
    calls = []
    bb.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    _render(bb, guidance_scale=1.0)  # CFG off: one transformer call per step
    assert len(calls) == 3
    assert bb.pipeline.guider.guidance_scale == 1.0
    _render(bb, guidance_scale=6.0)  # CFG on: conditional and unconditional calls
    assert len(calls) == 3 + 6 and bb.pipeline.guider.guidance_scale == 6.0


def test_resume_is_exact(cache: Path, tmp_path: Path) -> None:
    settings = {"backbone": "hunyuan15", "checkpoint_every": 2}
    whole = tiny_train_losses(cache, tmp_path / "whole", **settings)
    tiny_train_losses(cache, tmp_path / "parts", stop_after=2, **settings)
    assert tiny_train_losses(cache, tmp_path / "parts", **settings) == whole


@pytest.mark.parametrize(
    "saver",
    [{"gradient_checkpointing": True}, {"block_offload": True, "gradient_checkpointing": True}],
    ids=["checkpointing", "block_offload"],
)
def test_memory_switches_keep_the_losses(saver: dict, cache: Path, tmp_path: Path) -> None:
    plain = tiny_train_losses(
        cache, tmp_path / "plain", backbone="hunyuan15", max_steps=3, gradient_checkpointing=False
    )
    saved = tiny_train_losses(cache, tmp_path / "saved", backbone="hunyuan15", max_steps=3, **saver)
    assert saved == pytest.approx(plain, rel=1e-5)


def test_a_hunyuanvideo_lora_is_refused(tmp_path: Path) -> None:
    from dreamrelation.generation.lora_files import save_lora_files
    from dreamrelation.training.adapters import TripletConfig, add_triplet

    old = load_backbone("hunyuan", "tiny")
    add_triplet(old, TripletConfig(rank=2, alpha=2))
    path, _ = save_lora_files(old.transformer, tmp_path, "{}", "hunyuan", ["relation", "ffn"])
    with pytest.raises(InputError, match="trained on hunyuan, not hunyuan15"):
        load_inference_lora(load_backbone("hunyuan15", "tiny"), path)
