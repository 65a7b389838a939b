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
"""

from __future__ import annotations

import inspect
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from dreamrelation.backbones import Backbone
from dreamrelation.errors import ConfigError
from dreamrelation.generate import ADAPTER_NAME, load_inference_lora, render

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
        embeds = backbone.encode_prompts([prompt])["prompt_embeds"]
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
    return WordTokens(
        word=word,
        positions=positions,
        tokens=[token_strings[p] for p in positions],
        prompt_tokens=prompt_tokens,
        text_mask=text_mask,
        prompt_embeds=embeds,
    )


def _prompt_embeds(backbone: Backbone, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        return backbone.encode_prompts([prompt])["prompt_embeds"]


# ----- following the denoising loop ----------------------------------------------------------------
class _Probe:
    """Follows the pipeline's transformer calls: denoising step, token grid, conditional batch rows.

    The step is the scheduler's ``step_index`` (None before its first ``step()``, i.e. step 0); a
    call is captured when it runs at the chosen step and some of its batch rows carry the prompt's
    text embedding (the conditional half under CFG, whether batched or a separate call).
    """

    def __init__(self, backbone: Backbone, prompt_embeds: torch.Tensor, step: int) -> None:
        self.transformer = backbone.transformer
        self.scheduler = backbone.pipeline.scheduler
        self.signature = inspect.signature(self.transformer.forward)
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
        self.grid = token_grid(self.transformer, hidden.shape)
        self.batch = hidden.shape[0]
        self.active = bool(self.cond_rows)
        self.captured_calls += self.active

    def _after(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.active = False

    @contextmanager
    def attached(self) -> Iterator[_Probe]:
        handles = [
            self.transformer.register_forward_pre_hook(self._before, with_kwargs=True),
            self.transformer.register_forward_hook(self._after),
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


def _check_step(step: int, num_inference_steps: int) -> None:
    if not 0 <= step < num_inference_steps:
        raise ConfigError(
            f"step {step} is outside the run's denoising steps 0..{num_inference_steps - 1}; "
            f"pass --step below --steps"
        )


# ----- feature maps --------------------------------------------------------------------------------
@dataclass
class FeatureMaps:
    """Vision-token Q/K/V feature maps of one generation at one denoising step."""

    prompt: str
    step: int
    num_inference_steps: int
    reduce: str
    grid: TokenGrid
    maps: dict[str, torch.Tensor]  # role -> (h, w), averaged over frames
    per_frame: dict[str, torch.Tensor]  # role -> (f, h, w)
    layers: dict[str, list[str]]  # role -> the projection modules averaged
    frames: np.ndarray  # decoded video (F, H, W, 3) in [0, 1]
    frame_index: list[int]  # token frame -> its first video frame
    label: str = "base"


class _FeatureRecorder:
    def __init__(self, probe: _Probe, reduce: Reduction) -> None:
        self.probe = probe
        self.reduce = reduce
        self.maps: dict[str, list[torch.Tensor]] = {role: [] for role in FEATURE_ROLES}
        self.layers: dict[str, list[str]] = {role: [] for role in FEATURE_ROLES}

    def hook(self, role: str, name: str) -> Callable[..., None]:
        def record(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            probe = self.probe
            if not probe.active or probe.grid is None:
                return
            vision = output[probe.cond_rows, : probe.grid.size].float()  # (rows, Nv, C)
            per_token = vision.mean(-1) if self.reduce == "mean" else vision.norm(dim=-1)
            self.maps[role].append(per_token.mean(0).cpu())
            self.layers[role].append(name)

        return record


def feature_maps(
    backbone: Backbone,
    prompt: str,
    step: int = 60,
    num_inference_steps: int = 64,
    reduce: Reduction = "mean",
    streams: Sequence[str] = VISION_STREAMS,
    **render_kwargs: Any,
) -> FeatureMaps:
    """Generate ``prompt`` and map the vision tokens' Q, K and V features at denoising ``step``.

    ``render_kwargs`` go to :func:`dreamrelation.generate.render` (num_frames, height, width,
    guidance_scale, seed, show_progress).
    """
    _check_step(step, num_inference_steps)
    if reduce not in REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduce!r}; use one of {', '.join(REDUCTIONS)}")
    probe = _Probe(backbone, _prompt_embeds(backbone, prompt), step)
    recorder = _FeatureRecorder(probe, reduce)
    modules = dict(backbone.transformer.named_modules())
    targets = {role: vision_projections(backbone, role, streams) for role in FEATURE_ROLES}
    for role, names in targets.items():
        if not names:
            raise RuntimeError(f"{backbone.name}: no vision-token {role} projections found")
    handles = [
        modules[name].register_forward_hook(recorder.hook(role, name))
        for role, names in targets.items()
        for name in names
    ]
    try:
        with probe.attached():
            frames = render(backbone, prompt, num_inference_steps=num_inference_steps, **render_kwargs)
    finally:
        for handle in handles:
            handle.remove()
    probe.check_captured("feature maps")
    grid = probe.grid
    assert grid is not None
    per_frame = {role: grid.reshape(torch.stack(maps).mean(0)) for role, maps in recorder.maps.items()}
    return FeatureMaps(
        prompt=prompt,
        step=step,
        num_inference_steps=num_inference_steps,
        reduce=reduce,
        grid=grid,
        maps={role: m.mean(0) for role, m in per_frame.items()},
        per_frame=per_frame,
        layers=recorder.layers,
        frames=frames,
        frame_index=first_video_frames(backbone, frames.shape[0], grid),
    )


# ----- attention maps ------------------------------------------------------------------------------
@dataclass
class AttentionMaps:
    """Attention between one word and the video tokens of one generation at one denoising step."""

    prompt: str
    word: str
    tokens: list[str]  # the word's text tokens
    positions: list[int]  # their indices in the text sequence
    step: int
    num_inference_steps: int
    direction: Direction  # text_to_video (joint attention) or video_to_text (cross-attention)
    grid: TokenGrid
    maps: torch.Tensor  # (f, h, w), averaged over heads, layers and the word's tokens
    per_layer: torch.Tensor  # (layers, f, h, w), averaged over heads and the word's tokens
    layers: list[str]
    frames: np.ndarray  # decoded video (F, H, W, 3) in [0, 1]
    frame_index: list[int]  # token frame -> its first video frame
    #: largest |captured softmax rows @ V - the attention op's own output| over the captured rows
    max_output_error: float
    #: smallest and largest sum of a captured softmax row over ALL keys (1 up to rounding)
    row_sum_range: tuple[float, float]
    rows: list[torch.Tensor] | None = None  # with keep_rows: per layer, (heads, rows, keys)
    label: str = "base"

    def upsampled(self, height: int | None = None, width: int | None = None) -> torch.Tensor:
        """The maps at frame resolution (default: the decoded video's): (f, H, W)."""
        height = height or self.frames.shape[1]
        width = width or self.frames.shape[2]
        return upsample_maps(self.maps, height, width)

    def video_frame_maps(self) -> torch.Tensor:
        """One map per video frame (F, H, W): each frame takes its token frame's map."""
        upsampled = self.upsampled()
        owner = (
            np.searchsorted(np.asarray(self.frame_index), np.arange(self.frames.shape[0]), side="right") - 1
        )
        return upsampled[torch.as_tensor(owner).clamp_min(0)]


_ATTENTION_ARGS = ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


class _AttentionRecorder:
    """Wraps the attention functions while text-conditioned attention modules run.

    ``F.scaled_dot_product_attention`` takes (B, H, L, D); diffusers' ``dispatch_attention_fn``
    (B, L, H, D); both share the argument list (q, k, v, attn_mask, dropout_p, is_causal, scale, ...).
    The outermost wrapped call is captured; nested ones (dispatch -> sdpa) pass through.
    """

    def __init__(self, probe: _Probe, word: WordTokens, keep_rows: bool) -> None:
        self.probe = probe
        self.positions = torch.tensor(word.positions)
        self.text_mask = word.text_mask
        # Where each text position lands when only the valid tokens are kept (Mochi drops padding).
        self.compact_index = torch.cumsum(word.text_mask.long(), 0) - 1
        self.keep_rows = keep_rows
        self.module: str | None = None
        self.calls_in_module = 0
        self.inside = False
        self.direction: Direction | None = None
        self.maps: list[torch.Tensor] = []
        self.layers: list[str] = []
        self.rows: list[torch.Tensor] = []
        self.max_output_error = 0.0
        self.row_sums: list[float] = []

    # -- hooks around the attention modules -----------------------------------------------------
    def before(self, name: str) -> Callable[..., None]:
        def enter(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            text = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
            self.module = name if (self.probe.active and text is not None) else None
            self.calls_in_module = 0

        return enter

    def after(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        self.module = None

    # -- the wrapped attention functions --------------------------------------------------------
    def wrap(self, original: Callable[..., torch.Tensor], heads_first: bool) -> Callable[..., torch.Tensor]:
        def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any):
            if self.module is None or self.inside:
                return original(query, key, value, *args, **kwargs)
            self.inside = True
            try:
                result = original(query, key, value, *args, **kwargs)
            finally:
                self.inside = False
            options = dict(zip(_ATTENTION_ARGS, args, strict=False))
            options.update({k: v for k, v in kwargs.items() if k in _ATTENTION_ARGS})
            with torch.no_grad():
                if heads_first:
                    self._capture(query, key, value, result, options)
                else:
                    q, k, v, out = (t.transpose(1, 2) for t in (query, key, value, result))
                    self._capture(q, k, v, out, options)
            return result

        return attention

    def _rows_of_call(self, batch: int) -> list[int]:
        """Batch rows of this attention call that belong to the conditional prompt."""
        probe = self.probe
        if batch == probe.batch:
            return probe.cond_rows
        if batch == 1:  # one call per batch element (Mochi's per-sample joint attention)
            element = self.calls_in_module
            self.calls_in_module += 1
            return [0] if element in probe.cond_rows else []
        raise RuntimeError(
            f"attention call with batch {batch} inside a transformer call with batch {probe.batch}"
        )

    def _text_keys(self, num_text: int) -> torch.Tensor:
        if num_text == len(self.text_mask):
            return self.positions
        if num_text == int(self.text_mask.sum()):
            return self.compact_index[self.positions]
        raise RuntimeError(
            f"attention over {num_text} text tokens, but the prompt has {len(self.text_mask)} "
            f"({int(self.text_mask.sum())} valid)"
        )

    def _capture(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, options: dict[str, Any]
    ) -> None:
        assert self.probe.grid is not None and self.module is not None
        num_vision = self.probe.grid.size
        batch, heads, num_queries, dim = q.shape
        num_keys = k.shape[2]
        if options.get("is_causal"):
            raise RuntimeError("causal attention between text and video tokens is not supported")
        rows = self._rows_of_call(batch)
        if not rows:
            return
        if k.shape[1] != heads:  # grouped-query attention
            k = k.repeat_interleave(heads // k.shape[1], dim=1)
            v = v.repeat_interleave(heads // v.shape[1], dim=1)
        scale = options.get("scale") or 1.0 / math.sqrt(dim)
        mask = options.get("attn_mask")
        if mask is not None:
            mask = torch.broadcast_to(mask, (batch, heads, num_queries, num_keys))
        joint = num_queries > num_vision
        if joint:
            query_index = num_vision + self._text_keys(num_queries - num_vision).to(q.device)
            self.direction = "text_to_video"
        else:
            word_keys = self._text_keys(num_keys).to(q.device)
            self.direction = "video_to_text"
        for b in rows:
            if joint:
                probs = self._softmax(
                    q[b][:, query_index], k[b], None if mask is None else mask[b][:, query_index], scale
                )
                self._check(probs, v[b], out[b][:, query_index])
                vision_map = probs[..., :num_vision].mean(dim=(0, 1))
                kept = probs
            else:
                vision_map = torch.zeros(num_vision, device=q.device)
                kept_heads = []
                for h in range(heads):  # one head at a time: (Nv, L_text) each
                    probs = self._softmax(q[b, h], k[b, h], None if mask is None else mask[b, h], scale)
                    self._check(probs, v[b, h], out[b, h])
                    vision_map += probs[:, word_keys].mean(-1) / heads
                    if self.keep_rows:
                        kept_heads.append(probs.cpu())
                kept = torch.stack(kept_heads) if self.keep_rows else None
            self.maps.append(vision_map.cpu())
            self.layers.append(self.module)
            if self.keep_rows and kept is not None:
                self.rows.append(kept.cpu())

    @staticmethod
    def _softmax(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
        logits = (q.float() @ k.float().transpose(-1, -2)) * scale
        if mask is not None:
            logits = (
                logits.masked_fill(~mask, float("-inf"))
                if mask.dtype == torch.bool
                else logits + mask.float()
            )
        return logits.softmax(-1)

    def _check(self, probs: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
        error = (probs @ v.float() - out.float()).abs().max().item()
        self.max_output_error = max(self.max_output_error, error)
        sums = probs.sum(-1)
        self.row_sums += [sums.min().item(), sums.max().item()]


@contextmanager
def _patched(target: Any, name: str, replacement: Any) -> Iterator[None]:
    original = getattr(target, name)
    setattr(target, name, replacement)
    try:
        yield
    finally:
        setattr(target, name, original)


@contextmanager
def capture_attention(
    backbone: Backbone, word: WordTokens, step: int, keep_rows: bool = False
) -> Iterator[tuple[_Probe, _AttentionRecorder]]:
    """While active, every conditional transformer call at ``step`` records word <-> video attention."""
    probe = _Probe(backbone, word.prompt_embeds, step)
    recorder = _AttentionRecorder(probe, word, keep_rows)
    modules = dict(backbone.transformer.named_modules())
    names = attention_modules(backbone)
    if not names:
        raise RuntimeError(f"{backbone.name}: no attention modules found")
    with ExitStack() as stack:
        stack.enter_context(probe.attached())
        for name in names:
            module = modules[name]
            handles = [
                module.register_forward_pre_hook(recorder.before(name), with_kwargs=True),
                module.register_forward_hook(recorder.after, with_kwargs=True),
            ]
            stack.callback(lambda hs=handles: [h.remove() for h in hs])
        # Processors call F.scaled_dot_product_attention (Mochi) or their module's dispatch_attention_fn.
        sdpa = F.scaled_dot_product_attention
        stack.enter_context(
            _patched(F, "scaled_dot_product_attention", recorder.wrap(sdpa, heads_first=True))
        )
        processor_modules = {type(modules[name].processor).__module__ for name in names}
        for module_name in sorted(processor_modules):
            namespace = sys.modules.get(module_name)
            dispatch = getattr(namespace, "dispatch_attention_fn", None)
            if dispatch is not None:
                stack.enter_context(
                    _patched(namespace, "dispatch_attention_fn", recorder.wrap(dispatch, heads_first=False))
                )
        yield probe, recorder


def attention_maps(
    backbone: Backbone,
    prompt: str,
    word: str,
    step: int = 60,
    num_inference_steps: int = 64,
    keep_rows: bool = False,
    **render_kwargs: Any,
) -> AttentionMaps:
    """Generate ``prompt`` and map the attention between ``word`` and the video tokens at ``step``.

    Joint attention (Mochi, HunyuanVideo): softmax rows of the word's text-token queries over all
    keys, restricted to the video keys. Cross-attention (Wan, attn2): each video query's softmax
    weight on the word's text keys. Both averaged over heads, layers and the word's tokens.
    ``keep_rows`` also keeps every captured softmax row (for checks; large on real models).
    """
    _check_step(step, num_inference_steps)
    located = locate_word(backbone, prompt, word)
    with capture_attention(backbone, located, step, keep_rows) as (probe, recorder):
        frames = render(backbone, prompt, num_inference_steps=num_inference_steps, **render_kwargs)
    probe.check_captured("attention maps")
    if not recorder.maps:
        raise RuntimeError(f"{backbone.name}: no attention between text and video tokens was captured")
    grid = probe.grid
    assert grid is not None and recorder.direction is not None
    per_layer = grid.reshape(torch.stack(recorder.maps))
    return AttentionMaps(
        prompt=prompt,
        word=located.word,
        tokens=located.tokens,
        positions=located.positions,
        step=step,
        num_inference_steps=num_inference_steps,
        direction=recorder.direction,
        grid=grid,
        maps=per_layer.mean(0),
        per_layer=per_layer,
        layers=recorder.layers,
        frames=frames,
        frame_index=first_video_frames(backbone, frames.shape[0], grid),
        max_output_error=recorder.max_output_error,
        row_sum_range=(min(recorder.row_sums), max(recorder.row_sums)),
        rows=recorder.rows if keep_rows else None,
    )


# ----- base model vs relation LoRA -----------------------------------------------------------------
@contextmanager
def relation_lora(backbone: Backbone, lora: Path, scale: float = 1.0) -> Iterator[Backbone]:
    """The backbone with a relation LoRA loaded (through diffusers), removed again on exit."""
    load_inference_lora(backbone, lora, scale)
    try:
        yield backbone
    finally:
        backbone.pipeline.delete_adapters(ADAPTER_NAME)


def compare_feature_maps(
    backbone: Backbone, lora: Path, prompt: str, lora_scale: float = 1.0, **kwargs: Any
) -> tuple[FeatureMaps, FeatureMaps]:
    """Feature maps of the base model and of the same model with the relation LoRA (same seed)."""
    base = feature_maps(backbone, prompt, **kwargs)
    with relation_lora(backbone, lora, lora_scale):
        tuned = feature_maps(backbone, prompt, **kwargs)
    tuned.label = "relation LoRA"
    return base, tuned


def compare_attention(
    backbone: Backbone, lora: Path, prompt: str, word: str, lora_scale: float = 1.0, **kwargs: Any
) -> tuple[AttentionMaps, AttentionMaps]:
    """Attention maps of the base model and of the same model with the relation LoRA (same seed)."""
    base = attention_maps(backbone, prompt, word, **kwargs)
    with relation_lora(backbone, lora, lora_scale):
        tuned = attention_maps(backbone, prompt, word, **kwargs)
    tuned.label = "relation LoRA"
    return base, tuned


# ----- figures -------------------------------------------------------------------------------------
def _normalised(values: torch.Tensor | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _figure(rows: int, cols: int, cell: float = 2.2) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure  # Figure + its Agg canvas: no pyplot, no global state

    fig = Figure(figsize=(cell * cols + 0.6, cell * rows + 0.7), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _row_label(label: str) -> str:
    """What a figure row shows, in words: the base model, or the base model with the relation LoRA."""
    return {"base": "base model", "relation LoRA": "base + relation LoRA"}.get(label, label)


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def save_feature_figure(
    maps: FeatureMaps,
    frames: np.ndarray | None,
    path: Path,
    lora: FeatureMaps | None = None,
) -> Path:
    """A PNG per model row: a decoded frame, then the Q, K and V maps (frames default to maps.frames)."""
    results = [(maps, maps.frames if frames is None else frames)] + ([(lora, lora.frames)] if lora else [])
    fig, axes = _figure(len(results), 1 + len(FEATURE_ROLES))
    for row, (result, video) in enumerate(results):
        middle = result.grid.frames // 2
        shown = result.frame_index[middle]
        axes[row, 0].imshow(np.clip(video[shown], 0, 1))
        axes[row, 0].set_title(f"frame {shown}", fontsize=8)
        axes[row, 0].set_ylabel(_row_label(result.label), fontsize=9)
        for col, role in enumerate(FEATURE_ROLES, start=1):
            image = axes[row, col].imshow(result.maps[role].numpy(), cmap="viridis")
            axes[row, col].set_title(f"{role.upper()} ({result.reduce})", fontsize=8)
            bar = fig.colorbar(image, ax=axes[row, col], fraction=0.046, pad=0.03)
            bar.ax.tick_params(labelsize=7)
    fig.suptitle(
        f"Vision-token features, sampling step {maps.step} of {maps.num_inference_steps}\n{maps.prompt}",
        fontsize=9,
    )
    return _save(fig, path)


def save_attention_figure(
    maps: AttentionMaps,
    frames: np.ndarray | None,
    path: Path,
    lora: AttentionMaps | None = None,
    max_columns: int = 8,
) -> Path:
    """A PNG with, per model, a row of decoded frames and a row of the word's map overlaid on them.

    Each column is one token frame, shown on the first video frame of its latent frame; each model's
    maps are scaled to [0, 1] over all its frames so that changes over time stay visible.
    """
    results = [(maps, maps.frames if frames is None else frames)] + ([(lora, lora.frames)] if lora else [])
    count = maps.grid.frames
    columns = sorted(set(np.linspace(0, count - 1, min(count, max_columns)).round().astype(int).tolist()))
    fig, axes = _figure(2 * len(results), len(columns))
    for r, (result, video) in enumerate(results):
        heat = _normalised(result.upsampled(video.shape[1], video.shape[2]))
        for c, t in enumerate(columns):
            shown = result.frame_index[t]
            image = np.clip(video[shown], 0, 1)
            axes[2 * r, c].imshow(image)
            axes[2 * r, c].set_title(f"frame {shown}", fontsize=8)
            axes[2 * r + 1, c].imshow(image)
            axes[2 * r + 1, c].imshow(heat[t], cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        axes[2 * r, 0].set_ylabel(_row_label(result.label), fontsize=9)
        axes[2 * r + 1, 0].set_ylabel(f"attention of\n'{result.word}'", fontsize=9)
    arrow = (
        "from the word to the video" if maps.direction == "text_to_video" else "from the video to the word"
    )
    fig.suptitle(
        f"Attention of '{maps.word}' ({arrow}), sampling step {maps.step} of {maps.num_inference_steps}"
        f"\n{maps.prompt}",
        fontsize=9,
    )
    return _save(fig, path)


def save_feature_arrays(path: Path, maps: FeatureMaps, lora: FeatureMaps | None = None) -> Path:
    """The maps as ``.npz``: ``{label}_{role}`` (h, w) and ``{label}_{role}_per_frame`` (f, h, w)."""
    arrays: dict[str, np.ndarray] = {}
    for prefix, result in [("base", maps)] + ([("lora", lora)] if lora else []):
        for role in FEATURE_ROLES:
            arrays[f"{prefix}_{role}"] = result.maps[role].numpy()
            arrays[f"{prefix}_{role}_per_frame"] = result.per_frame[role].numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def save_attention_arrays(path: Path, maps: AttentionMaps, lora: AttentionMaps | None = None) -> Path:
    """The maps as ``.npz``: ``{label}`` (f, h, w) and ``{label}_per_layer`` (layers, f, h, w)."""
    arrays: dict[str, np.ndarray] = {}
    for prefix, result in [("base", maps)] + ([("lora", lora)] if lora else []):
        arrays[prefix] = result.maps.numpy()
        arrays[f"{prefix}_per_layer"] = result.per_layer.numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


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
