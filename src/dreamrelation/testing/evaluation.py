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


# Qwen2.5-VL's special tokens, in the order (and so the relative ids) of the real vocabulary.
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
QWEN_SPECIAL += ["<|image_pad|>", "<|video_pad|>"]
TINY_QWEN_WORDS = ["<unk>", "system", "user", "assistant", "You", "are", "a", "helpful", "assistant."]
TINY_QWEN_WORDS += ["yes", "no", "is"] + [f"w{i}" for i in range(45)]

# Behaves like Qwen2.5-VL's own template (default system turn, one vision block per image or
# video, text parts verbatim, the assistant header as the generation prompt); written here.
QWEN25_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tiny_qwen25_vl(folder: Path, seed: int = 0) -> Path:
    """A random Qwen2.5-VL (windowed ViT with 2x2 patch merging + M-RoPE decoder) in the layout of
    the hub checkpoints: ``config.json``, ``generation_config.json`` (it samples, like the hub's
    ``do_sample: true``, here at temperature 1.5: the judge must override it), the weights, a
    tokenizer with Qwen's special tokens and chat template, and ``preprocessor_config.json`` of a
    ``Qwen2VLImageProcessor`` whose pixel limits turn a 24 x 32 frame into a 4 x 6 patch grid
    (6 image tokens). ``AutoProcessor`` builds ``Qwen2_5_VLProcessor`` from it, which in
    transformers 5 needs torchvision (for its video processor); writing the folder does not."""
    import json

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder = Path(folder)
    vocab = {w: i for i, w in enumerate(TINY_QWEN_WORDS + QWEN_SPECIAL)}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        additional_special_tokens=QWEN_SPECIAL,
        model_max_length=4096,
    )
    tokenizer.chat_template = QWEN25_VL_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    # the slow (PIL) class writes the same file as the torchvision one; it needs no torchvision
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=56 * 56, max_pixels=56 * 84, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    image_processor.save_pretrained(folder)
    ids = {token: vocab[token] for token in QWEN_SPECIAL}
    vision = dict(
        depth=2,
        hidden_size=16,
        intermediate_size=32,
        num_heads=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=16,
        window_size=56,
        fullatt_block_indexes=[1],
    )
    text = dict(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    config = Qwen2_5_VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    generation = {  # sampling, so that a judge that did not force greedy decoding answers at random
        "do_sample": True,
        "temperature": 1.5,
        "top_k": 0,
        "top_p": 1.0,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
    }
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2))
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
    """Random I3D weights (BN statistics too) as a safetensors state dict. Convolutions are He-
    initialised: with PyTorch's default init the signal dies over I3D's depth and every video gets
    the same features (to 1e-7), which would make FVD 0 and any preprocessing check vacuous."""
    import torch
    from safetensors.torch import save_file

    from dreamrelation.evaluation.fvd import InceptionI3d

    torch.manual_seed(seed)
    model = InceptionI3d()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv3d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith(("running_mean", "bn.bias")):
                tensor.normal_(0, 0.1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return Path(path)
