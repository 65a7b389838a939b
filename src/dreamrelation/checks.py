"""Checks that run before any model loads, so a user's mistake costs seconds and leaves nothing behind.

Every check raises the project's errors (one line naming the file or setting and the fix); the CLI
turns them into exit code 2. The commands call :func:`preflight_cache`, :func:`preflight_train` and
:func:`preflight_generate` right after their config is validated.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamrelation.errors import ConfigError, InputError

if TYPE_CHECKING:
    from dreamrelation.backbones import Backbone
    from dreamrelation.config import CacheConfig, GenerateConfig, ModelSpec, TrainConfig

LOCK_FILE = ".dreamrelation.lock"
#: training settings that a resumed run takes from its checkpoint (optimizer / scheduler state)
OPTIMIZER_SETTINGS = ("learning_rate", "weight_decay", "adam_betas", "warmup_steps")


# ----- model and geometry -----------------------------------------------------------------------
def check_backbone(spec: ModelSpec) -> type[Backbone]:
    """The backbone class named by the config, or a ConfigError listing the choices."""
    from dreamrelation.backbones import backbone_class

    try:
        return backbone_class(spec.backbone)
    except ValueError as exc:
        raise ConfigError(f"model.backbone: {exc}") from None


def check_streams(cls: type[Backbone], streams: Sequence[str] | None) -> None:
    unknown = [s for s in streams or [] if s not in cls.streams]
    if unknown:
        raise ConfigError(
            f"lora.streams: {cls.name} has no stream(s) {unknown}; choose from {', '.join(cls.streams)}"
        )


def check_geometry(cls: type[Backbone], num_frames: int, height: int, width: int, where: str = "") -> None:
    """Frame count and size that the backbone's VAE can encode (its frame rule, its spatial factor)."""
    from dreamrelation.masks import temporal_groups

    try:
        temporal_groups(num_frames, cls.temporal_factor, cls.first_frame_alone)
    except ValueError as exc:
        raise ConfigError(f"{where}num_frames: {cls.name}: {exc}") from None
    factor = cls.spatial_factor
    if height % factor or width % factor:
        raise ConfigError(
            f"{where}height/width: {cls.name} needs multiples of {factor}; got {height}x{width} "
            f"(e.g. {height - height % factor or factor}x{width - width % factor or factor})"
        )


# ----- output folders ---------------------------------------------------------------------------
def check_output_dir(path: str | Path, what: str = "output") -> None:
    """``path`` is (or can become) a writable folder; checked before any work so nothing is lost."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(path, f"the {what} path is a file, not a folder", "choose a folder path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(existing, f"the {what} path goes through a file", "choose a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(existing, f"the {what} folder is not writable", "choose a folder you can write to")


# ----- caches -----------------------------------------------------------------------------------
def read_manifest(root: str | Path) -> dict[str, Any]:
    """A cache folder's manifest, checked: readable JSON, its item files and null prompt present."""
    root = Path(root)
    path = root / "manifest.json"
    fix = "re-run `dreamrelation cache` for this data"
    if not path.is_file():
        raise InputError(path, "no cache manifest", fix)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        items = manifest["items"]
        files = [root / entry["file"] for entry in items]
        manifest["backbone"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"the cache manifest is damaged ({type(exc).__name__}: {exc})", fix) from None
    for file in [*files, root / "null_prompt.safetensors"]:
        if not file.is_file():
            raise InputError(file, "a cached file is missing", fix)
    return manifest


def check_cache_matches_model(caches: Sequence[Path], spec: ModelSpec) -> None:
    """Every cache was encoded by the model that will be trained (same backbone and weights)."""
    for root in caches:
        manifest = read_manifest(root)
        if manifest["backbone"] != spec.backbone:
            raise ConfigError(
                f"{root}: the cache was made with backbone {manifest['backbone']}, training uses "
                f"{spec.backbone}; re-run `dreamrelation cache --backbone {spec.backbone}` or train with "
                f"--backbone {manifest['backbone']}"
            )
        cached_model = manifest.get("model")
        if cached_model is not None and not _same_model(cached_model, spec.model):
            raise ConfigError(
                f"{root}: the cache was made with --model {cached_model}, training uses --model "
                f"{spec.model}; latents and text embeddings differ between models: re-run "
                f"`dreamrelation cache --model {spec.model}` or train with --model {cached_model}"
            )


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


# ----- resuming ---------------------------------------------------------------------------------
def check_resume(config: TrainConfig) -> None:
    """A run resumed from its newest checkpoint must not silently ignore what the user changed."""
    from dreamrelation.checkpoint import STATE_FILE, list_checkpoints

    if config.resume != "auto":
        return
    found = list_checkpoints(Path(config.output) / "checkpoints")
    if not found:
        return
    try:
        state = json.loads((found[-1] / STATE_FILE).read_text())
        saved, step = state["config"], int(state["step"])
    except (ValueError, KeyError, TypeError):
        return  # a damaged checkpoint: the trainer falls back to an intact one and says so
    now = json.loads(config.model_dump_json())
    changed = [key for key in OPTIMIZER_SETTINGS if key in saved and saved[key] != now[key]]
    if changed:
        diffs = ", ".join(f"{k} {saved[k]} -> {now[k]}" for k in changed)
        raise ConfigError(
            f"{config.output}: resuming from {found[-1].name}, whose optimizer was trained with different "
            f"settings ({diffs}); a resumed run keeps the checkpoint's. Use the checkpoint's values, "
            "another --output, or resume: never to start over"
        )
    if step > config.max_steps:
        raise ConfigError(
            f"{config.output}: the newest checkpoint is at step {step}, beyond max_steps {config.max_steps}; "
            f"raise --max-steps to at least {step} or use another --output"
        )


