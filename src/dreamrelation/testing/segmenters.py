"""Tiny random Grounding DINO and SAM checkpoints (real transformers classes), for tests and CI.

Written with ``save_pretrained`` (model, tokenizer built from a small word list, PIL image
processors), so they load through exactly the path a user's downloaded weights take.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

_WORDS = ("a", "an", "the", "person", "dog", "cat", "red", "green", "blue", "circle", "square", "triangle")


def save_tiny_grounding_dino(folder: str | Path, words: Sequence[str] = _WORDS, seed: int = 0) -> Path:
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
        SwinConfig,
    )
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil,
    )

    folder = Path(folder)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *dict.fromkeys(w.lower() for w in words)]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})
    torch.manual_seed(seed)
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            image_size=64,
            patch_size=4,
            embed_dim=8,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 1, 1],
            window_size=2,
            out_indices=[2, 3, 4],
        ),
        text_config=BertConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            max_position_embeddings=64,
        ),
        # d_model 32: the input projections use GroupNorm(32, d_model); 2 decoder layers: the box
        # heads of layers > 0 are tied to layer 0's.
        d_model=32,
        num_queries=12,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
    )
    model = GroundingDinoForObjectDetection(config).eval()
    # At least 96 px on the short side: the coarsest feature level must keep more than one pixel.
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": 96, "longest_edge": 160})
    model.save_pretrained(folder)
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_tiny_sam(folder: str | Path, seed: int = 0) -> Path:
    from transformers import (
        SamConfig,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    folder = Path(folder)
    torch.manual_seed(seed)
    config = SamConfig(
        vision_config=SamVisionConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            output_channels=8,
            mlp_dim=16,
            global_attn_indexes=[0],
            window_size=0,
            num_pos_feats=4,
        ),
        prompt_encoder_config=SamPromptEncoderConfig(
            hidden_size=8, image_size=32, patch_size=8, mask_input_channels=4
        ),
        mask_decoder_config=SamMaskDecoderConfig(
            hidden_size=8, num_hidden_layers=1, num_attention_heads=2, mlp_dim=16, iou_head_hidden_dim=8
        ),
    )
    SamModel(config).eval().save_pretrained(folder)
    processor = SamProcessor(
        image_processor=SamImageProcessorPil(size={"longest_edge": 32}, pad_size={"height": 32, "width": 32})
    )
    processor.save_pretrained(folder)
    return folder
