"""One pydantic config per command, loadable from YAML and validated before any work starts.

Defaults are the paper's settings (METHOD.md); official-code variants are options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dreamrelation.errors import ConfigError
from dreamrelation.safe_yaml import safe_yaml_load
from dreamrelation.training.adapter_config import SELECTABLE, TripletConfig
from dreamrelation.training.methods.settings import (
    LORA_METHODS,
    MethodName,
    MotionInversionConfig,
    ReVersionConfig,
    apply_method_defaults,
)

#: a seed torch's generators accept (64-bit; beyond it torch raises)
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
#: an AdamW beta: a decay factor in [0, 1)
Beta = Annotated[float, Field(ge=0, lt=1)]
#: an RGB channel
Channel = Annotated[int, Field(ge=0, le=255)]


class _Strict(BaseModel):
    # Unknown keys are typos more often than not: reject them. NaN and infinity are never a
    # setting (a `learning_rate: .inf` would train a LoRA of NaNs and exit 0).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSpec(_Strict):
    """Which backbone and which weights. ``model: tiny`` builds the tiny random config (tests)."""

    #: video backbone: mochi, wan, hunyuan (or toy, the toy world's)
    backbone: str = "mochi"
    #: hub id or local diffusers folder of the backbone's pipeline
    model: str = "genmo/mochi-1-preview"
    #: dtype of the frozen weights (LoRA weights always train in float32)
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    #: text tokens per prompt (None: the backbone's default: 256 Mochi/Hunyuan, 512 Wan)
    max_sequence_length: int | None = Field(None, gt=0, le=65536)


class DataSource(_Strict):
    """One dataset folder of exemplar videos."""

    #: dataset folder: <name>.mp4, <name>.txt captions, masks/<name>/NNNNN.png
    path: Path
    #: relation label; defaults to the folder's relation.txt or its name
    relation: str | None = None

    @field_validator("relation")
    @classmethod
    def _relation_is_a_plain_name(cls, value: str | None) -> str | None:
        from dreamrelation.files import safe_name

        return None if value is None else safe_name(value, "relation")


class VideoGeometry(_Strict):
    """Which frames of each video are encoded, and at what size."""

    #: frames per clip; must fit the VAE (Mochi 6k+1, Wan and HunyuanVideo 4k+1)
    num_frames: int = Field(61, gt=0)
    #: frame height after resize and centre crop (a multiple of 8)
    height: int = Field(480, gt=0)
    #: frame width after resize and centre crop (a multiple of 8)
    width: int = Field(848, gt=0)
    #: use every n-th frame of the video
    frame_stride: int = Field(1, gt=0)
    #: first video frame used
    start_frame: int = Field(0, ge=0)


class CacheConfig(_Strict):
    """`dreamrelation cache`: precompute latents, text embeddings and latent masks once."""

    model: ModelSpec = ModelSpec()
    #: one entry per dataset folder (several relations may share a cache)
    data: list[DataSource] = Field(min_length=1)
    #: cache folder to write (resumable: up-to-date items are skipped)
    output: Path
    video: VideoGeometry = VideoGeometry()
    #: relation mask M_R: "bbox" (paper: bounding rectangle of the union) or "sum" (official code)
    relation_mask: Literal["bbox", "sum"] = "bbox"
    #: RGB colour of each subject in the mask PNGs
    mask_colors: dict[str, tuple[Channel, Channel, Channel]] = Field(
        default_factory=lambda: {"subject1": (255, 0, 0), "subject2": (0, 255, 0)}
    )
    #: refuse videos without masks (HMT needs them)
    require_masks: bool = True
    #: encode with VAE tiling (less memory, slower)
    vae_tiling: bool = False
    #: device for encoding (None: cuda when available, else cpu)
    device: str | None = None


class LossConfig(_Strict):
    """Hybrid Mask Training and the relational contrastive loss (paper defaults)."""

    #: λ_m: weight of the masked region in the enhanced diffusion loss
    mask_weight: float = Field(50.0, ge=0, le=1e4)
    #: "paper": mean((λ_m·M + 1)·err²); "combined": mse + λ_m·mse(masked) (official code)
    mask_loss: Literal["paper", "combined"] = "paper"
    #: Hybrid Mask Training on/off (off: plain diffusion loss, all adapters every step)
    hybrid_masks: bool = True
    #: λ_1: weight of the relational contrastive loss (0 disables RCL)
    contrastive_weight: float = Field(0.01, ge=0, le=1e4)
    #: τ of the InfoNCE contrastive loss
    temperature: float = Field(0.07, ge=1e-4, le=100)
    #: positives per anchor: dynamics of other videos of the same relation
    num_positives: int = Field(4, gt=0)
    #: negatives per anchor: single-frame (appearance) features
    num_negatives: int = Field(10, gt=0)
    #: features kept per relation in the memory bank
    memory_bank_size: int = Field(64, gt=0)


class HmtConfig(_Strict):
    """How Hybrid Mask Training's LoRA selection treats the adapters (``loss.hybrid_masks`` turns it on)."""

    #: adapters not selected on a step: "frozen" (skipped in the forward pass, no gradient, so AdamW
    #: neither moves nor decays them) or "zero_scaled" (computed at scale 0 and kept in the optimizer,
    #: as in the authors' code: AdamW's momentum and weight decay move them on every step)
    inactive_adapters: Literal["frozen", "zero_scaled"] = "frozen"
    #: add a fourth draw that trains the inference combination (relation + FFN on the relation mask)
    inference_draw: bool = False


