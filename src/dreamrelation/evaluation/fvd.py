"""FVD: the Fréchet distance between features of generated and reference videos.

Two feature extractors, chosen by ``--fvd``:

- ``i3d`` (the standard protocol of Unterthiner et al., 2019): the Inception-v1 I3D network trained
  on Kinetics-400, fed clips of ``num_frames`` RGB frames resized to 224x224 and scaled to [-1, 1];
  the features are its 400 logits (``feature="logits"``; ``"pool"``: the 1024-d pooled features).
  The network is written here (``InceptionI3d``) with the parameter names of the widely used
  PyTorch conversion of DeepMind's checkpoint (``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.
  running_mean``, ``logits.conv3d.bias``, ...), so such a state dict loads as it is. Weights come
  from a local file only: ``.safetensors``, or a ``.pt``/``.pth`` plain state dict read with
  ``torch.load(weights_only=True)`` (no arbitrary pickle is ever executed).
- ``videomae``: a transformers VideoMAE (hub id or folder; default ``MCG-NJU/videomae-base``,
  self-supervised, so less biased towards Kinetics' action classes), mean-pooled last hidden state.
  Works wherever the hub or a local copy is reachable; its numbers are *not* on the I3D scale.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dreamrelation.errors import ConfigError, InputError
from dreamrelation.evaluation.metrics import evenly_spaced_indices

DEFAULT_VIDEOMAE_MODEL = "MCG-NJU/videomae-base"
I3D_SIZE = 224


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding for one dimension: output ceil(size / stride), extra at the end."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride, strict=True))):
        pads += _same_padding(size, k, s)
    return F.pad(x, pads)  # zeros: every padded input is post-ReLU, so max pooling ignores them


def _triple(value: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (value,) * 3 if isinstance(value, int) else tuple(value)


class Unit3D(nn.Module):
    """Conv3d with SAME padding, then batch norm and ReLU (the logits layer: bias, no BN, no ReLU)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | tuple[int, int, int] = 1,
        stride: int | tuple[int, int, int] = 1,
        batch_norm: bool = True,
        activation: bool = True,
    ) -> None:
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=not batch_norm)
        # TensorFlow's batch-norm epsilon; momentum is irrelevant (inference only)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPoolSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four branches concatenated: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max pool -> 1x1."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(in_channels, w0)
        self.b1a = Unit3D(in_channels, w1a)
        self.b1b = Unit3D(w1a, w1b, kernel=3)
        self.b2a = Unit3D(in_channels, w2a)
        self.b2b = Unit3D(w2a, w2b, kernel=3)
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, w3)
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# (name, input channels, branch widths) of the Inception blocks, in order (Carreira & Zisserman 2017)
_BLOCKS = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)


