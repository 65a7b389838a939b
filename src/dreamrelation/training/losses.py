"""Training losses of DreamRelation: the mask-weighted diffusion loss (HMT) and the
space-time relational contrastive loss (RCL) with its FIFO memory bank.

Everything here is a pure function of tensors (plus one small stateful bank), so each
piece can be checked against a hand computation. Losses are computed in float32 whatever
the input dtype, because bf16 squared errors and logsumexp lose too much precision.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# Paper settings (METHOD.md sections 2 and 3).
DEFAULT_MASK_WEIGHT = 50.0
DEFAULT_TEMPERATURE = 0.07
DEFAULT_N_POS = 4
DEFAULT_N_NEG = 10
DEFAULT_BANK_SIZE = 64

# Keeps L2 normalisation finite for an all-zero feature (e.g. a static clip has zero dynamics).
_NORM_EPS = 1e-8


def _broadcast_mask(prediction: Tensor, mask: Tensor) -> Tensor:
    """Return `mask` as float32 with a shape that broadcasts against `prediction`.

    A mask without the channel axis, (B, F, H, W) for a (B, C, F, H, W) prediction, gets one
    inserted at dim 1, because that is how the cache stores latent masks.
    """
    if mask.ndim == prediction.ndim - 1 and prediction.ndim >= 2:
        mask = mask.unsqueeze(1)
    try:
        torch.broadcast_shapes(mask.shape, prediction.shape)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} cannot broadcast to the prediction shape "
            f"{tuple(prediction.shape)}; give the mask as (B, 1, F, H, W) or (B, F, H, W) "
            "on the same latent grid as the prediction"
        ) from None
    if torch.broadcast_shapes(mask.shape, prediction.shape) != prediction.shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} is larger than the prediction shape "
            f"{tuple(prediction.shape)}; the mask must broadcast to the prediction, not widen it"
        )
    return mask.float()


def _check_same_shape(prediction: Tensor, target: Tensor) -> None:
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(prediction.shape)} differs from target shape {tuple(target.shape)}"
        )


def mask_weighted_loss(
    prediction: Tensor, target: Tensor, mask: Tensor, mask_weight: float = DEFAULT_MASK_WEIGHT
) -> Tensor:
    """Enhanced diffusion loss of the paper: mean of (mask_weight * mask + 1) * (prediction - target)².

    prediction, target: (B, C, F, H, W); mask: (B, 1, F, H, W), (B, F, H, W) or anything that
    broadcasts. Returns a float32 scalar. With an all-zero mask this is the plain MSE.
    """
    _check_same_shape(prediction, target)
    weight = mask_weight * _broadcast_mask(prediction, mask) + 1.0
    squared_error = (prediction.float() - target.float()) ** 2
    # Expand the weight so the mean runs over every element, not over the mask's shape.
    return (weight * squared_error).mean()


def combined_mask_loss(
    prediction: Tensor, target: Tensor, mask: Tensor, mask_weight: float = DEFAULT_MASK_WEIGHT
) -> Tensor:
    """Official-code variant ("combine_mask"): mse(pred, target) + mask_weight * mse(pred*mask, target*mask).

    Differs from `mask_weighted_loss` only for non-binary masks (it weights by mask² instead of mask).
    """
    _check_same_shape(prediction, target)
    mask = _broadcast_mask(prediction, mask)
    prediction, target = prediction.float(), target.float()
    plain = F.mse_loss(prediction, target)
    masked = F.mse_loss(prediction * mask, target * mask)
    return plain + mask_weight * masked


def relational_contrastive_loss(
    anchors: Tensor, positives: Tensor, negatives: Tensor, temperature: float = DEFAULT_TEMPERATURE
) -> Tensor:
    """Multi-positive InfoNCE of RCL, averaged over anchors (float32 scalar).

    anchors (N, C), positives (N, P, C), negatives (N, K, C). All features are L2-normalised;
    loss_i = logsumexp_j∈pos∪neg(a_i·k_j/τ) − logsumexp_j∈pos(a_i·p_j/τ).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if anchors.ndim != 2 or positives.ndim != 3 or negatives.ndim != 3:
        raise ValueError(
            "expected anchors (N, C), positives (N, P, C) and negatives (N, K, C); got shapes "
            f"{tuple(anchors.shape)}, {tuple(positives.shape)}, {tuple(negatives.shape)}"
        )
    n, c = anchors.shape
    if (
        positives.shape[0] != n
        or negatives.shape[0] != n
        or positives.shape[2] != c
        or negatives.shape[2] != c
    ):
        raise ValueError(
            f"positives {tuple(positives.shape)} and negatives {tuple(negatives.shape)} must match "
            f"anchors {tuple(anchors.shape)} in the anchor count N and the channel count C"
        )
    if positives.shape[1] == 0:
        raise ValueError("relational_contrastive_loss needs at least one positive per anchor (P >= 1)")

    a = F.normalize(anchors.float(), dim=-1, eps=_NORM_EPS)
    p = F.normalize(positives.float(), dim=-1, eps=_NORM_EPS)
    k = F.normalize(negatives.float(), dim=-1, eps=_NORM_EPS)
    positive_logits = torch.einsum("nc,npc->np", a, p) / temperature
    negative_logits = torch.einsum("nc,nkc->nk", a, k) / temperature
    all_logits = torch.cat([positive_logits, negative_logits], dim=1)
    per_anchor = torch.logsumexp(all_logits, dim=1) - torch.logsumexp(positive_logits, dim=1)
    return per_anchor.mean()


