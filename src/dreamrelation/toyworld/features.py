"""A tiny 3D-conv video network whose features define the toy world's FVD.

It is trained once, on ground-truth renders only, to tell the 8 relations and 4 generic motions
apart; its pooled embedding then plays the role of I3D's features in FVD. The shipped weights
(``weights/feature_net.safetensors``) and their recipe (``weights/feature_net.json``, with the exact
command and seed) are loaded with safetensors only. Retrain with::

    python -m dreamrelation.toyworld.features --seed 0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from dreamrelation.files import save_tensors, write_text_atomic
from dreamrelation.toyworld.world import GENERIC_MOTIONS, RELATIONS, render, sample_scenes

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "feature_net.safetensors"
RECIPE_FILE = WEIGHTS_DIR / "feature_net.json"
LABELS: tuple[str, ...] = (*RELATIONS, *GENERIC_MOTIONS)
FEATURE_DIM = 32


class VideoFeatureNet(nn.Module):
    """3D convolutions over a half-resolution clip, pooled over space only (time order matters for
    relations: approach-then-contact is not contact-then-apart), a 32-d embedding and a classifier."""

    def __init__(
        self, n_classes: int = len(LABELS), feature_dim: int = FEATURE_DIM, time_bins: int = 4
    ) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int | tuple[int, int, int]) -> list[nn.Module]:
            return [nn.Conv3d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm3d(cout), nn.ReLU()]

        # Sprites are ~8 px, so half resolution keeps them (4 px) and quarters the cost.
        self.encoder = nn.Sequential(
            nn.AvgPool3d((1, 2, 2)),
            *block(3, 16, 1),
            *block(16, 32, 2),
            *block(32, 64, 2),
            *block(64, 64, 1),
        )
        self.time_pool = nn.AdaptiveAvgPool3d((time_bins, 1, 1))
        self.embed = nn.Linear(64 * time_bins, feature_dim)
        self.classify = nn.Linear(feature_dim, n_classes)

    def features(self, videos: torch.Tensor) -> torch.Tensor:
        """``(N, 3, F, H, W)`` in [-1, 1] -> ``(N, feature_dim)`` embedding (the FVD features)."""
        return self.embed(self.time_pool(self.encoder(videos)).flatten(1))

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        """Class logits over :data:`LABELS`."""
        return self.classify(torch.relu(self.features(videos)))


def to_tensor(videos: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    """``(N, F, H, W, 3)`` uint8 -> ``(N, 3, F, H, W)`` float in [-1, 1]."""
    array = np.stack([np.asarray(v) for v in videos]) if not isinstance(videos, np.ndarray) else videos
    tensor = torch.from_numpy(np.ascontiguousarray(array)).float().div_(127.5).sub_(1.0)
    return tensor.permute(0, 4, 1, 2, 3).contiguous()


@lru_cache(maxsize=2)
def load_feature_net(path: str | None = None) -> VideoFeatureNet:
    """The shipped (or a given) feature network, in eval mode; read with safetensors only."""
    weights = Path(path) if path is not None else WEIGHTS_FILE
    net = VideoFeatureNet()
    net.load_state_dict(load_file(str(weights)))
    return net.eval()


@torch.no_grad()
def extract_features(
    videos: Sequence[np.ndarray] | np.ndarray, net: VideoFeatureNet | None = None, batch_size: int = 64
) -> np.ndarray:
    """``(N, FEATURE_DIM)`` features of ``(F, H, W, 3)`` uint8 videos."""
    net = net if net is not None else load_feature_net()
    chunks = []
    for start in range(0, len(videos), batch_size):
        chunks.append(net.features(to_tensor(videos[start : start + batch_size])).numpy())
    return np.concatenate(chunks).astype(np.float64)


def render_labelled(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` ground-truth clips of every label (all shapes, colours, backgrounds)."""
    rng = np.random.default_rng(seed)
    videos, labels = [], []
    for label_index, label in enumerate(LABELS):
        for scene in sample_scenes(label, per_class, rng):
            videos.append(render(scene).frames)
            labels.append(label_index)
    return np.stack(videos), np.asarray(labels)


def train_feature_net(
    seed: int = 0, per_class: int = 80, epochs: int = 6, batch_size: int = 32, lr: float = 3e-3
) -> tuple[VideoFeatureNet, dict[str, float]]:
    """Train the network on fresh renders; returns it with train and held-out accuracy."""
    torch.manual_seed(seed)
    videos, labels = render_labelled(per_class, seed)
    held_videos, held_labels = render_labelled(max(per_class // 5, 4), seed + 1)
    inputs, targets = to_tensor(videos), torch.from_numpy(labels)
    net = VideoFeatureNet()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(inputs) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    for _epoch in range(epochs):
        net.train()
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), batch_size):
            batch = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(net(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    with torch.no_grad():
        train_accuracy = (net(inputs).argmax(-1) == targets).float().mean().item()
        held_accuracy = (
            (net(to_tensor(held_videos)).argmax(-1) == torch.from_numpy(held_labels)).float().mean()
        )
    return net, {"train_accuracy": train_accuracy, "heldout_accuracy": float(held_accuracy)}


def main(argv: Sequence[str] | None = None) -> None:
    """Train the toy-FVD feature network and write its weights and recipe."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=80, help="training clips per label")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    began = time.time()
    net, scores = train_feature_net(args.seed, args.per_class, args.epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    weights_path = args.out / WEIGHTS_FILE.name
    save_tensors({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights_path))
    recipe = {
        "command": (
            f"python -m dreamrelation.toyworld.features --seed {args.seed} --per-class {args.per_class} "
            f"--epochs {args.epochs} --threads {args.threads}"
        ),
        "seed": args.seed,
        "heldout_seed": args.seed + 1,
        "per_class": args.per_class,
        "epochs": args.epochs,
        "labels": list(LABELS),
        "feature_dim": FEATURE_DIM,
        "input": "(N, 3, F, H, W) float in [-1, 1]; trained on F=16, H=W=32",
        "torch": torch.__version__,
        "sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        "train_seconds": round(time.time() - began, 1),
        **{k: round(v, 4) for k, v in scores.items()},
    }
    write_text_atomic(args.out / RECIPE_FILE.name, json.dumps(recipe, indent=2) + "\n")
    print(json.dumps(recipe, indent=2))


if __name__ == "__main__":
    main()
