"""Feature maps (paper Fig. 5(a)): vision-token Q, K, V projection outputs at one denoising step, reduced
over channels and averaged over layers and frames."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dreamrelation.analysis.maps.probe import (
    FEATURE_ROLES,
    REDUCTIONS,
    VISION_STREAMS,
    Probe,
    Reduction,
    TokenGrid,
    check_step,
    check_text_to_video,
    first_video_frames,
    prompt_embeds,
    vision_projections,
)
from dreamrelation.backbones import Backbone
from dreamrelation.errors import ConfigError
from dreamrelation.generation.render import render


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
    def __init__(self, probe: Probe, reduce: Reduction) -> None:
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

    ``render_kwargs`` go to :func:`dreamrelation.generation.render.render` (num_frames, height, width,
    guidance_scale, seed, show_progress).
    """
    check_step(step, num_inference_steps)
    check_text_to_video(backbone)
    if reduce not in REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduce!r}; use one of {', '.join(REDUCTIONS)}")
    probe = Probe(backbone, prompt_embeds(backbone, prompt), step)
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
