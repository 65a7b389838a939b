"""Memory savers and transformer-only training: same losses, finite grads, inactive adapters still."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from dreamrelation.backbones import TransformerOnly, load_backbone
from dreamrelation.config import TrainConfig
from dreamrelation.errors import ConfigError
from dreamrelation.testing import tiny_train_config
from dreamrelation.training.adapters import adapter_parameters
from dreamrelation.training.loop import Trainer
from dreamrelation.training.losses import MemoryBank
from dreamrelation.training.memory_savers import (
    CHECKPOINTING_THRESHOLD,
    checkpointed_indices,
    needs_checkpointing,
    transformer_blocks,
)


def _config(cache_dir: Path, output: Path, **overrides: object) -> TrainConfig:
    return tiny_train_config(cache_dir, output, **{"checkpoint_every": 100, **overrides})


# ----------------------------------------------------------------------------- transformer only


def test_train_never_instantiates_text_encoder_or_vae(
    mochi_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a saved pipeline folder, as a user with real weights would train."""
    from diffusers import AutoencoderKLMochi
    from transformers import T5EncoderModel

    folder = tmp_path / "mochi-weights"
    load_backbone("mochi", "tiny").pipeline.save_pretrained(folder)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("training instantiated a frozen encoder")

    monkeypatch.setattr(T5EncoderModel, "__init__", refuse)
    monkeypatch.setattr(AutoencoderKLMochi, "__init__", refuse)
    trainer = Trainer(_config(mochi_cache, tmp_path / "run", **{"model.model": str(folder)}))
    assert isinstance(trainer.backbone.pipeline, TransformerOnly)
    assert set(trainer.backbone.pipeline.components) == {"transformer"}
    assert math.isfinite(trainer.training_step(0)["loss"])
    with pytest.raises(AttributeError, match="holds only the transformer"):
        trainer.backbone.vae  # noqa: B018 - the access is the test


def test_transformer_only_matches_the_full_pipelines_transformer(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    full = load_backbone("mochi", "tiny")
    full.pipeline.save_pretrained(folder)
    alone = load_backbone("mochi", str(folder), components="transformer")
    expected = full.transformer.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in alone.transformer.state_dict().items())


# ----------------------------------------------------------------------------- savers

SAVERS = {
    # saver -> (overrides, relative loss tolerance); checkpointing and offloading recompute or move
    # the same numbers (exact); fp8 storage rounds the frozen weights to 3 mantissa bits.
    "checkpointing": ({"gradient_checkpointing": True}, 1e-5),
    # one of the tiny model's two blocks recomputes, the other keeps its activations
    "checkpoint_one_block": ({"gradient_checkpointing": True, "checkpoint_blocks": 1}, 1e-5),
    "block_offload": ({"block_offload": True, "gradient_checkpointing": True}, 1e-5),
    "fp8_base": ({"fp8_base": True}, 0.05),
}


def _select_step(trainer: Trainer, adapter: str) -> int:
    return next(s for s in range(100) if trainer.select(s) == adapter)


