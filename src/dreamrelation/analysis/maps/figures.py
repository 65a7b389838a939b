"""Figures and arrays of the maps (PNG, NPZ)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamrelation.analysis.maps.attention import AttentionMaps
from dreamrelation.analysis.maps.features import FeatureMaps
from dreamrelation.analysis.maps.probe import FEATURE_ROLES


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
