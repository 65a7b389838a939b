"""The web UI's long work, in background threads of the server process: one job per output folder.

A job outlives the page that started it (closing the browser tab stops nothing; the page shows the
job again when reopened). A second job into a folder where one runs is refused, as the command line
refuses a second `train` into a busy folder (whose lock, :func:`dreamrelation.files.output_lock`,
training jobs hold too, so a CLI run and a UI run into one folder refuse each other).
Training reports the records the CLI's progress bar shows (step of total, reconstruction and
contrastive losses, the adapter drawn) plus an ETA from the steps timed in this job.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamrelation.errors import ConfigError, DreamRelationError


class StopRequested(Exception):
    """The page asked the job to stop; raised between two training steps, where state is consistent."""


@dataclass
class Job:
    """One piece of long work: its phase, the progress records, and how it ended."""

    kind: str
    output: Path
    #: "running", "done", "stopped" or "failed"
    state: str = "running"
    #: what the job is doing now ("cache", "load", "train", ...), shown beside the bar
    phase: str = "starting"
    step: int = 0
    total: int = 0
    #: one record per training step (the CLI's bar fields: reconstruction, contrastive, adapter, ...);
    #: the trainer's own history, resumed steps included
    records: list[dict[str, Any]] = field(default_factory=list)
    #: the last line to show: what happened, or the error (naming the file or setting and the fix)
    message: str = ""
    result: Any = None
    started: float = field(default_factory=time.monotonic)
    _timed: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def on_step(self, step: int) -> None:
        """After each training step (``step`` steps done): times it, then honours a stop request."""
        self.step = step
        self._timed.append(time.monotonic())
        if self._stop.is_set():
            raise StopRequested

    def eta_seconds(self) -> float | None:
        """Remaining time at the mean pace of the steps timed so far in this job (None before two)."""
        if len(self._timed) < 2 or not self.total:
            return None
        pace = (self._timed[-1] - self._timed[0]) / (len(self._timed) - 1)
        return max(0.0, pace * (self.total - self.step))

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


class JobBoard:
    """The server's jobs, by output folder; at most one running job per folder."""

    def __init__(self) -> None:
        self._jobs: dict[Path, Job] = {}
        self._lock = threading.Lock()

    def get(self, output: str | Path) -> Job | None:
        return self._jobs.get(Path(output).resolve())

    def running(self) -> list[Job]:
        return [job for job in self._jobs.values() if job.running]

    def claim(self, kind: str, output: str | Path) -> Job:
        """Register a job into ``output``, or refuse (one clear message) when one runs there."""
        output = Path(output).resolve()
        with self._lock:
            current = self._jobs.get(output)
            if current is not None and current.running:
                raise ConfigError(
                    f"{output}: a {current.kind} run started from this page is still writing to this folder "
                    f"({current.phase}, step {current.step} of {current.total}); wait for it, stop it, or "
                    "choose another output folder"
                )
            job = Job(kind, output)
            self._jobs[output] = job
            return job

    def start(self, job: Job, work: Callable[[Job], Any], on_exit: Callable[[], None] | None = None) -> Job:
        """Run ``work(job)`` in a background thread; its return value becomes ``job.result``."""

        def target() -> None:
            try:
                job.result = work(job)
                if job.state == "running":
                    job.state = "done"
            except StopRequested:
                job.state = "stopped"
            except DreamRelationError as error:
                job.state, job.message = "failed", f"error: {error}"
            except Exception as error:  # noqa: BLE001 - shown on the page; the server keeps serving
                job.state = "failed"
                job.message = f"error: {type(error).__name__}: {error}"
                traceback.print_exc()
            finally:
                if on_exit is not None:
                    on_exit()

        job._thread = threading.Thread(target=target, name=f"dreamrelation-{job.kind}", daemon=True)
        job._thread.start()
        return job

    def run_here(self, job: Job, work: Callable[[Job], Any]) -> Any:
        """Run ``work(job)`` in the calling thread (the UI server's worker for short jobs such as one
        generation), keeping the folder claimed until it ends."""
        try:
            job.result = work(job)
            job.state = "done"
            return job.result
        except BaseException as error:
            job.state, job.message = "failed", f"error: {error}"
            raise
