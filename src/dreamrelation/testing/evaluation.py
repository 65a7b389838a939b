"""Tiny random models for the evaluation's tests and for offline dry runs of the benchmark runner.

Each writes a folder that loads with the same ``from_pretrained`` calls a real checkpoint goes
through; tokenizers and processors are built locally (no download). Scores from them are noise.
"""

from __future__ import annotations

from pathlib import Path

TINY_WORDS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "yes", "no", "USER:", "ASSISTANT:", "a", "is"]
TINY_WORDS += [f"w{i}" for i in range(53)]


def _word_tokenizer(extra_special: dict[str, str] | None = None, max_length: int = 77):  # noqa: ANN202
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(TINY_WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_length,
        extra_special_tokens=extra_special or {},
    )


def write_tiny_vlm(folder: Path, seed: int = 0) -> Path:
    """A random LLaVA (CLIP vision tower + Llama) with its processor and a chat template: loads
    through ``AutoProcessor`` + ``AutoModelForImageTextToText`` like Qwen2.5-VL does."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = Path(folder)
    template = (
        "{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
        "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=_word_tokenizer({"image_token": "<image>"}, max_length=512),
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=template,
        num_additional_image_tokens=1,
    )
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
    )
    text = LlamaConfig(
        vocab_size=len(TINY_WORDS),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=4, pad_token_id=0)
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_tiny_clip(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    """A random CLIP with a locally written byte-level vocabulary (no merges) and its processor."""
    import json

    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    size = {"shortest_edge": image_size}
    crop = {"height": image_size, "width": image_size}
    CLIPProcessor(
        image_processor=CLIPImageProcessor(size=size, crop_size=crop), tokenizer=tokenizer
    ).save_pretrained(folder)
    common = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    text = dict(
        common,
        vocab_size=len(vocab),
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    vision = dict(common, image_size=image_size, patch_size=8)
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(folder)
    return folder


def write_tiny_videomae(folder: Path, seed: int = 0, image_size: int = 32, num_frames: int = 4) -> Path:
    """A random VideoMAE with its image processor (FVD's transformers feature extractor)."""
    import torch
    from transformers import VideoMAEConfig, VideoMAEImageProcessor, VideoMAEModel

    folder = Path(folder)
    config = VideoMAEConfig(
        image_size=image_size,
        patch_size=8,
        num_frames=num_frames,
        tubelet_size=2,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    torch.manual_seed(seed)
    VideoMAEModel(config).save_pretrained(folder)
    size = {"shortest_edge": image_size}
    crop = {"height": image_size, "width": image_size}
    VideoMAEImageProcessor(size=size, crop_size=crop).save_pretrained(folder)
    return folder


def write_random_i3d(path: Path, seed: int = 0) -> Path:
    """Random I3D weights (BN statistics too) as a safetensors state dict."""
    import torch
    from safetensors.torch import save_file

    from dreamrelation.evaluation.fvd import InceptionI3d

    torch.manual_seed(seed)
    model = InceptionI3d()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith(("running_mean", "bn.bias")):
                tensor.normal_(0, 0.1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return Path(path)