@pytest.mark.parametrize("saver", list(SAVERS))
def test_saver_keeps_losses_and_leaves_inactive_adapters_untouched(
    saver: str, mochi_cache: Path, tmp_path: Path
) -> None:
    overrides, tolerance = SAVERS[saver]
    plain = Trainer(_config(mochi_cache, tmp_path / "plain", gradient_checkpointing=False))
    saved = Trainer(_config(mochi_cache, tmp_path / saver, **overrides))
    step = _select_step(saved, "subject1")
    for trainer in (plain, saved):
        with torch.no_grad():  # non-zero adapters, so weight decay would move a touched one
            for p in trainer.lora_params:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(p.numel()))
    assert all(p.dtype == torch.float32 for p in saved.lora_params)  # adapters train in fp32
    before = {
        a: {k: v.clone() for k, v in adapter_parameters(saved.transformer, a).items()} for a in saved.present
    }

    # gradients of one micro-step: finite for the active adapters, None for the others
    saved.micro_step(step, step)
    for name, p in saved.transformer.named_parameters():
        if "lora_" not in name:
            assert p.grad is None
        elif ".subject1." in name or ".ffn." in name:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name
    saved.optimizer.zero_grad(set_to_none=True)
    saved.memory_bank = MemoryBank(saved.config.loss.memory_bank_size)  # forget that micro-step

    losses = {id(t): [t.training_step(s)["loss"] for s in (step, step + 1, step + 2)] for t in (plain, saved)}
    for a, b in zip(losses[id(plain)], losses[id(saved)], strict=True):
        assert b == pytest.approx(a, rel=tolerance)
    # after three steps, an adapter never selected is bit-identical
    selected = {saved.select(s) for s in (step, step + 1, step + 2)}
    untouched = [a for a in ("relation", "subject2") if a not in selected and "relation" not in selected]
    for adapter in untouched:
        for key, value in adapter_parameters(saved.transformer, adapter).items():
            assert torch.equal(value, before[adapter][key]), key


def test_fp8_storage_keeps_frozen_weights_in_fp8_and_adapters_in_fp32(
    mochi_cache: Path, tmp_path: Path
) -> None:
    trainer = Trainer(_config(mochi_cache, tmp_path / "run", fp8_base=True))
    dtypes = {n: p.dtype for n, p in trainer.transformer.named_parameters()}
    assert dtypes["transformer_blocks.0.attn1.to_q.base_layer.weight"] == torch.float8_e4m3fn
    assert dtypes["transformer_blocks.0.ff.net.0.proj.weight"] == torch.float8_e4m3fn
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n)
    # the forward computes with the fp8-rounded weights: compare with an fp32 copy rounded by hand
    reference = Trainer(_config(mochi_cache, tmp_path / "ref"))
    with torch.no_grad():
        ref_params = dict(reference.transformer.named_parameters())
        for name, p in trainer.transformer.named_parameters():
            value = p.float() if p.dtype == torch.float8_e4m3fn else p
            ref_params[name].copy_(value)
    a, b = trainer.training_step(0)["loss"], reference.training_step(0)["loss"]
    assert a == pytest.approx(b, rel=1e-5)


