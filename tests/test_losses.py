"""Losses and the RCL memory bank, checked against hand computations and brute-force loops."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from dreamrelation.training.losses import (
    MemoryBank,
    batch_relational_contrastive_loss,
    combined_mask_loss,
    frame_features,
    mask_weighted_loss,
    relational_contrastive_loss,
)

# ---------------------------------------------------------------- mask-weighted diffusion loss


def test_mask_weighted_loss_with_one_masked_element_matches_hand_value() -> None:
    prediction = torch.zeros(1, 1, 1, 2, 2)
    target = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 2, 2)
    mask = torch.tensor([0.0, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 2, 2)
    # squared errors 1, 4, 9, 16; the masked one (4) is weighted by 50 + 1 = 51.
    expected = (1 + 51 * 4 + 9 + 16) / 4
    assert mask_weighted_loss(prediction, target, mask).item() == pytest.approx(expected)


def test_mask_weighted_loss_with_zero_mask_is_plain_mse() -> None:
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(2, 3, 4, 5, 6, generator=generator)
    target = torch.randn(2, 3, 4, 5, 6, generator=generator)
    loss = mask_weighted_loss(prediction, target, torch.zeros(2, 1, 4, 5, 6))
    assert loss.item() == pytest.approx(torch.nn.functional.mse_loss(prediction, target).item(), rel=1e-6)


def test_mask_weighted_loss_accepts_mask_without_channel_axis_and_broadcasts_over_channels() -> None:
    generator = torch.Generator().manual_seed(1)
    prediction = torch.randn(2, 3, 4, 5, 6, generator=generator)
    target = torch.randn(2, 3, 4, 5, 6, generator=generator)
    mask = (torch.rand(2, 4, 5, 6, generator=generator) > 0.5).float()
    loss = mask_weighted_loss(prediction, target, mask, mask_weight=7.0)
    # Independent loop: weight every element by its (b, f, h, w) mask value.
    total = 0.0
    for b in range(2):
        for c in range(3):
            for f in range(4):
                for h in range(5):
                    for w in range(6):
                        error = (prediction[b, c, f, h, w] - target[b, c, f, h, w]).item() ** 2
                        total += (7.0 * mask[b, f, h, w].item() + 1) * error
    assert loss.item() == pytest.approx(total / prediction.numel(), rel=1e-5)


def test_mask_weighted_loss_computes_in_float32_for_bf16_inputs() -> None:
    prediction = torch.zeros(1, 1, 1, 1, 2, dtype=torch.bfloat16)
    target = torch.ones(1, 1, 1, 1, 2, dtype=torch.bfloat16)
    loss = mask_weighted_loss(prediction, target, torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 1, 2))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((51 + 1) / 2)


def test_mask_weighted_loss_rejects_a_mask_that_cannot_broadcast_and_names_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(1, 1, 4, 5, 5\).*\(1, 3, 4, 5, 6\)"):
        mask_weighted_loss(torch.zeros(1, 3, 4, 5, 6), torch.zeros(1, 3, 4, 5, 6), torch.zeros(1, 1, 4, 5, 5))


def test_combined_mask_loss_matches_hand_value() -> None:
    prediction = torch.zeros(1, 1, 1, 1, 2)
    target = torch.tensor([2.0, 4.0]).reshape(1, 1, 1, 1, 2)
    mask = torch.tensor([0.5, 0.0]).reshape(1, 1, 1, 1, 2)
    # mse = (4 + 16) / 2 = 10; masked mse = ((0.5 * 2)^2 + 0) / 2 = 0.5; total 10 + 50 * 0.5.
    assert combined_mask_loss(prediction, target, mask).item() == pytest.approx(35.0)


def test_combined_and_weighted_losses_agree_for_binary_masks() -> None:
    generator = torch.Generator().manual_seed(2)
    prediction = torch.randn(1, 2, 3, 4, 4, generator=generator)
    target = torch.randn(1, 2, 3, 4, 4, generator=generator)
    mask = (torch.rand(1, 1, 3, 4, 4, generator=generator) > 0.5).float()
    assert combined_mask_loss(prediction, target, mask).item() == pytest.approx(
        mask_weighted_loss(prediction, target, mask).item(), rel=1e-5
    )


# ---------------------------------------------------------------- relational contrastive loss


def _brute_force_rcl(anchors, positives, negatives, temperature):
    def unit(vector):
        norm = math.sqrt(sum(x * x for x in vector))
        return [x / norm for x in vector]

    losses = []
    for i, anchor in enumerate(anchors.tolist()):
        a = unit(anchor)
        pos = [
            sum(x * y for x, y in zip(a, unit(p), strict=True)) / temperature for p in positives[i].tolist()
        ]
        neg = [
            sum(x * y for x, y in zip(a, unit(k), strict=True)) / temperature for k in negatives[i].tolist()
        ]
        everything = math.log(sum(math.exp(v) for v in pos + neg))
        positive_only = math.log(sum(math.exp(v) for v in pos))
        losses.append(everything - positive_only)
    return sum(losses) / len(losses)


def test_relational_contrastive_loss_matches_brute_force_formula() -> None:
    generator = torch.Generator().manual_seed(3)
    anchors = torch.randn(5, 4, generator=generator)
    positives = torch.randn(5, 3, 4, generator=generator) * 3  # scale must not matter
    negatives = torch.randn(5, 6, 4, generator=generator)
    loss = relational_contrastive_loss(anchors, positives, negatives, temperature=0.5)
    assert loss.item() == pytest.approx(_brute_force_rcl(anchors, positives, negatives, 0.5), rel=1e-5)


def test_relational_contrastive_loss_by_hand_for_orthogonal_features() -> None:
    anchors = torch.tensor([[1.0, 0.0]])
    positives = torch.tensor([[[2.0, 0.0]]])  # cosine 1
    negatives = torch.tensor([[[0.0, 5.0]]])  # cosine 0
    # loss = log(e^(1/τ) + e^0) - 1/τ with τ = 1.
    expected = math.log(math.e + 1) - 1
    assert relational_contrastive_loss(anchors, positives, negatives, 1.0).item() == pytest.approx(expected)


def test_relational_contrastive_loss_is_low_for_aligned_positives_and_high_for_aligned_negatives() -> None:
    generator = torch.Generator().manual_seed(4)
    anchors = torch.randn(3, 8, generator=generator)
    others = torch.randn(3, 4, 8, generator=generator)
    aligned = anchors[:, None].expand(3, 4, 8)
    low = relational_contrastive_loss(anchors, aligned, others)
    high = relational_contrastive_loss(anchors, others, aligned)
    assert low.item() < 0.1
    assert high.item() > 5.0


def test_relational_contrastive_loss_sends_gradient_to_anchors_and_survives_zero_features() -> None:
    anchors = torch.zeros(2, 3, requires_grad=True)  # static clip: zero dynamics
    negatives = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(5), requires_grad=True)
    loss = relational_contrastive_loss(anchors, torch.ones(2, 1, 3), negatives)
    loss.backward()
    assert torch.isfinite(loss)
    assert anchors.grad is not None and torch.isfinite(anchors.grad).all()

    anchors = torch.randn(2, 3, generator=torch.Generator().manual_seed(6), requires_grad=True)
    relational_contrastive_loss(anchors, torch.randn(2, 2, 3), torch.randn(2, 4, 3)).backward()
    assert anchors.grad.abs().sum() > 0


# ---------------------------------------------------------------- frame features


def test_frame_features_are_spatial_means_and_their_frame_differences() -> None:
    # (B=1, C=2, F=3, H=1, W=2): channel 0 frames have means 1, 2, 4; channel 1 means 0, 10, 10.
    output = torch.tensor(
        [[[[[0.0, 2.0]], [[1.0, 3.0]], [[4.0, 4.0]]], [[[0.0, 0.0]], [[5.0, 15.0]], [[10.0, 10.0]]]]],
        requires_grad=True,
    )
    single_frame, dynamics = frame_features(output)
    assert single_frame.shape == (1, 3, 2) and dynamics.shape == (1, 2, 2)
    assert torch.equal(single_frame.detach(), torch.tensor([[[1.0, 0.0], [2.0, 10.0], [4.0, 10.0]]]))
    assert torch.equal(dynamics.detach(), torch.tensor([[[1.0, 10.0], [2.0, 0.0]]]))
    dynamics.sum().backward()
    assert output.grad is not None and output.grad.abs().sum() > 0


# ---------------------------------------------------------------- memory bank


def _video(value: float, frames: int = 4, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-frame features whose rows are value + frame index, so entries are recognisable."""
    single_frame = value + torch.arange(frames, dtype=torch.float32)[:, None].expand(frames, channels)
    return single_frame[1:] - single_frame[:-1] + value, single_frame.clone()


