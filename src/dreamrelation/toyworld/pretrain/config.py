"""`dreamrelation toy pretrain`'s settings (:class:`PretrainConfig`) and its checks before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dreamrelation.errors import ConfigError, InputError
from dreamrelation.files import check_output_dir
from dreamrelation.toyworld.backbone import (
    TRANSFORMER_SIZES,
)
from dreamrelation.toyworld.world import (
    GENERIC_MOTIONS,
)


class PretrainConfig(BaseModel):
    """Every knob of the pretraining run (defaults: the recipe of the shipped weights)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    #: the pipeline folder to write (the shipped one is backbone.SHIPPED_WEIGHTS)
    output: Path
    #: a saved toy pipeline folder to continue training from (a further stage); None: random weights
    init_from: Path | None = None
    #: transformer size: a key of backbone.TRANSFORMER_SIZES
    size: str = "base"
    #: a trained learned codec folder (`dreamrelation toy codec train`): the transformer then trains in
    #: its latent space (frozen) and the saved pipeline carries it; None: the exact codec
    codec: Path | None = None
    #: optimizer steps (with time_budget_s: the most; the budget sets the rest)
    steps: int = Field(4500, gt=0)
    #: train for about this many seconds: the schedule's length is set from the throughput of the
    #: first steps, so candidates can be compared at equal wall time on one machine
    time_budget_s: float | None = Field(None, gt=0)
    #: clips per step
    batch_size: int = Field(8, gt=0)
    #: peak AdamW learning rate
    learning_rate: float = Field(2e-3, gt=0)
    #: learning rate at the end of the cosine decay
    min_learning_rate: float = Field(1e-4, ge=0)
    #: linear warmup steps
    warmup_steps: int = Field(200, ge=0)
    #: AdamW weight decay
    weight_decay: float = Field(0.01, ge=0)
    #: AdamW betas
    adam_betas: tuple[float, float] = (0.9, 0.99)
    #: clip the gradient to this norm
    max_grad_norm: float = Field(1.0, gt=0)
    #: EMA decay of the saved weights (0 disables the EMA)
    ema_decay: float = Field(0.995, ge=0, lt=1)
    #: probability of training a clip with the empty prompt (for CFG)
    caption_dropout: float = Field(0.1, ge=0, lt=1)
    #: probability that a clip's caption keeps only its subjects and background, its motion words
    #: replaced by random words no toy caption uses (pretrain.context_noise_caption): the subjects'
    #: tokens then meet unseen neighbours in pretraining, as they do in relation prompts
    caption_context_noise: float = Field(0.0, ge=0, lt=1)
    #: shift of the noise levels towards noise (1: uniform noise levels)
    sigma_shift: float = Field(3.0, ge=1)
    #: generic motions trained on (relations are held out)
    motions: tuple[str, ...] = tuple(GENERIC_MOTIONS)
    #: seed of weights, clips, captions and noise
    seed: int = 0
    #: "auto": bf16 autocast only where the hardware computes bf16 natively (a CUDA GPU with bf16,
    #: a CPU with AMX or AVX512-BF16); on an AVX2-only CPU bf16 is ~10x slower than float32.
    autocast: Literal["auto", "bf16", "off"] = "auto"
    #: "auto": cuda when available, else cpu; or cpu, cuda, cuda:1 ...
    device: str = "auto"
    #: processes rendering the training clips ahead of the model (0: render in the training loop)
    workers: int = Field(0, ge=0)
    #: dtype of the saved transformer weights: float16 keeps the shipped folder under 20 MB
    save_dtype: Literal["float32", "float16"] = "float16"
    #: torch CPU threads (None: torch's default). On a shared machine 1 is often fastest.
    threads: int | None = None
    #: seconds between checkpoints into OUTPUT/checkpoint (the same command run again resumes there)
    checkpoint_every_s: float = Field(300.0, gt=0)
    #: stop after this many steps in this invocation, checkpoint, and return unfinished (the same
    #: command run again continues); None: run to the end
    run_steps: int | None = Field(None, gt=0)
    #: stop this invocation after about this many seconds of training, checkpoint, and return
    #: unfinished (the same command run again continues); None: no limit
    run_time_s: float | None = Field(None, gt=0)

    @field_validator("size")
    @classmethod
    def _known_size(cls, size: str) -> str:
        if size not in TRANSFORMER_SIZES:
            raise ValueError(
                f"unknown toy transformer size {size!r}; choose one of {tuple(TRANSFORMER_SIZES)}"
            )
        return size

    @field_validator("codec")
    @classmethod
    def _codec_folder(cls, codec: Path | None) -> Path | None:
        if codec is not None and not (Path(codec) / "config.json").is_file():
            raise ValueError(
                f"{codec} holds no codec (no config.json); "
                "pass a folder written by `dreamrelation toy codec train`"
            )
        return codec

    @model_validator(mode="after")
    def _one_codec(self) -> PretrainConfig:
        if self.codec is not None and self.init_from is not None:
            raise ValueError("codec: a stage continued with init_from keeps that folder's codec; drop codec")
        return self

    @field_validator("motions")
    @classmethod
    def _generic_only(cls, motions: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in motions if m not in GENERIC_MOTIONS]
        if unknown:
            raise ValueError(
                f"pretraining uses generic motions only; {unknown} are not in {tuple(GENERIC_MOTIONS)}"
            )
        return motions


def preflight(values: dict[str, Any]) -> None:
    """`dreamrelation toy pretrain`: settings, device, --init-from and --output, before any work."""
    from pydantic import ValidationError

    from dreamrelation.config import describe_validation_error

    try:
        config = PretrainConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    if config.device != "auto":
        try:
            device = torch.device(config.device)
        except RuntimeError as exc:
            raise ConfigError(f"--device: {exc}; use auto, cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {config.device}: no CUDA GPU is available here; use --device cpu")
    if config.init_from is not None and not (Path(config.init_from) / "model_index.json").is_file():
        raise InputError(
            config.init_from,
            "not a saved toy pipeline folder (no model_index.json)",
            "pass a folder written by `dreamrelation toy pretrain`",
        )
    check_output_dir(config.output, "pretraining output")