class TrainConfig(_Strict):
    """`dreamrelation train`: learn a relation from one or several caches."""

    model: ModelSpec = ModelSpec()
    #: cache folder(s) written by `dreamrelation cache`
    cache: list[Path] = Field(min_length=1)
    #: run folder: checkpoints, LoRA files, history, validation videos, logs
    output: Path
    #: what is trained (docs/baselines.md); each method brings its own defaults for unset fields
    method: MethodName = "dreamrelation"
    reversion: ReVersionConfig = ReVersionConfig()
    motion_inversion: MotionInversionConfig = MotionInversionConfig()
    lora: TripletConfig = TripletConfig()
    loss: LossConfig = LossConfig()
    hmt: HmtConfig = HmtConfig()
    #: training iterations (paper: 2400)
    max_steps: int = Field(2400, gt=0)
    #: videos per iteration and process
    batch_size: int = Field(1, gt=0)
    #: AdamW learning rate (kept from the checkpoint when resuming: changing it is refused)
    learning_rate: float = Field(2e-4, gt=0, le=1)
    #: AdamW weight decay
    weight_decay: float = Field(0.01, ge=0, le=1)
    #: AdamW betas
    adam_betas: tuple[Beta, Beta] = (0.9, 0.999)
    #: linear learning-rate warmup, then constant
    warmup_steps: int = Field(200, ge=0)
    #: clip the LoRA gradients to this norm (None: no clipping)
    max_grad_norm: float | None = Field(None, gt=0)
    #: probability of training a sample with the empty prompt (for CFG)
    caption_dropout: float = Field(0.1, ge=0, lt=1)
    #: "auto": on when the cached geometry is large (>= 4096 tokens per batch; the paper's 61x480x848)
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    #: with gradient checkpointing, which blocks recompute: "all", N blocks, or a fraction such as 0.5
    #: (spread evenly over the depth; fewer is faster and keeps more activations in memory)
    checkpoint_blocks: Literal["all"] | int | float = "all"
    #: "auto": "bf16" autocast on GPU (the paper's), "no" on CPU; "fp16": autocast with a dynamic loss scale
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    # ----- memory savers (docs/memory.md); none changes which adapters train
    #: store the frozen base in float8_e4m3fn, upcast per layer (diffusers layerwise casting)
    fp8_base: bool = False
    #: keep each block's frozen weights on the CPU, copy them to the GPU for its forward only
    block_offload: bool = False
    #: "adamw8bit": bitsandbytes 8-bit AdamW (CUDA; CPU with bitsandbytes >= 0.50)
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    #: micro-batches per optimizer step (effective batch = batch_size x this x processes)
    gradient_accumulation_steps: int = Field(1, gt=0)
    #: after warmup: "constant" (paper) or "cosine" decay to 0 at max_steps (official code)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    #: latents per step: the cached VAE posterior "mean" (paper) or a fresh "sample" (official code)
    latent_sampling: Literal["mean", "sample"] = "mean"
    #: image-to-video: learn the relation with each clip's first frame given as the condition (its
    #: latent frame kept clean and left out of the loss); backbones with an image-to-video form only
    first_frame: bool = False
    #: shard the frozen base across processes (FSDP2); adapters stay replicated (data parallel)
    fsdp: bool = False
    #: seed of the LoRA initialisation, data order, LoRA selection and noise: same seed, same run
    seed: Seed = 0
    #: save a resumable checkpoint every n steps (and at the end)
    checkpoint_every: int = Field(200, gt=0)
    #: how many of the newest checkpoints to keep
    keep_checkpoints: int = Field(2, gt=0)
    #: auto: continue from the newest intact checkpoint in output; never: start over
    resume: Literal["auto", "never"] = "auto"
    #: render validation_prompts every n steps (None: never)
    validation_every: int | None = None
    #: prompts rendered at validation (new subjects, the learned relation)
    validation_prompts: list[str] = Field(default_factory=list)
    #: sampling steps of the validation videos
    validation_steps: int = Field(64, ge=2)
    #: classifier-free guidance of the validation videos
    validation_guidance: float = Field(6.0, ge=0, le=100)
    #: the image every validation video starts from (image-to-video; needed on the backbones that have
    #: no text-to-video form, and optional on those with both, which validate from text without it)
    validation_image: Path | None = None
    #: log losses (and validation videos) to TensorBoard under <output>/
    tensorboard: bool = False
    #: log losses and validation videos to Weights & Biases (pip install wandb; key from WANDB_API_KEY)
    wandb: bool = False
    #: log to the trackers every n steps
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

    @model_validator(mode="after")
    def _hybrid_masks_need_an_adapter(self) -> TrainConfig:
        if not self.loss.hybrid_masks:
            if self.hmt.inference_draw:
                raise ValueError(
                    "hmt.inference_draw is a draw of hybrid mask training; set loss.hybrid_masks: true"
                )
            return self
        if self.method not in LORA_METHODS:
            raise ValueError(
                f"method {self.method} has no LoRA adapters for hybrid mask training to select; "
                "set loss.hybrid_masks: false (its default)"
            )
        if not any(adapter in SELECTABLE for adapter in self.lora.present()):
            raise ValueError(
                "hybrid_masks needs at least one of relation/subject1/subject2 in lora.placement"
            )
        if self.hmt.inference_draw and "relation" not in self.lora.present():
            raise ValueError("hmt.inference_draw trains the relation LoRA; add relation to lora.placement")
        return self

    @model_validator(mode="after")
    def _reversion_prompts_use_the_token(self) -> TrainConfig:
        token = self.reversion.token
        unused = [p for p in self.validation_prompts if token not in p] if self.method == "reversion" else []
        if unused:
            raise ValueError(
                f"validation prompt {unused[0]!r} does not use the relation token; write the relation as "
                f"{token}, e.g. 'A dog {token} a cat.'"
            )
        return self

    @model_validator(mode="after")
    def _fsdp_alone(self) -> TrainConfig:
        if self.fsdp and (self.block_offload or self.fp8_base):
            raise ValueError("fsdp shards the base already: set block_offload: false and fp8_base: false")
        if self.fsdp and self.validation_every:
            raise ValueError("fsdp: validation sampling runs on one process; set validation_every: null")
        return self

    @field_validator("checkpoint_blocks", mode="before")
    @classmethod
    def _checkpoint_blocks_text(cls, value: object) -> object:
        # from the command line every value is text: "1.0" is the fraction 1 (all), "1" one block
        if isinstance(value, str) and value != "all":
            try:
                return float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                return value  # pydantic names the setting and the choices
        return value

    @model_validator(mode="after")
    def _checkpoint_blocks_range(self) -> TrainConfig:
        value = self.checkpoint_blocks
        if isinstance(value, float) and not 0 < value <= 1:
            raise ValueError(f"checkpoint_blocks: a fraction must be in (0, 1], got {value}")
        if isinstance(value, int) and value < 1:
            raise ValueError(
                f"checkpoint_blocks: give at least 1 block (or gradient_checkpointing: false), got {value}"
            )
        return self


