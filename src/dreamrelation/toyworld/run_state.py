"""Resumable training of the toy world's own models: the base transformer (`toy pretrain`) and the
learned codec (`toy codec train`).

Both loops keep ``OUTPUT/checkpoint/`` (:data:`CHECKPOINT_DIR`): the model, its EMA and the optimizer
as safetensors, any extra tensors of the loop (a random generator's state, the losses so far) and the
loop state as JSON, swapped in whole (:func:`dreamrelation.files.atomic_folder`). Running the same
command again resumes it; :func:`check_resume_settings` refuses a checkpoint written with other
settings. :class:`Schedule` is the run's length — ``steps``, or fixed once by a time budget from the
throughput of the first steps and kept on resume — and where one invocation stops (``run_steps``,
``run_time_s``), which is how a long run is cut into calls of a limited length. A finished folder's
``recipe.json`` is written by the loop (:func:`write_recipe`); the CLI adds the command and the
acceptance check to it (:func:`update_recipe`).
"""

from __future__ import annotations

import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors.torch import load_file

from dreamrelation.devices import machine_description
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.files import atomic_folder, save_tensors, write_text_atomic
from dreamrelation.training.checkpoints import optimizer_from_tensors, optimizer_to_tensors

#: the checkpoint's folder inside the output folder
CHECKPOINT_DIR = "checkpoint"
RECIPE_FILE = "recipe.json"  # a finished model folder's record: config, curves, command, evaluation
#: settings a resume may change: they alter neither the batches nor the model (a lower ``steps``
#: ends the run sooner, the cosine decay re-fitted to the new end)
RESUME_FREE_SETTINGS = (
    "output",
    "threads",
    "device",
    "workers",
    "run_steps",
    "run_time_s",
    "checkpoint_every_s",
    "steps",
)
#: the steps after an invocation's first between which a time budget's throughput is measured
BUDGET_PROBE_STEPS = (10, 60)

_PREFIXES = ("model.", "ema.", "optimizer.", "extra.")


def read_recipe(folder: str | Path | None) -> dict[str, Any] | None:
    """``folder``'s recipe.json, or None when no folder is given or it holds none."""
    if folder is None or not (Path(folder) / RECIPE_FILE).is_file():
        return None
    return json.loads((Path(folder) / RECIPE_FILE).read_text(encoding="utf-8"))


def write_recipe(folder: str | Path, record: dict[str, Any]) -> None:
    write_text_atomic(Path(folder) / RECIPE_FILE, json.dumps(record, indent=2) + "\n")


def update_recipe(folder: str | Path, **fields: Any) -> dict[str, Any]:
    """Add ``fields`` (the command that made it, an evaluation) to ``folder``'s recipe.json."""
    record = {**(read_recipe(folder) or {}), **fields}
    write_recipe(folder, record)
    return record


def check_output_folder(out: Path, finished_file: str, what: str) -> None:
    """The finished model replaces ``out`` whole: accept a new or empty folder, a finished model
    (``finished_file`` in it) or a checkpoint of one; refuse anything else (``what`` names the model)."""
    # a kill while the first checkpoint was written leaves only a hidden temporary folder (files.py)
    if not out.is_dir() or all(p.name.startswith(".") and ".tmp-" in p.name for p in out.iterdir()):
        return
    if (out / finished_file).is_file() or (out / CHECKPOINT_DIR / "state.json").is_file():
        return
    raise InputError(
        out,
        f"holds other files than {what} or its checkpoint, and the finished {what} replaces the whole folder",
        "choose a new or empty --output folder",
    )


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    ema: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """Model, EMA, optimizer and ``extra`` tensors as one safetensors file + ``state`` as JSON, swapped
    in atomically (a kill at any moment leaves the previous checkpoint or this one)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
    tensors.update({f"optimizer.{k}": v for k, v in opt_tensors.items()})
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    with atomic_folder(folder) as tmp:
        save_tensors(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "optimizer": opt_meta}), encoding="utf-8")


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    ema: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore model, EMA and optimizer in place; returns the loop state and the extra tensors."""
    tensors = load_file(str(folder / "state.safetensors"))
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    parts: dict[str, dict[str, torch.Tensor]] = {prefix: {} for prefix in _PREFIXES}
    for key, value in tensors.items():
        prefix = next(p for p in _PREFIXES if key.startswith(p))
        parts[prefix][key[len(prefix) :]] = value
    model.load_state_dict(parts["model."])
    if ema is not None:
        ema.load_state_dict(parts["ema."])
    optimizer.load_state_dict(optimizer_from_tensors(parts["optimizer."], state.pop("optimizer")))
    return state, parts["extra."]


def check_resume_settings(folder: Path, config: BaseModel) -> bool:
    """Whether ``folder`` holds a checkpoint to resume; one written with other settings than
    ``config`` (beyond :data:`RESUME_FREE_SETTINGS`) is refused, naming the settings that differ."""
    if not (folder / "state.json").is_file():
        return False
    previous = json.loads((folder / "state.json").read_text(encoding="utf-8")).get("config", {})
    mine = json.loads(config.model_dump_json())
    # a setting added since the checkpoint was written counts as its default (its old behaviour)
    if previous:
        fields = type(config).model_fields
        added = {k: f.default for k, f in fields.items() if k not in previous and not f.is_required()}
        previous = {**json.loads(json.dumps(added, default=str)), **previous}
    differing = sorted(k for k in mine if k not in RESUME_FREE_SETTINGS and previous.get(k) != mine[k])
    if differing:
        raise ConfigError(
            f"{folder} was written with other settings ({', '.join(differing)}); "
            "resume with the same settings or choose a new --output"
        )
    return True


