"""The pretraining clips: generic motions of the toy world rendered on the fly, seeded by (seed, step)."""

from __future__ import annotations

import numpy as np
import torch

from dreamrelation.seeding import single_thread_worker
from dreamrelation.toyworld.pretrain.config import PretrainConfig
from dreamrelation.toyworld.world import (
    BACKGROUNDS,
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    Scene,
    render,
    sample_scenes,
    subject_phrase,
)

# ----------------------------------------------------------------------------- data

#: words of the toy tokenizer that no toy caption or prompt uses and that name no relation, colour
#: or shape: the stand-ins for the unseen relation words next to a subject (tests check both)
CONTEXT_NOISE_WORDS = (
    "of", "at", "people", "man", "woman", "cat", "dog", "bear", "raccoon", "tiger", "panda",
    "monkey", "rabbit", "fox", "lion", "horse", "cow", "robot", "astronaut", "plain", "field",
    "room", "street", "park", "beach", "video",
)  # fmt: skip


def context_noise_caption(scene: Scene, rng: np.random.Generator) -> str:
    """``scene``'s subjects and background with random :data:`CONTEXT_NOISE_WORDS` around them
    instead of its motion words: 0-1 before the first subject, 1-3 between, 0-2 after the second,
    e.g. "a red circle dog at a blue square on a dark background.".

    Why: the toy text encoder mixes each token with its neighbours (offsets -2..+2), so in "{a} is
    pushing {b} on ..." the second subject's embedding carries "pushing" and "on", words a base
    trained on generic captions never saw there, and the base then often fails to draw it
    (benchmarks/toy_subject_context.py). Trained on these captions, the model must find a subject
    from its own phrase whatever stands next to it."""

    def words(low: int, high: int) -> list[str]:
        picks = rng.integers(len(CONTEXT_NOISE_WORDS), size=int(rng.integers(low, high + 1)))
        return [CONTEXT_NOISE_WORDS[i] for i in picks]

    first, second = subject_phrase(scene.subject1), subject_phrase(scene.subject2)
    background = f"{BACKGROUNDS[scene.background]}."  # as caption_for ends: "on a dark background."
    return " ".join([*words(0, 1), first, *words(1, 3), second, *words(0, 2), "on", "a", background])


def training_clips(
    step: int, config: PretrainConfig, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE
) -> tuple[np.ndarray, list[str]]:
    """The batch of step ``step``: (B, F, H, W, 3) uint8 clips of generic motions and their captions,
    a pure function of (seed, step) over all shapes, colours and backgrounds."""
    rng = np.random.default_rng([config.seed, step])
    # its own stream, so the clips (and the captions without noise) are the same at any noise rate
    noise_rng = np.random.default_rng([config.seed, step, 1])
    videos, captions = [], []
    for _ in range(config.batch_size):
        motion = config.motions[int(rng.integers(len(config.motions)))]
        scene = sample_scenes(motion, 1, rng, frames=frames, size=size)[0]
        clip = render(scene)
        videos.append(clip.frames)
        noisy = noise_rng.random() < config.caption_context_noise
        captions.append(context_noise_caption(scene, noise_rng) if noisy else clip.caption)
    return np.stack(videos), captions


def drop_captions(captions: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """Replace each caption by the empty prompt with probability ``rate`` (the CFG unconditional)."""
    return ["" if rng.random() < rate else caption for caption in captions]


class TrainingBatches(torch.utils.data.Dataset):
    """Item i is the batch of step ``first_step + i`` (:func:`training_clips`): a DataLoader's workers
    then render batches ahead of the model, and the batches depend neither on how many workers there
    are nor on resuming."""

    def __init__(self, config: PretrainConfig, first_step: int = 0, last_step: int | None = None) -> None:
        self.config, self.first_step = config, first_step
        self.last_step = config.steps if last_step is None else last_step

    def __len__(self) -> int:
        return max(self.last_step - self.first_step, 0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str]]:
        videos, captions = training_clips(self.first_step + index, self.config)
        return torch.from_numpy(videos), captions


def batch_loader(
    config: PretrainConfig, pin_memory: bool = False, first_step: int = 0, last_step: int | None = None
) -> torch.utils.data.DataLoader:
    """The batches of steps ``first_step`` .. ``last_step`` (default ``config.steps``), in order."""
    return torch.utils.data.DataLoader(
        TrainingBatches(config, first_step, last_step),
        batch_size=None,  # an item is already a whole batch
        shuffle=False,
        num_workers=config.workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if config.workers else None,
        worker_init_fn=single_thread_worker if config.workers else None,
    )
