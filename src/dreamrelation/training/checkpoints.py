"""Training checkpoints as safetensors + JSON, written atomically, never pickled.

A checkpoint folder holds the adapters, the optimizer and LR-scheduler state, every RNG state,
the RCL memory bank (one per process) and the step. It is assembled in a temporary folder and
renamed into place (:func:`dreamrelation.files.atomic_folder`), so a kill at any moment leaves either
the old or the new checkpoint.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file

from dreamrelation.errors import ConfigError, InputError
from dreamrelation.files import atomic_folder, save_tensors

if TYPE_CHECKING:
    from dreamrelation.config import TrainConfig

STATE_FILE = "state.json"


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into flat tensors and JSON-able structure."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "python": _jsonable(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def save_checkpoint(
    directory: Path,
    *,
    adapters: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    memory_banks: dict[int, dict[str, torch.Tensor]],
    state: dict[str, Any],
) -> Path:
    """Write everything into ``directory`` atomically (:func:`~dreamrelation.files.atomic_folder`)."""
    with atomic_folder(directory) as tmp:
        _write_checkpoint_files(tmp, adapters, optimizer, scheduler, memory_banks, state)
    return Path(directory)


def _write_checkpoint_files(
    tmp: Path,
    adapters: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    memory_banks: dict[int, dict[str, torch.Tensor]],
    state: dict[str, Any],
) -> None:
    save_tensors(adapters, str(tmp / "adapters.safetensors"))
    opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
    save_tensors(opt_tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
    (tmp / "scheduler.json").write_text(json.dumps(scheduler.state_dict()))
    for rank, bank in memory_banks.items():
        save_tensors(bank, str(tmp / f"memory_bank.rank{rank}.safetensors"))
    rng_tensors, rng_meta = rng_state()
    save_tensors(rng_tensors, str(tmp / "rng.safetensors"))
    (tmp / "rng.json").write_text(json.dumps(rng_meta))
    (tmp / STATE_FILE).write_text(json.dumps(state))


def load_checkpoint(directory: Path, rank: int = 0) -> dict[str, Any]:
    directory = Path(directory)
    if not (directory / STATE_FILE).is_file():
        raise InputError(
            directory, "not a complete checkpoint (no state.json)", "delete it or pick another one"
        )
    return {
        "adapters": load_file(str(directory / "adapters.safetensors")),
        "optimizer": optimizer_from_tensors(
            load_file(str(directory / "optimizer.safetensors")),
            json.loads((directory / "optimizer.json").read_text()),
        ),
        "scheduler": json.loads((directory / "scheduler.json").read_text()),
        "memory_bank": load_file(str(directory / f"memory_bank.rank{rank}.safetensors")),
        "rng": (
            load_file(str(directory / "rng.safetensors")),
            json.loads((directory / "rng.json").read_text()),
        ),
        "state": json.loads((directory / STATE_FILE).read_text()),
    }


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temp folders are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def load_newest_intact(found: list[Path], rank: int = 0) -> tuple[dict[str, Any], list[Path]]:
    """Load the newest checkpoint of ``found`` (oldest first) that reads back whole and finite.

    A damaged one (unreadable file, NaN/inf adapter or optimizer values) is skipped with a message
    on stderr naming it. Returns the checkpoint and ``found`` cut after the one used.
    """
    for index in range(len(found) - 1, -1, -1):
        directory = found[index]
        try:
            ckpt = load_checkpoint(directory, rank)
            problem = _non_finite(ckpt)
        except Exception as exc:  # noqa: BLE001 - any read failure means "damaged"
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        if problem is None:
            return ckpt, found[: index + 1]
        older = f"falling back to {found[index - 1].name}" if index else "no older checkpoint is left"
        sys.stderr.write(f"warning: checkpoint {directory} is damaged ({problem}); {older}\n")
    raise InputError(
        found[-1].parent,
        "every checkpoint is damaged",
        "delete the checkpoints folder to start over, or set resume: never",
    )


def _non_finite(ckpt: dict[str, Any]) -> str | None:
    for group in ("adapters",):
        for key, value in ckpt[group].items():
            if not torch.isfinite(value).all():
                return f"{key} holds NaN or infinite values"
    for index, values in ckpt["optimizer"]["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
                return f"optimizer state {index}.{key} holds NaN or infinite values"
    return None


#: training settings that a resumed run takes from its checkpoint (optimizer / scheduler state)
OPTIMIZER_SETTINGS = ("learning_rate", "weight_decay", "adam_betas", "warmup_steps")


def check_resume(config: TrainConfig) -> None:
    """A run resumed from its newest checkpoint must not silently ignore what the user changed."""
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
    data = state.get("data")
    if data is not None:
        from dreamrelation.cache import cache_digest

        if data != cache_digest(config.cache):
            raise ConfigError(
                f"{config.output}: resuming from {found[-1].name}, which was trained on other cached data "
                f"than {', '.join(str(c) for c in config.cache)} holds now (re-cached since); going on would "
                "mix two datasets. Fix: use another --output, or resume: never to start over"
            )
    if step > config.max_steps:
        raise ConfigError(
            f"{config.output}: the newest checkpoint is at step {step}, beyond max_steps {config.max_steps}; "
            f"raise --max-steps to at least {step} or use another --output"
        )