def test_memory_bank_evicts_oldest_entry_at_capacity() -> None:
    bank = MemoryBank(capacity=3)
    for value in range(5):
        dynamics, single_frame = _video(float(value))
        bank.push("hug", dynamics, single_frame)
    assert len(bank) == 3
    positives, _ = bank.sample("hug", 4, 10, 0, torch.zeros(4, 3), torch.Generator().manual_seed(0))
    kept = sorted(positives[0, :, 0].tolist())
    assert kept == [2.0 + 1, 3.0 + 1, 4.0 + 1]  # videos 0 and 1 were evicted


def test_memory_bank_returns_none_until_a_same_relation_entry_exists() -> None:
    bank = MemoryBank()
    own = torch.zeros(4, 3)
    assert bank.sample("hug", 4, 4, 10, own, torch.Generator().manual_seed(0)) is None
    bank.push("kick", *_video(1.0))
    assert bank.sample("hug", 4, 4, 10, own, torch.Generator().manual_seed(0)) is None


def test_memory_bank_positives_are_same_relation_dynamics_at_the_same_frame_index() -> None:
    bank = MemoryBank()
    bank.push("hug", torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.zeros(3, 2))
    bank.push("kick", torch.tensor([[9.0, 9.0], [9.0, 9.0]]), torch.ones(3, 2))
    bank.push("hug", torch.tensor([[3.0, 0.0], [4.0, 0.0]]), torch.zeros(3, 2))
    positives, negatives = bank.sample("hug", 3, 4, 10, torch.zeros(3, 2), torch.Generator().manual_seed(0))
    assert positives.shape == (2, 2, 2)  # P = min(4, 2 available)
    assert sorted(positives[0, :, 0].tolist()) == [1.0, 3.0]
    assert sorted(positives[1, :, 0].tolist()) == [2.0, 4.0]
    for j in range(2):  # entry j's frame i sits at [i, j]
        assert positives[1, j, 0].item() == positives[0, j, 0].item() + 1
    assert 9.0 not in positives.flatten().tolist()
    assert negatives.shape[:2] == (2, 10)  # 3 own frames + 7 of the 9 bank frames


