"""What both map analyses share: the token grid, the projection and attention modules, the prompt's word
tokens, and a probe that follows the pipeline's denoising loop to one step."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from dreamrelation.backbones import Backbone
from dreamrelation.errors import ConfigError

#: Token streams whose projections see vision tokens (HunyuanVideo's single-stream blocks project
#: the concatenation [vision; text], vision first).
VISION_STREAMS: tuple[str, ...] = ("vision", "joint")
FEATURE_ROLES: tuple[str, ...] = ("q", "k", "v")
Reduction = Literal["mean", "norm"]
REDUCTIONS: tuple[str, ...] = ("mean", "norm")
Direction = Literal["text_to_video", "video_to_text"]

# A transformer call is conditional when its text embedding matches the prompt's this closely (the
# slack covers the pipeline casting the embedding to a half-precision transformer dtype).
_EMBEDDING_MATCH_RTOL = 2e-2


# ----- geometry ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenGrid:
    """The vision tokens' layout: ``frames x height x width`` tokens, flattened in that order."""

    frames: int
    height: int
    width: int
    temporal_patch: int = 1

    @property
    def size(self) -> int:
        return self.frames * self.height * self.width

    def reshape(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., f*h*w) -> (..., f, h, w)."""
        return tokens.unflatten(-1, (self.frames, self.height, self.width))


def token_grid(transformer: torch.nn.Module, latent_shape: Sequence[int]) -> TokenGrid:
    """Token grid of latents (B, C, F, H, W) from the transformer config's patch sizes.

    ``patch_size`` is an int (spatial; temporal from ``patch_size_t``, default 1) or a (t, h, w) tuple.
    """
    cfg = transformer.config
    patch = cfg.patch_size
    if isinstance(patch, (tuple, list)):
        pt, ph, pw = (int(p) for p in patch)
    else:
        pt, ph, pw = int(getattr(cfg, "patch_size_t", None) or 1), int(patch), int(patch)
    _, _, frames, height, width = latent_shape
    return TokenGrid(frames // pt, height // ph, width // pw, pt)


def first_video_frames(backbone: Backbone, num_frames: int, grid: TokenGrid) -> list[int]:
    """For each token frame, the first video frame of the latent frame it starts at."""
    groups = backbone.frame_groups(num_frames)
    return [groups[min(t * grid.temporal_patch, len(groups) - 1)][0] for t in range(grid.frames)]


def upsample_maps(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(f, h, w) token maps -> (f, height, width), bilinear (e.g. to the video's frame size)."""
    return F.interpolate(maps[:, None].float(), size=(height, width), mode="bilinear", align_corners=False)[
        :, 0
    ]


# ----- module discovery ----------------------------------------------------------------------------
def vision_projections(backbone: Backbone, role: str, streams: Sequence[str] = VISION_STREAMS) -> list[str]:
    """Projection modules playing ``role`` for the vision tokens, LoRA-wrapped or not.

    ``Backbone.projection_modules`` lists plain ``nn.Linear`` modules only; once diffusers loads a
    LoRA, each target becomes a peft layer holding its Linear as ``base_layer``. We hook the peft
    layer itself so that feature maps include the LoRA update.
    """
    wanted = [s for s in streams if s in backbone.streams]
    patterns = [
        re.compile(rf"{block}\.{re.escape(roles[role])}")
        for block, roles in (backbone.streams[s] for s in wanted)
        if role in roles
    ]
    return [
        name
        for name, module in backbone.transformer.named_modules()
        if isinstance(getattr(module, "base_layer", module), torch.nn.Linear)
        and any(p.fullmatch(name) for p in patterns)
    ]


def attention_modules(backbone: Backbone) -> list[str]:
    """The transformer's attention modules (those of every token stream, each listed once)."""
    patterns = [re.compile(block) for block, _ in backbone.streams.values()]
    return [
        name
        for name, module in backbone.transformer.named_modules()
        if hasattr(module, "processor") and any(p.fullmatch(name) for p in patterns)
    ]


