"""MotionInversion adapted to MM-DiT: learned motion embeddings on the vision attention inputs.

MotionInversion (for U-Net video models) adds two zero-initialised embeddings to its temporal
attention layers: a query/key embedding of shape (frames, channels), shared over space, added to
the input of the Q and K projections, and a value embedding of shape (frames, space, channels)
added to the input of the V projection. An MM-DiT has no temporal attention; its full attention
sees every frame, so the adaptation adds both embeddings to the *vision tokens* entering every
attention block (Mochi/Wan/toy: each block's vision projections; HunyuanVideo: the dual-stream
blocks' vision projections and the vision part of the single-stream blocks' joint projections).

They enter through forward pre-hooks on the projection modules (one mechanism for every backbone,
found through :meth:`Backbone.projection_modules`), so at step 0 the model is exactly the base
model. Training uses the diffusion loss on frame differences of the prediction and the target
(MotionInversion's debiasing: what stays the same across frames, i.e. appearance, carries no
loss). ``motion_inversion_rcl`` adds DreamRelation's relational contrastive loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open

from dreamrelation.backbones import Backbone
from dreamrelation.errors import InputError
from dreamrelation.files import atomic_save
from dreamrelation.training.methods.base import TrainingMethod

if TYPE_CHECKING:
    from dreamrelation.cache import CachedDataset
    from dreamrelation.config import TrainConfig

EMBEDDINGS_FILE = "motion_embeddings.safetensors"
GRID_KEY = "dreamrelation.token_grid"
STRIDE_KEY = "dreamrelation.value_stride"
#: token streams whose projections carry the embeddings: vision-only ones, and joint ones whose
#: input starts with the vision tokens (HunyuanVideo's single-stream blocks)
VISION_STREAMS = ("vision", "joint")


def frame_difference(x: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, C, F-1, H, W): x[:, :, i+1] − x[:, :, i]."""
    if x.ndim != 5 or x.shape[2] < 2:
        raise ValueError(f"frame differences need (B, C, F >= 2, H, W); got {tuple(x.shape)}")
    return x[:, :, 1:] - x[:, :, :-1]


def attention_blocks(backbone: Backbone) -> dict[str, dict[str, Any]]:
    """Attention block -> its q/k/v projection module names, width and whether it is joint."""
    blocks: dict[str, dict[str, Any]] = {}
    for stream in (s for s in VISION_STREAMS if s in backbone.streams):
        for role in ("q", "k", "v"):
            for name in backbone.projection_modules(role, [stream]):
                block = blocks.setdefault(name.rsplit(".", 1)[0], {"joint": stream == "joint"})
                block[role] = name
    modules = dict(backbone.transformer.named_modules())
    for block in blocks.values():
        linear = modules[block["q"]]
        block["dim"] = getattr(linear, "base_layer", linear).in_features
    return dict(sorted(blocks.items()))


