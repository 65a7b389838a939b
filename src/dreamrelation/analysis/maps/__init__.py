"""Feature and attention maps of a video transformer while it generates (paper §4, Fig. 5).

Both analyses watch one real generation through the backbone's own diffusers pipeline and look at
a single denoising step (0-based loop index, default 60 of 64):

* **Feature maps** (Fig. 5(a)): the outputs of the vision-token Q, K and V projections, reduced
  over channels (mean, as in the paper, or L2 norm), averaged over layers, reshaped to the token
  grid (f, h, w) and averaged over frames -> one h x w map per projection.
* **Attention maps**: how much a word of the prompt and the video tokens attend to each other,
  averaged over heads, layers and the word's tokens, one (h, w) map per token frame. Joint-attention
  MM-DiTs (Mochi, HunyuanVideo) give the attention *from* the word's text tokens *to* every video
  token; cross-attention models (Wan) have no text queries, so they give the attention *from*
  every video token *to* the word's text keys.

Nothing here changes what the model computes: forward hooks only read projection outputs, and the
attention capture wraps the attention function for the duration of the call, recomputes the
softmax rows it needs on the side from the very query/key tensors the model passes in (after
QK-norm and RoPE) and returns the model's own result untouched. Which rows are the conditional
(CFG) ones is found by matching each transformer call's text embeddings against the prompt's, so
nothing here branches on the backbone's name.

One module per job: :mod:`.probe` (token grid, modules, word tokens, the denoising-loop probe),
:mod:`.features`, :mod:`.attention`, :mod:`.compare` (base vs relation LoRA), :mod:`.figures`.
"""

from __future__ import annotations

from dreamrelation.analysis.maps.attention import AttentionMaps, attention_maps, capture_attention
from dreamrelation.analysis.maps.compare import compare_attention, compare_feature_maps, relation_lora
from dreamrelation.analysis.maps.features import FeatureMaps, feature_maps
from dreamrelation.analysis.maps.figures import (
    save_attention_arrays,
    save_attention_figure,
    save_feature_arrays,
    save_feature_figure,
)
from dreamrelation.analysis.maps.probe import (
    FEATURE_ROLES,
    REDUCTIONS,
    VISION_STREAMS,
    TokenGrid,
    WordTokens,
    attention_modules,
    first_video_frames,
    locate_word,
    token_grid,
    upsample_maps,
    vision_projections,
)

__all__ = [
    "FEATURE_ROLES",
    "REDUCTIONS",
    "VISION_STREAMS",
    "AttentionMaps",
    "FeatureMaps",
    "TokenGrid",
    "WordTokens",
    "attention_maps",
    "attention_modules",
    "capture_attention",
    "compare_attention",
    "compare_feature_maps",
    "feature_maps",
    "first_video_frames",
    "locate_word",
    "relation_lora",
    "save_attention_arrays",
    "save_attention_figure",
    "save_feature_arrays",
    "save_feature_figure",
    "token_grid",
    "upsample_maps",
    "vision_projections",
]