@contextmanager
def output_lock(output: str | Path) -> Iterator[Path]:
    """Refuse a second `train` on the same output folder while the first one runs.

    The lock file holds the owner's pid; one left by a process that died is taken over. Under
    torchrun / accelerate only global rank 0 takes it (its peers are the same run).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) != 0:
        yield output / LOCK_FILE
        return
    lock = output / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _alive(owner):
                raise ConfigError(
                    f"{output}: another `dreamrelation train` (pid {owner}) is writing to this folder; "
                    "wait for it, stop it, or use another --output"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its owner is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        break
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----- one call per command ---------------------------------------------------------------------
def preflight_cache(config: CacheConfig) -> None:
    cls = check_backbone(config.model)
    geo = config.video
    check_geometry(cls, geo.num_frames, geo.height, geo.width, "video.")
    check_output_dir(config.output, "cache output")


def preflight_train(config: TrainConfig) -> None:
    cls = check_backbone(config.model)
    check_streams(cls, config.lora.streams)
    check_output_dir(config.output, "training output")
    check_cache_matches_model(config.cache, config.model)
    check_resume(config)
    from dreamrelation.trackers import check_trackers

    check_trackers(config)


def preflight_generate(config: GenerateConfig) -> None:
    cls = check_backbone(config.model)
    check_geometry(cls, config.num_frames, config.height, config.width)
    check_output_dir(config.output, "video output")
    if config.lora is not None:
        from dreamrelation.lora_io import read_inference_lora

        _, meta = read_inference_lora(config.lora)
        trained_on = meta.get("dreamrelation.backbone")
        if trained_on is not None and trained_on != cls.name:
            problem = f"was trained on {trained_on}, not {cls.name}"
            raise InputError(config.lora, problem, f"use --backbone {trained_on}")


def subjects_present(frame_masks: Any, where: Path, colors: Sequence[Sequence[int]]) -> None:
    """Each subject appears in at least one frame (a clip cached with an empty mask would train the
    subject LoRA on nothing and silently zero the relation mask)."""
    for index, name in enumerate(("subject1", "subject2")):
        if not bool(frame_masks[index].any()):
            raise InputError(
                where,
                f"{name} (colour {tuple(colors[index])}) is absent from every mask frame of this clip",
                "re-run mask extraction for this clip, or remove the clip from the dataset",
            )


def disk_full_message(exc: OSError) -> str | None:
    """One line for the OS errors a user fixes outside the program (space, permissions)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # name the file being written, not our temporary copy of it (files.atomic_target's
        # .NAME.tmp-PID-RANDOM[.ext], and atomic_folder's .NAME.tmp-PID-RANDOM/ holding the files)
        temporary = r"(^|/)\.([^/]+?)\.tmp(-\d+(-[0-9a-f]+)?)?(\.\w+)?(?=/|$)"
        target = re.sub(temporary, r"\1\2", str(exc.filename or ""))
        where = f" while writing {target}" if target else ""
        return f"the disk is full{where}; free some space and run the command again (it resumes)"
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"{exc.filename or 'a file'}: permission denied ({exc.strerror}); choose a writable path"
    return None


def check_lora_fits(state: dict[str, Any], transformer: Any, path: Path) -> None:
    """Every module of an inference LoRA exists in this transformer with matching in/out sizes."""
    sizes = {}
    for name, module in transformer.named_modules():
        base = getattr(module, "base_layer", module)
        if hasattr(base, "in_features") and hasattr(base, "out_features"):
            sizes[name.replace(".base_layer", "")] = (base.in_features, base.out_features)
    fix = "generate with the model (and size) the LoRA was trained on"
    for key, a in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
        b = state[key.replace(".lora_A.", ".lora_B.")]
        if module not in sizes:
            raise InputError(path, f"the LoRA adapts {module}, which this model does not have", fix)
        if (a.shape[1], b.shape[0]) != sizes[module]:
            raise InputError(
                path,
                f"{module}: the LoRA maps {a.shape[1]} -> {b.shape[0]} features, the model's layer "
                f"{sizes[module][0]} -> {sizes[module][1]}",
                fix,
            )


def preflight_toy_pretrain(values: dict[str, Any]) -> None:
    """`dreamrelation toy pretrain`: settings, device, --init-from and --output, before any work."""
    import torch
    from pydantic import ValidationError

    from dreamrelation.config import describe_validation_error
    from dreamrelation.toyworld.pretrain import PretrainConfig

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