def machine_record(device: torch.device) -> dict[str, Any]:
    """Where a run ran: device, CPU model and vector capability or GPU, threads, torch, Python."""
    return {
        "device": str(device),
        "machine": machine_description(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def run_entry(from_step: int, planned_steps: int, device: torch.device) -> dict[str, Any]:
    """One invocation of a run (a first run or a resume) for the record's ``runs``: the weights' lineage."""
    return {
        "from_step": from_step,
        "planned_steps": planned_steps,
        "argv": shlex.join(sys.argv),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **machine_record(device),
    }


class Schedule:
    """The run's length and where this invocation stops.

    Without a time budget the run is ``steps`` long. With one, the throughput between the
    invocation's steps first+10 and first+60 (after start-up: workers spawning, kernels warming up)
    fixes the length for the time the budget has left; ``fixed_total`` carries a length fixed by an
    earlier invocation, which a resume keeps (``steps`` may only shorten it: the cosine decay is then
    re-fitted to the new end). ``elapsed_s`` (time spent by earlier invocations) counts against the
    budget. ``run_steps`` / ``run_time_s`` stop this invocation early.
    """

    def __init__(
        self,
        steps: int,
        time_budget_s: float | None,
        first_step: int,
        fixed_total: int | None = None,
        elapsed_s: float = 0.0,
        run_steps: int | None = None,
        run_time_s: float | None = None,
    ) -> None:
        self.steps, self.run_time_s = steps, run_time_s
        self.total = min(fixed_total or steps, steps)
        self.pending = time_budget_s is not None and fixed_total is None
        self.time_budget_s = time_budget_s or 0.0  # read only while pending
        self.probe = (first_step + BUDGET_PROBE_STEPS[0], first_step + BUDGET_PROBE_STEPS[1])
        self.stop = self.total if run_steps is None else first_step + run_steps
        self.invocation_start = time.perf_counter()
        self.start = self.invocation_start - elapsed_s  # the run's start, earlier invocations included
        self._probe_start = 0.0

    @classmethod
    def resumed(cls, config: Any, state: dict[str, Any]) -> Schedule:
        """The schedule of a run with ``config`` (``steps``, ``time_budget_s``, ``run_steps``,
        ``run_time_s``) from its loop ``state`` (``step``, ``total_steps``, ``elapsed_s``): a fresh
        run's or a checkpoint's."""
        return cls(
            config.steps,
            config.time_budget_s,
            state["step"],
            state["total_steps"],
            state["elapsed_s"],
            config.run_steps,
            config.run_time_s,
        )

    @property
    def fixed_total(self) -> int | None:
        """The length to keep on resume (None while a time budget has not fixed it yet)."""
        return None if self.pending else self.total

    @property
    def end(self) -> int:
        """The step this invocation trains up to (exclusive)."""
        return min(self.total, self.stop)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def observe(self, step: int) -> bool:
        """Call before training step ``step``; True when the time budget just fixed the length."""
        if not self.pending or step not in self.probe:
            return False
        now = time.perf_counter()
        if step == self.probe[0]:
            self._probe_start = now
            return False
        per_step = (now - self._probe_start) / (self.probe[1] - self.probe[0])
        left = self.time_budget_s - (now - self.start)
        self.total = max(step + 1, min(self.steps, step + int(left / per_step)))
        self.pending = False
        return True

    def out_of_time(self) -> bool:
        """Whether this invocation has used its ``run_time_s``."""
        return self.run_time_s is not None and time.perf_counter() - self.invocation_start >= self.run_time_s


__all__ = [
    "BUDGET_PROBE_STEPS",
    "CHECKPOINT_DIR",
    "RECIPE_FILE",
    "RESUME_FREE_SETTINGS",
    "Schedule",
    "check_output_folder",
    "check_resume_settings",
    "load_checkpoint",
    "machine_record",
    "read_recipe",
    "run_entry",
    "save_checkpoint",
    "update_recipe",
    "write_recipe",
]


# ----- the learning-rate and EMA schedules of both toy trainers -----------------------------------
def learning_rate_at(step: int, config: Any, total_steps: int | None = None) -> float:
    """Linear warmup, then cosine decay from ``learning_rate`` to ``min_learning_rate`` over
    ``total_steps`` (default ``config.steps``); the toy base model's and the learned codec's schedule."""
    total_steps = config.steps if total_steps is None else total_steps
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(total_steps - config.warmup_steps, 1)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.min_learning_rate + (config.learning_rate - config.min_learning_rate) * cosine


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay with a warmup, (1 + step) / (10 + step) capped at ``decay``: early weights (the
    zero-initialised start) must not linger in the average of a short run."""
    return min(decay, (1 + step) / (10 + step))