class GenerateConfig(_Strict):
    """`dreamrelation generate`: render a relation for new subjects with the inference LoRA."""

    model: ModelSpec = ModelSpec()
    #: relation_lora.safetensors from `dreamrelation train` (None: the base model)
    lora: Path | None = None
    #: one video per prompt (or give prompt_file instead)
    prompts: list[str] = Field(default_factory=list)
    #: a prompt set to render instead: JSON/JSONL file, or "paper" (the shipped evaluation set);
    #: each prompt with its own seed, into output/ with a manifest.json that `evaluate` reads
    prompt_file: str | None = None
    #: with prompt_file: keep only these relations (comma-separated names, NTU codes or ids)
    relations: str | None = None
    #: folder for the MP4s and GIF previews
    output: Path
    #: sampling steps (paper: 64; at least 2: Mochi's linear-quadratic schedule needs two)
    num_inference_steps: int = Field(64, ge=2)
    #: classifier-free guidance (paper: 6.0)
    guidance_scale: float = Field(6.0, ge=0, le=100)
    #: frames per video; must fit the VAE (Mochi 6k+1, Wan and HunyuanVideo 4k+1)
    num_frames: int = Field(61, gt=0)
    #: video height (a multiple of 8)
    height: int = Field(480, gt=0)
    #: video width (a multiple of 8)
    width: int = Field(848, gt=0)
    #: seed of the initial noise of every video: same seed, same video
    seed: Seed = 0
    #: strength of the LoRA (1.0: as trained)
    lora_scale: float = Field(1.0, ge=-100, le=100)
    #: backbones that also generate sound (LTX-2): write it as NN-slug.wav beside each video
    audio: bool = True
    #: image-to-video: a still image (PNG/JPEG) as the first frame, with the aspect ratio of
    #: height:width; backbones with an image-to-video form only (None: text-to-video)
    image: Path | None = None
    #: fuse the LoRA into the weights before sampling (faster, same result)
    fuse: bool = False
    #: frame rate of the written videos
    fps: int = Field(30, gt=0)
    #: device for sampling (None: cuda when available, else cpu)
    device: str | None = None
    # ----- memory (docs/memory.md)
    #: move each model to the GPU only while it runs (diffusers enable_model_cpu_offload; CUDA only)
    cpu_offload: bool = False
    #: decode the video in overlapping spatial tiles
    vae_tiling: bool = False
    #: decode one batch item at a time
    vae_slicing: bool = False

    @model_validator(mode="after")
    def _one_prompt_source(self) -> GenerateConfig:
        if bool(self.prompts) == bool(self.prompt_file):
            raise ValueError("give either prompts (--prompt) or a prompt_file (--prompts FILE), not both")
        return self


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The YAML error in one line: the problem and where it is."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def load_config(
    cls: type[ConfigT],
    path: str | Path | None = None,
    *,
    sets: Mapping[str, object] | None = None,
    **overrides: object,
) -> ConfigT:
    """Read YAML (safe loader, no code), apply overrides, validate; errors name the file or flag.

    Precedence, lowest first: the model's defaults, the YAML file, ``overrides`` (the named flags;
    None means "not given"), ``sets`` (``--set key.path=value``, where None is an explicit null).
    Keys are dotted paths (``lora.rank``); a value replaces what the file had at that key.
    """
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = safe_yaml_load(path.read_text(encoding="utf-8-sig")) or {}
        except UnicodeDecodeError as exc:
            where = f"{exc.reason} at byte {exc.start}"
            raise ConfigError(f"{path}: not UTF-8 text ({where}); save it as UTF-8") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings")
    given = {key: value for key, value in overrides.items() if value is not None}
    given.update(sets or {})
    for key, value in given.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value

    def source(key: str) -> str:
        """Where a bad value came from: a flag (named by its key) or the file."""
        flagged = any(key == k or key.startswith(f"{k}.") for k in given)
        return "" if flagged or path is None else f"{path}: "

    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, cls, source)) from exc


