"""Seeding in one place: random generators keyed by the place of a draw, and single-threaded workers."""

from __future__ import annotations

import torch

_MIX = 0x9E3779B1  # spreads (seed, step, rank) into distinct generator seeds


def generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded by ``parts`` (e.g. seed, purpose, step): the same parts, the same draws,
    without touching the global random state."""
    seed = 0
    for p in parts:
        seed = (seed * _MIX + int(p) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def single_thread_worker(_: int) -> None:
    """A data-loader ``worker_init_fn``: one torch thread per worker (workers share the cores)."""
    torch.set_num_threads(1)