# ----- prompt and word tokens ----------------------------------------------------------------------
@dataclass(frozen=True)
class WordTokens:
    """Where a word sits among the text tokens the transformer sees."""

    word: str
    positions: list[int]  # indices into the transformer's text sequence
    tokens: list[str]  # the word's tokens
    prompt_tokens: list[str]  # all valid text tokens, in order
    text_mask: torch.Tensor  # (L,) bool: which of the L text positions are real tokens
    prompt_embeds: torch.Tensor  # (1, L, D) the prompt's embedding, as the pipeline computes it


class _RecordingTokenizer:
    """Passes every call through to the tokenizer and remembers its arguments."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, text: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((text, args, kwargs))
        return self.tokenizer(text, *args, **kwargs)

    def apply_chat_template(self, conversation: Any, *args: Any, **kwargs: Any) -> Any:
        """Chat-templated prompts (HunyuanVideo-1.5's Qwen2.5-VL): recorded as the plain call that
        tokenizes the rendered template (no special tokens added, as the template has them)."""
        if kwargs.get("tokenize", True) and kwargs.get("max_length") is not None:
            text = self.tokenizer.apply_chat_template(
                conversation, add_generation_prompt=kwargs.get("add_generation_prompt", False), tokenize=False
            )
            wanted = {k: kwargs[k] for k in ("padding", "max_length", "truncation") if k in kwargs}
            self.calls.append((text, (), {**wanted, "add_special_tokens": False}))
        return self.tokenizer.apply_chat_template(conversation, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


@contextmanager
def _recording_tokenizer(pipeline: Any) -> Iterator[_RecordingTokenizer]:
    original = pipeline.tokenizer
    recorder = _RecordingTokenizer(original)
    # object.__setattr__ bypasses DiffusionPipeline.__setattr__, which would rewrite the config.
    object.__setattr__(pipeline, "tokenizer", recorder)
    try:
        yield recorder
    finally:
        object.__setattr__(pipeline, "tokenizer", original)


def _word_spans(text: str, word: str) -> list[tuple[int, int]]:
    pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)
    return [m.span() for m in pattern.finditer(text)]


def locate_word(backbone: Backbone, prompt: str, word: str) -> WordTokens:
    """Find ``word`` among the prompt's text tokens exactly as the pipeline's ``encode_prompt`` makes them.

    The prompt is encoded through ``backbone.encode_prompts`` while the pipeline's tokenizer is
    watched; its fixed-length call (the one with ``max_length``) is repeated with character offsets.
    The text it saw may be cleaned (Wan) or wrapped in a template whose leading tokens the pipeline
    crops off (HunyuanVideo); the crop is the tokenized length minus the embedding's length.
    """
    word = word.strip()
    if not word:
        raise ConfigError("the word to map is empty; pass a word of the prompt, e.g. --word shaking")
    pipeline = backbone.pipeline
    with _recording_tokenizer(pipeline) as recorder, torch.no_grad():
        conditioning = backbone.encode_prompts([prompt])
    embeds = conditioning["prompt_embeds"]
    calls = [call for call in recorder.calls if call[2].get("max_length") is not None]
    if not calls:
        raise RuntimeError(f"{backbone.name}: could not see how the pipeline tokenizes prompts")
    text, args, kwargs = calls[0]
    text = text[0] if isinstance(text, (list, tuple)) else text
    tokenizer = recorder.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"{backbone.name}: attention maps need a fast tokenizer (character offsets)")
    encoded = tokenizer(text, *args, **{**kwargs, "return_tensors": None, "return_offsets_mapping": True})
    ids = list(encoded["input_ids"])
    offsets = list(encoded["offset_mapping"])
    valid = list(encoded.get("attention_mask") or [1] * len(ids))
    length = embeds.shape[1]
    crop = len(ids) - length
    if crop < 0:
        raise RuntimeError(f"{backbone.name}: {len(ids)} tokens but a text embedding of {length}")
    text_mask = torch.tensor([bool(v) for v in valid[crop:]])
    spans = _word_spans(text, word)
    positions = [
        i - crop
        for i in range(crop, len(ids))
        if valid[i]
        and offsets[i][1] > offsets[i][0]
        and any(offsets[i][0] < end and offsets[i][1] > start for start, end in spans)
    ]
    token_strings = tokenizer.convert_ids_to_tokens(ids[crop:])
    prompt_tokens = [t for t, m in zip(token_strings, text_mask.tolist(), strict=True) if m]
    if not positions:
        raise ConfigError(
            f"the word {word!r} is not among the tokens of the prompt {prompt!r} as {backbone.name}'s "
            f"text encoder sees it: {' '.join(prompt_tokens)}. Pass a word of the prompt with --word"
        )
    # where the prompt's tokens sit in the text sequence the transformer attends to (HunyuanVideo-1.5
    # puts other streams' tokens first)
    where, sequence_mask = backbone.text_sequence(text_mask, conditioning)
    return WordTokens(
        word=word,
        positions=[int(where[p]) for p in positions],
        tokens=[token_strings[p] for p in positions],
        prompt_tokens=prompt_tokens,
        text_mask=sequence_mask,
        prompt_embeds=embeds,
    )


def prompt_embeds(backbone: Backbone, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        return backbone.encode_prompts([prompt])["prompt_embeds"]


# ----- following the denoising loop ----------------------------------------------------------------
class Probe:
    """Follows the pipeline's transformer calls: denoising step, token grid, conditional batch rows.

    The step is the scheduler's ``step_index`` (None before its first ``step()``, i.e. step 0); a
    call is captured when it runs at the chosen step and some of its batch rows carry the prompt's
    text embedding (the conditional half under CFG, whether batched or a separate call).
    """

    def __init__(self, backbone: Backbone, prompt_embeds: torch.Tensor, step: int) -> None:
        self.transformer = backbone.transformer
        self.scheduler = backbone.pipeline.scheduler
        # the modules the pipeline calls: the transformer, or each expert of one made of several
        # (Wan2.2 A14B), which the pipeline calls directly
        self.called = list(getattr(self.transformer, "experts", {"": self.transformer}).values())
        self.signature = inspect.signature(self.called[0].forward)
        self.reference = prompt_embeds[0].float()
        self.step = step
        self.grid: TokenGrid | None = None
        self.batch = 0
        self.cond_rows: list[int] = []
        self.active = False
        self.captured_calls = 0

    def _conditional_rows(self, text: torch.Tensor | None) -> list[int]:
        if text is None or text.shape[1:] != self.reference.shape:
            return []
        ref = self.reference.to(text.device)
        scale = ref.norm().clamp_min(1e-12)
        return [
            b for b in range(text.shape[0]) if (text[b].float() - ref).norm() <= _EMBEDDING_MATCH_RTOL * scale
        ]

    def _before(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        bound = self.signature.bind_partial(*args, **kwargs).arguments
        hidden = bound["hidden_states"]
        current = self.scheduler.step_index or 0
        self.active = False
        if current != self.step:
            return
        self.cond_rows = self._conditional_rows(bound.get("encoder_hidden_states"))
        if hidden.ndim == 3:  # tokens packed by the pipeline (LTX-2): the call names their grid
            self.grid = TokenGrid(int(bound["num_frames"]), int(bound["height"]), int(bound["width"]))
        else:
            self.grid = token_grid(self.transformer, hidden.shape)
        self.batch = hidden.shape[0]
        self.active = bool(self.cond_rows)
        self.captured_calls += self.active

    def _after(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.active = False

    @contextmanager
    def attached(self) -> Iterator[Probe]:
        handles = [
            hook
            for module in self.called
            for hook in (
                module.register_forward_pre_hook(self._before, with_kwargs=True),
                module.register_forward_hook(self._after),
            )
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def check_captured(self, what: str) -> None:
        if not self.captured_calls:
            raise RuntimeError(
                f"no conditional transformer call ran at step {self.step}; nothing to build {what} from"
            )


def check_text_to_video(backbone: Backbone) -> None:
    """The maps are drawn from a text-to-video run; an image-to-video-only checkpoint has none."""
    if not backbone.text_to_video:
        raise ConfigError(
            f"{backbone.name} is image-to-video only and the maps are drawn from text-to-video runs; "
            "analyse the text-to-video checkpoint of the same family instead"
        )


def check_step(step: int, num_inference_steps: int) -> None:
    if not 0 <= step < num_inference_steps:
        raise ConfigError(
            f"step {step} is outside the run's denoising steps 0..{num_inference_steps - 1}; "
            f"pass --step below --steps"
        )