def test_gradient_accumulation_is_the_mean_of_its_micro_batches(mochi_cache: Path, tmp_path: Path) -> None:
    """accumulate=2 takes one optimizer step on the mean gradient of micro-batches 0 and 1."""
    accumulated = Trainer(
        _config(mochi_cache, tmp_path / "acc", gradient_accumulation_steps=2, weight_decay=0.0)
    )
    by_hand = Trainer(_config(mochi_cache, tmp_path / "hand", weight_decay=0.0))
    record = accumulated.training_step(0)
    parts = [by_hand.micro_step(m, 0, accumulate=2) for m in (0, 1)]
    by_hand.optimizer.step()
    assert record["loss"] == pytest.approx((parts[0]["loss"] + parts[1]["loss"]) / 2, rel=1e-6)
    assert record["adapter"] == f"{parts[0]['adapter']}+{parts[1]['adapter']}"
    for a, b in zip(accumulated.lora_params, by_hand.lora_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # the grads summed over two micro-batches equal 2 x the mean: check against the two grads alone
    one = Trainer(_config(mochi_cache, tmp_path / "one", weight_decay=0.0))
    grads = []
    for m in (0, 1):
        one.micro_step(m, 0)
        grads.append({id(p): p.grad.clone() for p in one.lora_params if p.grad is not None})
        one.optimizer.zero_grad(set_to_none=True)
    again = Trainer(_config(mochi_cache, tmp_path / "again", weight_decay=0.0))
    for m in (0, 1):
        again.micro_step(m, 0, accumulate=2)
    for p_one, p_again in zip(one.lora_params, again.lora_params, strict=True):
        expected = [g[id(p_one)] for g in grads if id(p_one) in g]
        if not expected:
            assert p_again.grad is None
        else:
            torch.testing.assert_close(p_again.grad, sum(expected) / 2, rtol=1e-5, atol=1e-8)


def test_auto_checkpointing_turns_on_at_the_papers_geometry() -> None:
    assert needs_checkpointing("auto", (12, 11, 60, 106), 1)  # Mochi 61x480x848
    assert not needs_checkpointing("auto", (12, 3, 4, 4), 1)  # tests
    assert needs_checkpointing("auto", (12, 1, 1, CHECKPOINTING_THRESHOLD), 1)
    assert needs_checkpointing(False, (12, 11, 60, 106), 1) is False


# ----------------------------------------------------------------------------- selective checkpointing


def test_checkpointed_blocks_are_spread_evenly_and_counted() -> None:
    assert checkpointed_indices(48, "all") == list(range(48))
    assert checkpointed_indices(48, 0.5) == list(range(0, 48, 2))
    assert checkpointed_indices(48, 12) == list(range(0, 48, 4))
    assert checkpointed_indices(4, 0.01) == [0]  # a fraction keeps at least one block
    assert checkpointed_indices(10, 3) == [0, 3, 6]
    with pytest.raises(ConfigError, match="has 4"):
        checkpointed_indices(4, 5)
    with pytest.raises(ConfigError, match="fraction must be in"):
        _config(Path("c"), Path("o"), checkpoint_blocks=1.5)
    with pytest.raises(ConfigError, match="at least 1 block"):
        _config(Path("c"), Path("o"), checkpoint_blocks=0)
    assert _config(Path("c"), Path("o"), checkpoint_blocks="0.25").checkpoint_blocks == 0.25
    assert _config(Path("c"), Path("o"), checkpoint_blocks="1.0").checkpoint_blocks == 1.0  # all, not one
    assert _config(Path("c"), Path("o"), checkpoint_blocks=3).checkpoint_blocks == 3


@pytest.mark.parametrize("setting, recomputed", [(1, [0]), ("all", [0, 1])])
def test_only_the_chosen_blocks_run_their_forward_again(
    setting: object, recomputed: list[int], mochi_cache: Path, tmp_path: Path
) -> None:
    """A checkpointed block runs its forward twice per step (forward + recompute), the others once;
    the gradients equal those without checkpointing."""
    plain = Trainer(_config(mochi_cache, tmp_path / "plain", gradient_checkpointing=False))
    some = Trainer(
        _config(mochi_cache, tmp_path / "some", gradient_checkpointing=True, checkpoint_blocks=setting)
    )
    blocks = transformer_blocks(some.transformer)
    calls = [0] * len(blocks)
    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    a, b = plain.micro_step(0, 0), some.micro_step(0, 0)
    assert calls == [2 if i in recomputed else 1 for i in range(len(blocks))]
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
    for p, q in zip(plain.lora_params, some.lora_params, strict=True):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------- 8-bit AdamW (CPU)


def test_adamw8bit_on_cpu_keeps_8bit_states_and_float32_weights() -> None:
    """bitsandbytes' CPU kernel: a least-squares fit converges, the moments are uint8 blocks."""
    pytest.importorskip("bitsandbytes")
    from dreamrelation.training.memory_savers import make_optimizer

    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.zeros(64, 128))  # 8192 elements: above bitsandbytes' 4096 floor
    target = torch.randn(64, 128)
    opt = make_optimizer(
        [weight], "adamw8bit", torch.device("cpu"), lr=0.05, weight_decay=0.0, betas=(0.9, 0.999)
    )
    reference = torch.nn.Parameter(torch.zeros(64, 128))
    ref_opt = torch.optim.AdamW([reference], lr=0.05, weight_decay=0.0)
    losses, ref_losses = [], []
    for _ in range(60):
        for w, o, record in ((weight, opt, losses), (reference, ref_opt, ref_losses)):
            loss = ((w - target) ** 2).mean()
            loss.backward()
            o.step()
            o.zero_grad()
            record.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert losses[-1] == pytest.approx(ref_losses[-1], rel=0.1)  # close to 32-bit AdamW's path
    state = opt.state[weight]
    assert state["state1"].dtype == torch.uint8 and state["state2"].dtype == torch.uint8
    assert weight.dtype == torch.float32
    moments = sum(v.numel() * v.element_size() for k, v in state.items() if k.startswith("state"))
    ref_moments = sum(v.numel() * v.element_size() for k, v in ref_opt.state[reference].items() if v.ndim)
    assert moments * 4 == ref_moments