def frame_features(model_output: Tensor) -> tuple[Tensor, Tensor]:
    """Split a model output (B, C, F, H, W) into appearance and dynamics features.

    Returns (single_frame, dynamics): single_frame = spatial mean per frame, (B, F, C);
    dynamics = consecutive frame differences single_frame[:, 1:] - single_frame[:, :-1], (B, F-1, C).
    Both keep the autograd graph.
    """
    if model_output.ndim != 5:
        raise ValueError(f"expected a model output of shape (B, C, F, H, W), got {tuple(model_output.shape)}")
    single_frame = model_output.mean(dim=(3, 4)).transpose(1, 2)
    dynamics = single_frame[:, 1:] - single_frame[:, :-1]
    return single_frame, dynamics


def _encode_labels(labels: list[str]) -> Tensor:
    return torch.tensor(list(json.dumps(labels).encode("utf-8")), dtype=torch.uint8)


def _decode_labels(encoded: Tensor) -> list[str]:
    return json.loads(bytes(encoded.to(torch.uint8).tolist()).decode("utf-8"))


class MemoryBank:
    """FIFO memory bank of past videos' features for the relational contrastive loss.

    Each entry holds one video's relation label, its dynamics (F-1, C) and single-frame
    features (F, C), detached and in float32. Once `capacity` entries are held, pushing
    drops the oldest. An optional `source` (e.g. the video id) lets `sample` keep a video
    from being its own positive when an earlier pass over it is still in the bank.
    """

    def __init__(self, capacity: int = DEFAULT_BANK_SIZE) -> None:
        if capacity < 1:
            raise ValueError(f"memory bank capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._relations: list[str] = []
        self._sources: list[str | None] = []
        self._dynamics: list[Tensor] = []
        self._single_frame: list[Tensor] = []

    def __len__(self) -> int:
        return len(self._relations)

    def push(self, relation: str, dynamics: Tensor, single_frame: Tensor, source: str | None = None) -> None:
        """Add one video's dynamics (F-1, C) and single_frame (F, C); evicts the oldest entry when full."""
        if single_frame.ndim != 2 or dynamics.ndim != 2:
            raise ValueError(
                f"push expects dynamics (F-1, C) and single_frame (F, C) of one video; got "
                f"{tuple(dynamics.shape)} and {tuple(single_frame.shape)} (index the batch first)"
            )
        if dynamics.shape[0] != single_frame.shape[0] - 1 or dynamics.shape[1] != single_frame.shape[1]:
            raise ValueError(
                f"dynamics {tuple(dynamics.shape)} do not fit single_frame {tuple(single_frame.shape)}: "
                "expected (F-1, C) and (F, C)"
            )
        if self._single_frame and single_frame.shape[1] != self._single_frame[0].shape[1]:
            raise ValueError(
                f"feature channels {single_frame.shape[1]} differ from the bank's "
                f"{self._single_frame[0].shape[1]}; one bank serves one backbone"
            )
        self._relations.append(relation)
        self._sources.append(source)
        self._dynamics.append(dynamics.detach().float().clone())
        self._single_frame.append(single_frame.detach().float().clone())
        if len(self._relations) > self.capacity:
            del self._relations[0], self._sources[0], self._dynamics[0], self._single_frame[0]

    def sample(
        self,
        relation: str,
        frame_count: int,
        n_pos: int,
        n_neg: int,
        own_single_frame: Tensor,
        generator: torch.Generator,
        exclude_source: str | None = None,
    ) -> tuple[Tensor, Tensor] | None:
        """Draw RCL positives and negatives for the current video, or None when no positive exists yet.

        Returns positives (F-1, P, C) with positives[i, j] = the j-th chosen same-relation entry's
        dynamics at frame index i, P = min(n_pos, available); and negatives (F-1, K, C), one set shared
        by all anchors: min(F, ceil(n_neg/2)) of the video's own frames (gradient kept) plus bank
        single-frame features of any relation, topped up with more own frames when the bank is short.
        K = min(n_neg, F + bank frames). All randomness comes from `generator` (a CPU generator).
        """
        if n_pos < 1 or n_neg < 0:
            raise ValueError(f"need n_pos >= 1 and n_neg >= 0, got n_pos={n_pos}, n_neg={n_neg}")
        if own_single_frame.ndim != 2 or own_single_frame.shape[0] != frame_count:
            raise ValueError(
                f"own_single_frame must be ({frame_count}, C) for frame_count={frame_count}, "
                f"got {tuple(own_single_frame.shape)}"
            )
        if self._single_frame and own_single_frame.shape[1] != self._single_frame[0].shape[1]:
            raise ValueError(
                f"own_single_frame has {own_single_frame.shape[1]} channels, the bank holds "
                f"{self._single_frame[0].shape[1]}"
            )
        candidates = [
            index
            for index, (label, source) in enumerate(zip(self._relations, self._sources, strict=True))
            if label == relation and (exclude_source is None or source != exclude_source)
        ]
        for index in candidates:
            if self._dynamics[index].shape[0] != frame_count - 1:
                raise ValueError(
                    f"memory bank entry {index} of relation {relation!r} has "
                    f"{self._dynamics[index].shape[0] + 1} frames, the current video has {frame_count}; "
                    "RCL compares frame by frame, so all videos of a relation need the same "
                    "latent frame count"
                )
        if not candidates:
            return None

        device = own_single_frame.device
        chosen = torch.randperm(len(candidates), generator=generator)[: min(n_pos, len(candidates))]
        positives = torch.stack([self._dynamics[candidates[i]] for i in chosen.tolist()], dim=1).to(device)

        bank_frames = torch.cat(self._single_frame, dim=0)
        total = min(n_neg, frame_count + bank_frames.shape[0])
        n_own = min(frame_count, math.ceil(n_neg / 2))
        n_bank = min(total - n_own, bank_frames.shape[0])
        # When the bank is short, more of the video's own frames fill the remaining slots.
        n_own = total - n_bank
        own_index = torch.randperm(frame_count, generator=generator)[:n_own]
        bank_index = torch.randperm(bank_frames.shape[0], generator=generator)[:n_bank]
        negative_set = torch.cat(
            [own_single_frame.float()[own_index.to(device)], bank_frames[bank_index].to(device)], dim=0
        )
        negatives = negative_set.unsqueeze(0).expand(frame_count - 1, -1, -1)
        return positives, negatives

    def state_dict(self) -> dict[str, Tensor]:
        """Plain CPU tensors only, so the bank can be saved with safetensors next to a checkpoint."""
        relation_labels = sorted(set(self._relations))
        source_labels = sorted({source for source in self._sources if source is not None})
        channels = self._single_frame[0].shape[1] if self._single_frame else 0

        def rows(parts: list[Tensor]) -> Tensor:
            if not parts:
                return torch.zeros(0, channels)
            return torch.cat(parts, dim=0).cpu().contiguous()

        return {
            "capacity": torch.tensor([self.capacity], dtype=torch.int64),
            "relation_labels": _encode_labels(relation_labels),
            "relation_ids": torch.tensor(
                [relation_labels.index(r) for r in self._relations], dtype=torch.int64
            ),
            "source_labels": _encode_labels(source_labels),
            "source_ids": torch.tensor(
                [-1 if s is None else source_labels.index(s) for s in self._sources], dtype=torch.int64
            ),
            "frame_counts": torch.tensor([t.shape[0] for t in self._single_frame], dtype=torch.int64),
            "dynamics": rows(self._dynamics),
            "single_frame": rows(self._single_frame),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a bank saved by `state_dict`; `sample` then draws exactly what the saved bank would."""
        required = {
            "capacity",
            "relation_labels",
            "relation_ids",
            "source_labels",
            "source_ids",
            "frame_counts",
            "dynamics",
            "single_frame",
        }
        missing = required - set(state)
        if missing:
            raise ValueError(
                f"memory bank state lacks {sorted(missing)}; was it written by MemoryBank.state_dict?"
            )
        relation_labels = _decode_labels(state["relation_labels"])
        source_labels = _decode_labels(state["source_labels"])
        frame_counts = [int(n) for n in state["frame_counts"].tolist()]
        dynamics, single_frame = state["dynamics"].float(), state["single_frame"].float()
        if (
            sum(frame_counts) != single_frame.shape[0]
            or sum(n - 1 for n in frame_counts) != dynamics.shape[0]
        ):
            raise ValueError(
                f"memory bank state is inconsistent: frame counts {frame_counts} do not match "
                f"{single_frame.shape[0]} single-frame rows and {dynamics.shape[0]} dynamics rows"
            )
        self.capacity = int(state["capacity"].reshape(-1)[0])
        self._relations = [relation_labels[i] for i in state["relation_ids"].tolist()]
        self._sources = [None if i < 0 else source_labels[i] for i in state["source_ids"].tolist()]
        if not frame_counts:
            self._single_frame, self._dynamics = [], []
            return
        self._single_frame = [t.clone() for t in torch.split(single_frame, frame_counts, dim=0)]
        self._dynamics = [t.clone() for t in torch.split(dynamics, [n - 1 for n in frame_counts], dim=0)]


def batch_relational_contrastive_loss(
    dynamics: Tensor,
    single_frame: Tensor,
    relations: Sequence[str],
    sources: Sequence[str | None],
    memory_bank: MemoryBank,
    generator: torch.Generator,
    *,
    num_positives: int = DEFAULT_N_POS,
    num_negatives: int = DEFAULT_N_NEG,
    temperature: float = DEFAULT_TEMPERATURE,
) -> tuple[Tensor, int]:
    """RCL of a batch against the memory bank: the mean of each sample's loss, and how many samples
    had one (float32 scalar, count).

    dynamics (B, F-1, C) and single_frame (B, F, C) come from :func:`frame_features`; sample ``b``
    of relation ``relations[b]`` (video ``sources[b]``, never its own positive) draws its positives
    and negatives with :meth:`MemoryBank.sample` from ``generator``, in batch order. A sample whose
    relation has no other video in the bank yet adds no term; with no term at all the loss is 0.
    The bank is only read (the caller pushes the batch after the step).
    """
    if dynamics.ndim != 3 or single_frame.ndim != 3:
        raise ValueError(
            f"expected dynamics (B, F-1, C) and single_frame (B, F, C); got {tuple(dynamics.shape)} "
            f"and {tuple(single_frame.shape)}"
        )
    if not len(relations) == len(sources) == dynamics.shape[0] == single_frame.shape[0]:
        raise ValueError(
            f"{len(relations)} relations and {len(sources)} sources for a batch of {dynamics.shape[0]}"
        )
    total = torch.zeros((), device=dynamics.device)
    terms = 0
    for b, relation in enumerate(relations):
        sample = memory_bank.sample(
            relation,
            single_frame.shape[1],
            num_positives,
            num_negatives,
            single_frame[b],
            generator,
            exclude_source=sources[b],
        )
        if sample is None:  # the bank has no other video of this relation yet
            continue
        positives, negatives = sample
        total = total + relational_contrastive_loss(dynamics[b], positives, negatives, temperature)
        terms += 1
    return (total / terms if terms else total), terms