class MotionEmbeddings(torch.nn.Module):
    """Per attention block: a Q/K embedding (F, D) and a value embedding (F, h', w', D), zero at start.

    The value embedding's grid is the token grid divided by ``value_stride`` (rounded up); each
    coarse cell covers ``stride x stride`` tokens.
    """

    def __init__(
        self, blocks: dict[str, dict[str, Any]], grid: tuple[int, int, int], value_stride: int = 1
    ) -> None:
        super().__init__()
        self.blocks = blocks
        self.grid = tuple(int(n) for n in grid)
        self.value_stride = int(value_stride)
        f, h, w = self.grid
        s = self.value_stride
        self.qk = torch.nn.ParameterList(
            torch.nn.Parameter(torch.zeros(f, b["dim"])) for b in blocks.values()
        )
        self.value = torch.nn.ParameterList(
            torch.nn.Parameter(torch.zeros(f, -(-h // s), -(-w // s), b["dim"])) for b in blocks.values()
        )
        self.scale = 1.0
        #: the file these embeddings were loaded from (names it in a geometry error)
        self.source: Path | None = None
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def num_tokens(self) -> int:
        f, h, w = self.grid
        return f * h * w

    def token_embeddings(self, index: int, kind: str) -> torch.Tensor:
        """(tokens, D) embedding of block ``index`` for ``kind`` "qk" or "v", in token order."""
        f, h, w = self.grid
        if kind == "qk":
            emb = self.qk[index][:, None, :].expand(f, h * w, -1)
        else:
            s = self.value_stride
            emb = self.value[index].repeat_interleave(s, 1).repeat_interleave(s, 2)[:, :h, :w]
        return emb.reshape(f * h * w, -1) * self.scale

    def install(self, transformer: torch.nn.Module) -> None:
        modules = dict(transformer.named_modules())
        for index, block in enumerate(self.blocks.values()):
            for role in ("q", "k", "v"):
                kind = "v" if role == "v" else "qk"
                hook = self._make_hook(index, kind, block["joint"])
                self._hooks.append(modules[block[role]].register_forward_pre_hook(hook))

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _make_hook(self, index: int, kind: str, joint: bool):  # noqa: ANN202 - a torch hook
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            x = args[0]
            n = self.num_tokens
            emb = self.token_embeddings(index, kind).to(x.dtype)
            if x.shape[-2] == n:
                x = x + emb
            elif joint and x.shape[-2] > n:  # vision tokens first, then text
                x = torch.cat([x[..., :n, :] + emb, x[..., n:, :]], dim=-2)
            else:
                f, h, w = self.grid
                problem = (
                    f"motion embeddings learned for {f}x{h}x{w} = {n} vision tokens, "
                    f"this video has {x.shape[-2]}"
                )
                fix = "generate with the num_frames/height/width of the training cache"
                if self.source is not None:
                    raise InputError(self.source, problem, fix)
                raise ValueError(f"{problem}; {fix}")
            return (x, *args[1:])

        return hook


class MotionInversionMethod(TrainingMethod):
    """Train only the motion embeddings, with the frame-difference-debiased diffusion loss."""

    name = "motion_inversion"
    file_name = EMBEDDINGS_FILE

    def __init__(self, config: TrainConfig, backbone: Backbone, dataset: CachedDataset) -> None:
        super().__init__(config, backbone, dataset)
        backbone.transformer.requires_grad_(False)
        grid = backbone.token_grid(dataset.items[0].latents.shape)
        self.embeddings = MotionEmbeddings(
            attention_blocks(backbone), grid, config.motion_inversion.value_stride
        ).to(next(backbone.transformer.parameters()).device)
        self.embeddings.install(backbone.transformer)

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.embeddings.parameters())

    def step_label(self, selected: str | None) -> str:
        return "motion"

    def loss_inputs(
        self, prediction: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.motion_inversion.debias == "none":
            return prediction, target
        return frame_difference(prediction), frame_difference(target)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {}
        for index, block in enumerate(self.embeddings.blocks):
            state[f"{block}.qk"] = self.embeddings.qk[index].detach().to("cpu", copy=True)
            state[f"{block}.value"] = self.embeddings.value[index].detach().to("cpu", copy=True)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        _load_embeddings(self.embeddings, state)

    def save(self, output: Path, config_json: str) -> tuple[Path, Path | None]:
        path = Path(output) / EMBEDDINGS_FILE
        meta = {
            **self.metadata(config_json),
            GRID_KEY: ",".join(map(str, self.embeddings.grid)),
            STRIDE_KEY: str(self.embeddings.value_stride),
        }
        atomic_save(self.state_dict(), path, meta)
        return path, None

    @staticmethod
    def apply_file(backbone: Backbone, path: Path, meta: dict[str, Any], scale: float = 1.0) -> None:
        """Install the saved embeddings on ``backbone`` (scaled by ``scale``) for generation."""
        try:
            grid = tuple(int(n) for n in str(meta[GRID_KEY]).split(","))
            stride = int(meta[STRIDE_KEY])
        except (KeyError, ValueError):
            raise InputError(path, "no token grid in the metadata", "use the file training wrote") from None
        embeddings = MotionEmbeddings(attention_blocks(backbone), grid, stride)
        with safe_open(str(path), "pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
        try:
            _load_embeddings(embeddings, state)
        except (KeyError, RuntimeError) as exc:
            raise InputError(
                path,
                f"does not fit this model's attention blocks ({exc})",
                "use the backbone it was trained on",
            ) from None
        embeddings.requires_grad_(False)
        embeddings.scale = scale
        embeddings.source = Path(path)
        embeddings.to(next(backbone.transformer.parameters()).device)
        embeddings.install(backbone.transformer)
        backbone.pipeline._dreamrelation_motion_embeddings = embeddings


def _load_embeddings(embeddings: MotionEmbeddings, state: dict[str, torch.Tensor]) -> None:
    expected = {f"{b}.{k}" for b in embeddings.blocks for k in ("qk", "value")}
    if set(state) != expected:
        raise KeyError(
            f"expected {len(expected)} tensors, got {len(state)} ({sorted(set(state) ^ expected)[:3]})"
        )
    with torch.no_grad():
        for index, block in enumerate(embeddings.blocks):
            embeddings.qk[index].copy_(state[f"{block}.qk"])
            embeddings.value[index].copy_(state[f"{block}.value"])


class MotionInversionRclMethod(MotionInversionMethod):
    """MotionInversion + DreamRelation's relational contrastive loss (the trainer's RCL, λ 0.01)."""

    name = "motion_inversion_rcl"