def test_adamw8bit_trains_the_adapters_on_cpu(mochi_cache: Path, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    trainer = Trainer(_config(mochi_cache, tmp_path / "run", optimizer="adamw8bit"))
    assert isinstance(trainer.optimizer, bnb.optim.AdamW8bit)
    before = [p.detach().clone() for p in trainer.lora_params]
    record = trainer.training_step(0)
    assert math.isfinite(record["loss"])
    moved = [not torch.equal(a, p) for a, p in zip(before, trainer.lora_params, strict=True)]
    assert any(moved) and all(p.dtype == torch.float32 for p in trainer.lora_params)


# ----------------------------------------------------------------------------- fp16 loss scaling


def test_fp16_overflow_step_is_skipped_and_halves_the_scale(mochi_cache: Path, tmp_path: Path) -> None:
    trainer = Trainer(_config(mochi_cache, tmp_path / "run", mixed_precision="fp16", max_grad_norm=1.0))
    from dreamrelation.training.memory_savers import LossScaling

    assert trainer.loss_scaling is not None and trainer.loss_scaling.scale == 2.0**16
    trainer.loss_scaling = scaling = LossScaling(torch.device("cpu"), init_scale=2.0**8)
    assert trainer.training_step(0)["skipped"] == 0  # a clean step: AdamW state exists from here on
    # force an overflow: a scale so large that the scaled gradients exceed float16's range (65504)
    scaling.scaler.update(2.0**100)
    params = trainer.lora_params
    before = [p.detach().clone() for p in params]
    state = {id(p): {k: v.clone() for k, v in trainer.optimizer.state[p].items()} for p in params}
    lr = trainer.scheduler.get_last_lr()
    record = trainer.training_step(1)
    assert record["skipped"] == 1 and record["loss_scale"] == 2.0**99 and math.isfinite(record["loss"])
    for a, p in zip(before, params, strict=True):
        assert torch.equal(a, p) and p.dtype == torch.float32
        assert all(torch.equal(v, state[id(p)][k]) for k, v in trainer.optimizer.state[p].items())
    assert trainer.scheduler.get_last_lr() == lr  # the schedule waits for the skipped step
    # once the scale fits again (GradScaler halves it per skipped step), steps resume
    scaling.scaler.update(2.0**8)
    record = trainer.training_step(2)
    assert record["skipped"] == 0 and record["loss_scale"] == 2.0**8
    assert any(not torch.equal(a, p) for a, p in zip(before, params, strict=True))
    assert all(torch.isfinite(p).all() for p in params)


def test_fp16_steps_match_fp32_and_gradients_are_unscaled(mochi_cache: Path, tmp_path: Path) -> None:
    """Normal fp16 steps: gradients within 5% and losses within 1% of fp32, adapters within 30% of
    their update;
    the gradients the optimizer sees are the true ones (not scale x). Starting scale 2^8: at 2^16
    the tiny model's first steps overflow (λ_m = 50 makes large gradients) and are skipped."""
    from dreamrelation.training.memory_savers import LossScaling

    fp32 = Trainer(_config(mochi_cache, tmp_path / "fp32", weight_decay=0.0))
    fp16 = Trainer(_config(mochi_cache, tmp_path / "fp16", weight_decay=0.0, mixed_precision="fp16"))
    fp16.loss_scaling = LossScaling(torch.device("cpu"), init_scale=2.0**8)
    start = [p.detach().clone() for p in fp32.lora_params]
    fp32.micro_step(0, 0)
    fp16.micro_step(0, 0)
    fp16.loss_scaling.unscale_(fp16.optimizer)
    for p, q in zip(fp32.lora_params, fp16.lora_params, strict=True):
        if p.grad is not None:
            assert q.grad.dtype == torch.float32
            torch.testing.assert_close(q.grad, p.grad, rtol=0.05, atol=0.02 * p.grad.abs().max().item())
    for t in (fp32, fp16):
        t.optimizer.zero_grad(set_to_none=True)
        t.memory_bank = MemoryBank(t.config.loss.memory_bank_size)
    fp16.loss_scaling = LossScaling(torch.device("cpu"), init_scale=2.0**8)  # forget the unscale above
    a = [fp32.training_step(s) for s in range(3)]
    b = [fp16.training_step(s) for s in range(3)]
    assert not any(r["skipped"] for r in b)
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-2)
    # Adam's first steps move each element by about lr whatever its gradient's size, so fp16's
    # rounding of near-zero gradients shows in full: the adapters agree to 30% of their update
    for s, p, q in zip(start, fp32.lora_params, fp16.lora_params, strict=True):
        assert (q - p).norm() <= 0.3 * (p - s).norm() + 1e-7
        assert q.dtype == torch.float32


