"""One pydantic config per command, loadable from YAML and validated before any work starts.

Defaults are the paper's settings (METHOD.md); official-code variants are options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dreamrelation.adapters import TripletConfig
from dreamrelation.errors import ConfigError
from dreamrelation.methods.settings import (
    MethodName,
    MotionInversionConfig,
    ReVersionConfig,
    apply_method_defaults,
)


class _Strict(BaseModel):
    # Unknown keys are typos more often than not: reject them.
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """Which backbone and which weights. ``model: tiny`` builds the tiny random config (tests)."""

    backbone: str = "mochi"
    model: str = "genmo/mochi-1-preview"
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    max_sequence_length: int | None = None


class DataSource(_Strict):
    path: Path
    #: relation label; defaults to the folder's relation.txt or its name
    relation: str | None = None


class VideoGeometry(_Strict):
    num_frames: int = Field(61, gt=0)
    height: int = Field(480, gt=0)
    width: int = Field(848, gt=0)
    frame_stride: int = Field(1, gt=0)
    start_frame: int = Field(0, ge=0)


class CacheConfig(_Strict):
    """`dreamrelation cache`: precompute latents, text embeddings and latent masks once."""

    model: ModelSpec = ModelSpec()
    data: list[DataSource]
    output: Path
    video: VideoGeometry = VideoGeometry()
    #: relation mask M_R: "bbox" (paper: bounding rectangle of the union) or "sum" (official code)
    relation_mask: Literal["bbox", "sum"] = "bbox"
    mask_colors: dict[str, tuple[int, int, int]] = Field(
        default_factory=lambda: {"subject1": (255, 0, 0), "subject2": (0, 255, 0)}
    )
    require_masks: bool = True
    vae_tiling: bool = False
    device: str | None = None


class LossConfig(_Strict):
    #: λ_m: weight of the masked region in the enhanced diffusion loss
    mask_weight: float = Field(50.0, ge=0)
    #: "paper": mean((λ_m·M + 1)·err²); "combined": mse + λ_m·mse(masked) (official code)
    mask_loss: Literal["paper", "combined"] = "paper"
    #: Hybrid Mask Training on/off (off: plain diffusion loss, all adapters every step)
    hybrid_masks: bool = True
    #: λ_1: weight of the relational contrastive loss (0 disables RCL)
    contrastive_weight: float = Field(0.01, ge=0)
    temperature: float = Field(0.07, gt=0)
    num_positives: int = Field(4, gt=0)
    num_negatives: int = Field(10, gt=0)
    memory_bank_size: int = Field(64, gt=0)


class TrainConfig(_Strict):
    """`dreamrelation train`: learn a relation from one or several caches."""

    model: ModelSpec = ModelSpec()
    cache: list[Path]
    output: Path
    #: what is trained (docs/baselines.md); each method brings its own defaults for unset fields
    method: MethodName = "dreamrelation"
    reversion: ReVersionConfig = ReVersionConfig()
    motion_inversion: MotionInversionConfig = MotionInversionConfig()
    lora: TripletConfig = TripletConfig()
    loss: LossConfig = LossConfig()
    max_steps: int = Field(2400, gt=0)
    batch_size: int = Field(1, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(200, ge=0)
    max_grad_norm: float | None = None
    caption_dropout: float = Field(0.1, ge=0, lt=1)
    gradient_checkpointing: bool = False
    #: "no" on CPU; "bf16" autocast on GPU (the paper's setting)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    seed: int = 0
    checkpoint_every: int = Field(200, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    resume: Literal["auto", "never"] = "auto"
    validation_every: int | None = None
    validation_prompts: list[str] = Field(default_factory=list)
    validation_steps: int = Field(64, gt=0)
    validation_guidance: float = 6.0
    tensorboard: bool = False
    log_every: int = Field(1, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: object) -> object:
        return apply_method_defaults(data)

    @model_validator(mode="after")
    def _validation_needs_prompts(self) -> TrainConfig:
        if self.validation_every and not self.validation_prompts:
            raise ValueError("validation_every is set but validation_prompts is empty")
        return self


class GenerateConfig(_Strict):
    """`dreamrelation generate`: render a relation for new subjects with the inference LoRA."""

    model: ModelSpec = ModelSpec()
    lora: Path | None = None
    prompts: list[str] = Field(default_factory=list)
    #: a prompt set to render instead: JSON/JSONL file, or "paper" (the shipped evaluation set);
    #: each prompt with its own seed, into output/ with a manifest.json that `evaluate` reads
    prompt_file: str | None = None
    #: with prompt_file: keep only these relations (comma-separated names, NTU codes or ids)
    relations: str | None = None
    output: Path
    num_inference_steps: int = Field(64, gt=0)
    guidance_scale: float = 6.0
    num_frames: int = Field(61, gt=0)
    height: int = Field(480, gt=0)
    width: int = Field(848, gt=0)
    seed: int = 0
    lora_scale: float = 1.0
    fuse: bool = False
    fps: int = Field(30, gt=0)
    device: str | None = None

    @model_validator(mode="after")
    def _one_prompt_source(self) -> GenerateConfig:
        if bool(self.prompts) == bool(self.prompt_file):
            raise ValueError("give either prompts (--prompt) or a prompt_file (--prompts FILE), not both")
        return self


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def load_config(cls: type[ConfigT], path: str | Path | None = None, **overrides: object) -> ConfigT:
    """Read YAML (safe loader, no code), apply non-None overrides, validate; errors name the file."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings")
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}invalid {cls.__name__}:\n{exc}") from exc


def dump_config(config: BaseModel) -> str:
    """The config as JSON text (stored in checkpoints and LoRA metadata)."""
    return config.model_dump_json()
