"""Tiny tokenizers built in-process, so tests never fetch anything from a hub.

The vocabulary covers the words our captions and prompts use; other words map to ``<unk>``.
"""

from __future__ import annotations

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast, T5Config

_WORDS = """
a an the is are with and of on in to at from by toward towards each other person people man woman
shaking shakes hands hand hugging hugs hug high five high-five fiving pushing pushes push following follows
punching punches punch walking walks towards apart away kicking patting pointing giving passing touching
cat dog bear raccoon tiger panda monkey rabbit fox lion horse cow robot astronaut
red green blue yellow cyan magenta orange white black grey gray purple pink brown
circle square triangle diamond cross star ring person-like sprite
plain striped checkered dotted dark background field room street park beach
standing still drifting moving alone wandering together independently same direction
video relation
""".split()


def word_tokenizer(
    model_max_length: int = 64, extra_words: list[str] | None = None
) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer with T5-style special tokens (pad 0, eos 1, unk 2)."""
    specials = ["<pad>", "</s>", "<unk>", "<s>"]
    words = list(dict.fromkeys(_WORDS + list(extra_words or []) + list(".,!?;:'\"-")))
    vocab = {token: i for i, token in enumerate(specials + words)}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    # Append </s> like T5 so pooled CLIP-style encoders find an end token.
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
        model_max_length=model_max_length,
    )


def tiny_t5_config() -> T5Config:
    """The tiny T5 encoder config shared by the tiny Mochi (T5) and Wan (UMT5) pipelines."""
    return T5Config(
        vocab_size=512,
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
    )