class InceptionI3d(nn.Module):
    """Inflated Inception-v1 for RGB clips (N, 3, T, H, W) in [-1, 1]; returns (logits, pooled)."""

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, kernel=7, stride=2)
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=3)
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        for name, in_channels, widths in _BLOCKS:
            setattr(self, name, InceptionBlock(in_channels, widths))
            if name == "Mixed_3c":
                self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_4f":
                self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
        self.logits = Unit3D(1024, num_classes, batch_norm=False, activation=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for name, module in self.named_children():
            if name == "logits":
                break
            x = module(x)
        # Average over 2x7x7 windows (stride 1) as the original; smaller clips shrink the window.
        window = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
        x = F.avg_pool3d(x, window, stride=1)
        pooled = x.mean(dim=(2, 3, 4))
        logits = self.logits(x).mean(dim=(2, 3, 4))
        return logits, pooled


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors``, or from a ``.pt``/``.pth`` read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            path, "I3D weights not found", "give a local .safetensors or .pt state dict (--i3d-weights)"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for refused pickles
        raise InputError(
            path,
            f"is not a plain tensor state dict readable with weights_only=True ({type(exc).__name__})",
            "convert it to .safetensors (a dict of tensors) on a trusted machine",
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, "does not hold a dict of tensors", "save model.state_dict() as .safetensors")
    return state


class I3DFeatures:
    """The standard FVD features of one video: ``num_frames`` frames (evenly spaced, or the first
    ones), resized to 224x224 bilinear, scaled to [-1, 1], through I3D."""

    def __init__(
        self,
        weights: str | Path,
        *,
        num_frames: int = 16,
        feature: str = "logits",
        sampling: str = "even",
        size: int = I3D_SIZE,
        device: str | None = None,
    ) -> None:
        from dreamrelation.devices import resolve_device

        if feature not in ("logits", "pool") or sampling not in ("even", "first"):
            raise ConfigError(
                f"I3D feature must be logits|pool and sampling even|first, got {feature}, {sampling}"
            )
        state = {k.removeprefix("module."): v for k, v in read_state_dict(weights).items()}
        num_classes = state["logits.conv3d.weight"].shape[0] if "logits.conv3d.weight" in state else 400
        self.model = InceptionI3d(num_classes)
        result = self.model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise InputError(
                Path(weights),
                f"does not match the I3D layout (missing {missing[:3]}, "
                f"unexpected {result.unexpected_keys[:3]})",
                "use an Inception-v1 I3D RGB state dict with keys like Conv3d_1a_7x7.conv3d.weight",
            )
        self.device = resolve_device(device or "auto")
        self.model.to(self.device).eval()
        self.num_frames, self.feature, self.sampling, self.size = num_frames, feature, sampling, size
        self.name = f"i3d-{feature}"

    def clip_tensor(self, frames: np.ndarray) -> torch.Tensor:
        """(F, H, W, 3) uint8 -> (1, 3, T, size, size) float in [-1, 1]."""
        if len(frames) < self.num_frames:
            raise ValueError(f"needs at least {self.num_frames} frames, the video has {len(frames)}")
        if self.sampling == "even":
            indices = evenly_spaced_indices(len(frames), self.num_frames)
        else:
            indices = list(range(self.num_frames))
        clip = torch.from_numpy(np.ascontiguousarray(frames[indices])).permute(0, 3, 1, 2).float()
        clip = F.interpolate(clip, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (clip / 127.5 - 1.0).permute(1, 0, 2, 3).unsqueeze(0)

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        logits, pooled = self.model(self.clip_tensor(frames).to(self.device))
        return (logits if self.feature == "logits" else pooled)[0].float().cpu().numpy()


class VideoMAEFeatures:
    """Mean-pooled last hidden state of a transformers VideoMAE on ``config.num_frames`` evenly
    spaced frames, prepared by its own image processor."""

    def __init__(self, model: str = DEFAULT_VIDEOMAE_MODEL, device: str | None = None) -> None:
        from transformers import VideoMAEImageProcessor, VideoMAEModel

        from dreamrelation.devices import resolve_device
        from dreamrelation.pretrained import load_pretrained, require_all_weights

        self.processor = load_pretrained(
            "VideoMAE processor", model, VideoMAEImageProcessor.from_pretrained, DEFAULT_VIDEOMAE_MODEL
        )
        self.model, info = load_pretrained(
            "VideoMAE model",
            model,
            lambda s: VideoMAEModel.from_pretrained(s, output_loading_info=True),
            DEFAULT_VIDEOMAE_MODEL,
        )
        require_all_weights("VideoMAE model", model, info, DEFAULT_VIDEOMAE_MODEL)
        self.device = resolve_device(device or "auto")
        self.model.to(self.device).eval()
        self.num_frames = self.model.config.num_frames
        self.name = f"videomae:{model}"

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if len(frames) < self.num_frames:
            raise ValueError(f"needs at least {self.num_frames} frames, the video has {len(frames)}")
        clip = [frames[i] for i in evenly_spaced_indices(len(frames), self.num_frames)]
        inputs = self.processor(clip, return_tensors="pt").to(self.device)
        hidden = self.model(**inputs).last_hidden_state
        return hidden.mean(dim=1)[0].float().cpu().numpy()