def test_memory_bank_excludes_the_current_video_and_its_earlier_passes() -> None:
    bank = MemoryBank()
    own_dynamics, own_single = _video(7.0)
    bank.push("hug", own_dynamics, own_single, source="video_7")
    assert bank.sample("hug", 4, 4, 10, own_single, torch.Generator(), exclude_source="video_7") is None
    bank.push("hug", *_video(1.0), source="video_1")
    positives, _ = bank.sample("hug", 4, 4, 10, own_single, torch.Generator(), exclude_source="video_7")
    assert positives.shape[1] == 1 and positives[0, 0, 0].item() == 2.0


def test_memory_bank_negatives_mix_own_frames_with_gradient_and_bank_frames() -> None:
    bank = MemoryBank()
    for value in (100.0, 200.0, 300.0):
        bank.push("hug", *_video(value, frames=4, channels=2))
    own = torch.full((4, 2), -1.0) - torch.arange(4.0)[:, None]
    own.requires_grad_(True)
    positives, negatives = bank.sample("hug", 4, 4, 10, own, torch.Generator().manual_seed(0))
    assert positives.shape == (3, 3, 2)
    assert negatives.shape == (3, 10, 2)
    assert torch.equal(negatives[0], negatives[2])  # one negative set shared by every anchor
    values = negatives[0, :, 0].tolist()
    own_rows = [v for v in values if v < 0]
    assert len(own_rows) == 4  # min(F=4, ceil(10 / 2) = 5) own frames
    assert len(set(own_rows)) == 4 and len(set(values) - set(own_rows)) == 6
    negatives.sum().backward()
    assert own.grad is not None and own.grad.abs().sum() > 0


