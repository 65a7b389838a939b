"""Attention maps: how a prompt word and the video tokens attend to each other at one denoising step,
recomputed on the side from the model's own query/key tensors."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dreamrelation.analysis.maps.probe import (
    Direction,
    Probe,
    TokenGrid,
    WordTokens,
    attention_modules,
    check_step,
    check_text_to_video,
    first_video_frames,
    locate_word,
    upsample_maps,
)
from dreamrelation.backbones import Backbone
from dreamrelation.generation.render import render


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

    def __init__(self, probe: Probe, word: WordTokens, keep_rows: bool) -> None:
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
) -> Iterator[tuple[Probe, _AttentionRecorder]]:
    """While active, every conditional transformer call at ``step`` records word <-> video attention."""
    probe = Probe(backbone, word.prompt_embeds, step)
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
    check_step(step, num_inference_steps)
    check_text_to_video(backbone)
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