def test_non_finite_loss_is_still_an_error_under_fp16(mochi_cache: Path, tmp_path: Path) -> None:
    from dreamrelation.errors import TrainingError

    trainer = Trainer(_config(mochi_cache, tmp_path / "run", mixed_precision="fp16"))
    trainer.dataset.items[trainer.batch_indices(0)[0]].latents[0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingError, match="non-finite loss"):
        trainer.training_step(0)


# ----------------------------------------------------------------------------- accumulation = a bigger batch


def test_accumulating_k_micro_batches_equals_one_batch_of_k(mochi_cache: Path, tmp_path: Path) -> None:
    """batch 1 x 3 micro-batches and batch 3 x 1 see the same samples with the same draws (each
    sample's draws are keyed by its global place); without HMT and RCL (per-micro-batch adapter draws
    and memory-bank order differ by design) the updates agree."""
    same = {"loss.hybrid_masks": False, "loss.contrastive_weight": 0.0}
    accumulated = Trainer(_config(mochi_cache, tmp_path / "acc", gradient_accumulation_steps=3, **same))
    batched = Trainer(_config(mochi_cache, tmp_path / "batch", batch_size=3, **same))
    a = [accumulated.training_step(s) for s in range(2)]
    b = [batched.training_step(s) for s in range(2)]
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-5)
    # AdamW divides by sqrt(v): where a gradient is near zero, summing in another order (one torch
    # thread or two) moves an update by ~1e-7; 1e-6 is 0.25 % of what two steps at lr 2e-4 can move
    for p, q in zip(accumulated.lora_params, batched.lora_params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- schedule, posterior


def test_cosine_schedule_warms_up_then_decays_to_zero(mochi_cache: Path, tmp_path: Path) -> None:
    trainer = Trainer(
        _config(mochi_cache, tmp_path / "run", lr_schedule="cosine", warmup_steps=2, max_steps=10)
    )
    lrs = []
    for _ in range(10):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        trainer.scheduler.step()
    base = trainer.config.learning_rate
    expected = [base * s / 2 for s in range(2)] + [
        base * 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 10)
    ]
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_posterior_std_is_scaled_into_the_normalised_space(mochi_cache: Path) -> None:
    from safetensors.torch import load_file

    from dreamrelation.backbones.mochi import MochiBackbone

    item = load_file(str(next((mochi_cache / "items").glob("*.safetensors"))))
    assert item["latents_std"].shape == item["latents"].shape
    backbone = MochiBackbone.tiny(seed=0)
    video = torch.randint(0, 256, (1, 7, 16, 16, 3), generator=torch.Generator().manual_seed(0)).to(
        torch.uint8
    )
    mean, std = backbone.encode_video_posterior(video)
    # by hand: Mochi normalises (z - mean_c) / std_c * scaling_factor
    cfg = backbone.vae.config
    with torch.no_grad():
        dist = backbone.vae.encode(video.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0).latent_dist
    centre = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
    scale = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(mean, (dist.mean - centre) / scale * cfg.scaling_factor)
    torch.testing.assert_close(std, dist.std / scale * cfg.scaling_factor)