def test_memory_bank_short_bank_tops_up_with_own_frames() -> None:
    bank = MemoryBank()
    bank.push("hug", torch.zeros(2, 1), torch.tensor([[100.0], [101.0], [102.0]]))
    own = -1.0 - torch.arange(3.0)[:, None]
    _, negatives = bank.sample("hug", 3, 4, 10, own, torch.Generator().manual_seed(0))
    values = negatives[0, :, 0].tolist()
    assert sorted(values) == [-3.0, -2.0, -1.0, 100.0, 101.0, 102.0]  # K = min(10, 3 + 3)

    bank = MemoryBank()
    bank.push("hug", torch.zeros(1, 1), torch.tensor([[100.0], [101.0]]))
    bank_own = -1.0 - torch.arange(2.0)[:, None]
    _, negatives = bank.sample("hug", 2, 4, 6, bank_own, torch.Generator().manual_seed(0))
    assert sorted(negatives[0, :, 0].tolist()) == [-2.0, -1.0, 100.0, 101.0]


def test_memory_bank_rejects_same_relation_entries_with_another_frame_count() -> None:
    bank = MemoryBank()
    bank.push("hug", *_video(1.0, frames=5))
    with pytest.raises(ValueError, match="5 frames.*4"):
        bank.sample("hug", 4, 4, 10, torch.zeros(4, 3), torch.Generator())


def test_memory_bank_sampling_is_reproducible_with_a_seeded_generator() -> None:
    bank = MemoryBank()
    for value in range(10):
        bank.push("hug" if value % 2 else "kick", *_video(float(value) * 10))
    own = torch.randn(4, 3, generator=torch.Generator().manual_seed(9))
    first = bank.sample("hug", 4, 2, 10, own, torch.Generator().manual_seed(42))
    second = bank.sample("hug", 4, 2, 10, own, torch.Generator().manual_seed(42))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    draws = {
        tuple(bank.sample("hug", 4, 2, 10, own, torch.Generator().manual_seed(s))[1][0, :, 0].tolist())
        for s in range(5)
    }
    assert len(draws) > 1  # the generator really drives the choice


def test_memory_bank_state_dict_round_trip_through_safetensors_reproduces_sampling(tmp_path) -> None:
    bank = MemoryBank(capacity=6)
    for value in range(8):
        bank.push(("hug", "kick", "pat")[value % 3], *_video(float(value)), source=f"v{value % 4}")
    state = bank.state_dict()
    assert all(isinstance(t, torch.Tensor) for t in state.values())
    path = tmp_path / "bank.safetensors"
    save_file(state, str(path))
    restored = MemoryBank()
    restored.load_state_dict(load_file(str(path)))
    assert len(restored) == len(bank) == 6 and restored.capacity == 6
    own = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    for relation in ("hug", "kick", "pat"):
        expected = bank.sample(relation, 4, 4, 10, own, torch.Generator().manual_seed(7), exclude_source="v1")
        actual = restored.sample(
            relation, 4, 4, 10, own, torch.Generator().manual_seed(7), exclude_source="v1"
        )
        assert torch.equal(expected[0], actual[0]) and torch.equal(expected[1], actual[1])