def describe_validation_error(
    exc: ValidationError,
    cls: type[BaseModel] | None = None,
    source: Callable[[str], str] | None = None,
) -> str:
    """pydantic's errors as one line: ``setting.path: problem`` for each, unknown keys named so
    (with the nearest valid keys of ``cls``); ``source(key)`` prefixes where the value came from."""
    from dreamrelation.config_keys import unknown_key_message

    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "config"
        prefix = source(where) if source is not None else ""
        if not error["loc"] and error["type"] == "value_error":
            # a check across settings (a model validator): its message names them, and echoing the
            # whole config as the "input" would bury it
            parts.append(f"{prefix}{error.get('ctx', {}).get('error', error['msg'])}")
        elif error["type"] == "extra_forbidden":
            if cls is not None:
                parts.append(f"{prefix}{unknown_key_message(cls, where)}")
            else:
                parts.append(f"{prefix}{where}: unknown setting (every key is listed in docs/config.md)")
        else:
            if "key" in where.rsplit(".", 1)[-1]:  # a key where its variable's name belongs: not echoed
                parts.append(
                    f"{prefix}{where}: give the NAME of the environment variable that holds the key "
                    "(e.g. DASHSCOPE_API_KEY), not the key itself (value not shown)"
                )
                continue
            parts.append(f"{prefix}{where}: {error['msg']} (got {_capped(repr(error.get('input')))})")
    return "; ".join(parts)


def _capped(text: str, limit: int = 120) -> str:
    """An echoed value, cut short: an error line names the value, it does not reprint a file."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def dump_config(config: BaseModel) -> str:
    """The config as JSON text (stored in checkpoints and LoRA metadata)."""
    return config.model_dump_json()