def test_latent_sampling_draws_from_the_cached_posterior(mochi_cache: Path, tmp_path: Path) -> None:
    trainer = Trainer(_config(mochi_cache, tmp_path / "run", latent_sampling="sample"))
    item = trainer.dataset.items[0]
    draws = torch.stack(
        [trainer.collate([0], torch.Generator().manual_seed(s))["latents"][0] for s in range(200)]
    )
    z = (draws - item.latents) / item.latents_std
    assert z.mean().abs() < 0.02 and (z.std() - 1).abs() < 0.02
    mean_trainer = Trainer(_config(mochi_cache, tmp_path / "mean"))
    assert torch.equal(mean_trainer.collate([0], torch.Generator())["latents"][0], item.latents)


# ----------------------------------------------------------------------------- the benchmark


def test_memory_benchmark_row_runs_the_real_trainer(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import memory

    cache = memory.write_synthetic_cache(tmp_path / "cache", "mochi-tiny")
    record = memory.run_row("checkpointing+fp8+offload", "mochi-tiny", "cpu", "float32", cache, 0, 2)
    assert record["status"] == "ok", record
    assert len(record["losses"]) == 2 and all(math.isfinite(v) for v in record["losses"])
    assert record["peak_bytes"] > 0 and record["seconds_per_step"] > 0
    report = {"about": "t", "machine": "m", "dtype": "float32", "warmup": 0, "steps": 2, "command": "c",
              "rows": [record, {"row": "plain", "status": "oom", "error": "CUDA out of memory"}]}  # fmt: skip
    table = memory.markdown(report)
    assert "| plain | oom: CUDA out of memory" in table and "1.00 |" in table


# ----------------------------------------------------------------------------- command line


def test_train_flags_switch_each_saver(mochi_cache: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dreamrelation.cli import app
    from dreamrelation.generation.lora_files import read_lora_metadata

    common = ["train", "--cache", str(mochi_cache), "--backbone", "mochi", "--model", "tiny"]
    common += ["--dtype", "float32", "--max-steps", "1"]
    flags = [
        "--gradient-checkpointing",
        "--fp8-base",
        "--block-offload",
        "--gradient-accumulation-steps",
        "2",
    ]
    flags += ["--set", "lr_schedule=cosine", "--set", "latent_sampling=sample"]
    result = CliRunner().invoke(app, [*common, "--output", str(tmp_path / "run"), *flags])
    assert result.exit_code == 0, result.output
    saved = read_lora_metadata(tmp_path / "run" / "relation_lora.safetensors")["dreamrelation.config"]
    assert saved["gradient_checkpointing"] is True and saved["fp8_base"] and saved["block_offload"]
    assert saved["gradient_accumulation_steps"] == 2 and saved["lr_schedule"] == "cosine"
    assert saved["latent_sampling"] == "sample"
    refused = CliRunner().invoke(app, [*common, "--output", str(tmp_path / "r2"), "--optimizer", "sgd"])
    assert refused.exit_code == 2 and "optimizer" in refused.output
