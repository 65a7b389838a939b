"""Files written so that a crash never leaves a half-written one: a temporary file beside the
target, flushed to disk, then renamed onto it (a rename within one folder is atomic).

Torch-free, so light modules (evaluation reports, dataset preparation, the benchmark runner) use
it without loading torch::

    write_text_atomic(out / "summary.csv", table)      # text, always UTF-8 (tables hold ± and →)
    with atomic_target(out / "clip.mp4", ".mp4") as temp:   # a writer that takes a file name
        ffmpeg_write(temp)
    with atomic_folder(out / "checkpoint") as temp:          # a whole folder, swapped in at once
        save_file(tensors, str(temp / "state.safetensors"))

Temporary files and folders are named ``.NAME.tmp-PID-RANDOM[SUFFIX]`` (hidden, unique per writer, so
two threads or processes writing the same target never share one); a failed write removes its own.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dreamrelation.errors import ConfigError, InputError

__all__ = [
    "atomic_folder",
    "atomic_save",
    "atomic_target",
    "check_output_dir",
    "disk_full_message",
    "file_sha256",
    "output_lock",
    "write_text_atomic",
]

LOCK_FILE = ".dreamrelation.lock"


def _temporary_path(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def _fsync_path(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:  # some platforms (Windows) cannot open a folder; the rename is still atomic
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_target(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that takes a file name.

    When the block succeeds the temporary file is synced to disk and renamed onto ``path`` (so a
    crash leaves either the old file or the new one, never a torn one); when it raises, the
    temporary file is removed and ``path`` is left as it was. ``suffix`` ends the temporary name,
    for writers that pick a format from it (``".mp4"``, ``".png"``). The writer creates the file
    itself (not ``mkstemp``), so it gets the user's usual permissions rather than 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temporary_path(path, suffix)
    try:
        yield temp
        _fsync_path(temp)  # the data reaches the disk before the name does
        os.replace(temp, path)
        _fsync_path(path.parent, directory=True)  # and the rename itself survives a power cut
    finally:
        temp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; on success it replaces ``path`` whole.

    When the block succeeds every file in the temporary folder is synced to disk, an existing
    ``path`` is renamed aside, the temporary folder is renamed onto ``path`` and the old one is
    removed: a crash leaves the old folder or the new one, never a mix (between the two renames, a
    kill leaves the old folder under a hidden ``.NAME.tmp-PID-RANDOM.old`` name beside it). When the
    block raises, the temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(os.path.abspath(path))  # "." and "out/" have a name to put the temporary one beside
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temporary_path(path, "")
    temp.mkdir()
    try:
        yield temp
        for item in sorted(temp.rglob("*"), reverse=True):  # files before the folders holding them
            _fsync_path(item, directory=item.is_dir())
        _fsync_path(temp, directory=True)
        old = temp.with_name(temp.name + ".old") if path.exists() else None
        if old is not None:
            os.replace(path, old)
        try:
            os.replace(temp, path)
        except BaseException:
            if old is not None:  # put the old folder back
                os.replace(old, path)
            raise
        _fsync_path(path.parent, directory=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # still there only when something failed


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` as UTF-8, exactly as given (no newline translation), atomically.

    On any failure (disk full, Ctrl-C) no temporary file is left and an existing ``path`` keeps
    its old content. Returns ``path``.
    """
    path = Path(path)
    with atomic_target(path) as temp, open(temp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    return path


def atomic_save(tensors: dict[str, Any], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors as a safetensors file so that a crash never leaves a half-written file at ``path``."""
    from safetensors.torch import save_file

    with atomic_target(path) as temp:  # disk full, Ctrl-C: no stray temporary file
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(temp), metadata=metadata)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