def test_empty_memory_bank_state_round_trips(tmp_path) -> None:
    path = tmp_path / "empty.safetensors"
    save_file(MemoryBank(capacity=5).state_dict(), str(path))
    restored = MemoryBank()
    restored.load_state_dict(load_file(str(path)))
    assert len(restored) == 0 and restored.capacity == 5


# ---------------------------------------------------------------- RCL of a batch against the bank


def _info_nce(positive_cosines: list[float], negative_cosines: list[float]) -> float:
    """One anchor's loss at τ = 1: log Σ_{pos ∪ neg} e^cos − log Σ_pos e^cos."""
    everything = math.log(sum(math.exp(c) for c in positive_cosines + negative_cosines))
    return everything - math.log(sum(math.exp(c) for c in positive_cosines))


def test_batch_contrastive_loss_by_hand() -> None:
    """Three samples (relations a, b, a; one dynamics anchor each) against a bank of three videos.

    n_neg is large enough that every frame (the sample's own 2 and the bank's 6) is a negative, so
    the draw order does not matter and the loss is written down by hand.
    """
    bank = MemoryBank(capacity=8)
    bank.push("a", torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), source="v9")
    # an earlier pass over sample 0's own video: never its own positive
    bank.push("a", torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0], [0.0, -1.0]]), source="v0")
    bank.push("c", torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 1.0], [-1.0, 1.0]]), source="v5")
    single = torch.tensor(
        [[[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [1.0, 2.0]]], requires_grad=True
    )
    dynamics = single[:, 1:] - single[:, :-1]  # sample 0: (0, 1); sample 2: (1, 0)
    loss, terms = batch_relational_contrastive_loss(
        dynamics,
        single,
        ["a", "b", "a"],
        ["v0", "v1", "v2"],
        bank,
        torch.Generator().manual_seed(0),
        num_positives=4,
        num_negatives=100,
        temperature=1.0,
    )
    r = 1 / math.sqrt(2)
    bank_frames_vs_0 = [0.0, 1.0, 0.0, -1.0, r, r]  # cosines of (0, 1) with the bank's six frames
    sample_0 = _info_nce([1.0], [0.0, r, *bank_frames_vs_0])  # positive: v9 only (v0 is itself)
    bank_frames_vs_2 = [1.0, 0.0, -1.0, 0.0, r, -r]  # cosines of (1, 0) with the bank's frames
    sample_2 = _info_nce([0.0, 1.0], [0.0, 1 / math.sqrt(5), *bank_frames_vs_2])  # positives v9, v0
    assert terms == 2  # relation b has no video in the bank yet: no term
    assert loss.item() == pytest.approx((sample_0 + sample_2) / 2, rel=1e-6)
    loss.backward()
    assert single.grad[0].abs().sum() > 0 and single.grad[2].abs().sum() > 0
    assert torch.equal(single.grad[1], torch.zeros(2, 2))
    assert len(bank) == 3  # the bank is only read


def test_batch_contrastive_loss_is_zero_without_a_positive() -> None:
    single = torch.randn(2, 3, 4)
    loss, terms = batch_relational_contrastive_loss(
        single[:, 1:] - single[:, :-1], single, ["a", "a"], ["v0", "v1"], MemoryBank(), torch.Generator()
    )
    assert terms == 0 and loss.item() == 0.0 and loss.shape == ()


def test_batch_contrastive_loss_rejects_a_label_count_that_is_not_the_batch() -> None:
    single = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="batch of 2"):
        batch_relational_contrastive_loss(
            single[:, 1:] - single[:, :-1], single, ["a"], ["v0"], MemoryBank(), torch.Generator()
        )
