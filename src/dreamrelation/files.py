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

import contextlib
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
    "inside",
    "OutputClaim",
    "output_lock",
    "refuse_same_file",
    "remove_stale_temporaries",
    "safe_name",
    "save_tensors",
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


def save_tensors(
    tensors: dict[str, Any], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """The one safetensors writer. safetensors reports a full disk as its own ``SafetensorError``
    ("... (os error 28)"), not an ``OSError``; it is turned into the ``OSError`` it is, naming
    ``path``, so the error boundary prints the disk-full line instead of a traceback."""
    from safetensors.torch import save_file

    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    except OSError:
        raise
    except Exception as exc:  # safetensors' SafetensorError (a Rust io::Error underneath)
        code = re.search(r"\(os error (\d+)\)", str(exc))
        if code is None:
            raise
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), str(path)) from exc


def atomic_save(tensors: dict[str, Any], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors as a safetensors file so that a crash never leaves a half-written file at ``path``."""
    with atomic_target(path) as temp:  # disk full, Ctrl-C: no stray temporary file
        save_tensors(tensors, temp, metadata=metadata)


_TEMPORARY = re.compile(r"^\.(?P<name>.+?)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}")


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files and folders that killed writers left in ``folder`` (recursively).

    A ``.NAME.tmp-PID-RANDOM`` whose process is gone can never be finished or renamed; a live
    writer's (another command running now) is left alone. Returns what was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.rglob(".*.tmp-*")):
        match = _TEMPORARY.match(path.name)
        if match is None or not path.exists():
            continue
        pid = int(match.group("pid"))
        if pid == os.getpid() or _alive(pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_name(name: str, what: str) -> str:
    """``name`` (from a data file or a setting) as one path component that stays in its folder.

    Refuses what would leave the folder: a separator (so no absolute path either), ``.`` or ``..``,
    control characters, an empty or overlong name. ``what`` says where the name came from.
    """
    problem = None
    if not name or not name.strip():
        problem = "is empty"
    elif "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        problem = "contains a path separator"
    elif name.strip() in (".", ".."):
        problem = "names a folder, not a file"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "contains control characters"
    elif len(name.encode("utf-8")) > 200:
        problem = "is longer than 200 bytes"
    if problem is not None:
        shown = name if len(name) <= 80 else name[:80] + "…"
        raise ConfigError(
            f"{what}: the name {shown!r} {problem}; it becomes a file name, so give a plain name "
            "(letters, digits, spaces, _ and -)"
        )
    return name


def inside(folder: str | os.PathLike[str], path: str | os.PathLike[str], what: str) -> Path:
    """``path`` (which may come from data) resolved, refused unless it lies inside ``folder``."""
    root = Path(os.path.realpath(folder))
    resolved = Path(os.path.realpath(Path(folder) / path))
    if resolved != root and root not in resolved.parents:
        raise ConfigError(f"{what}: {path} points outside {folder}; refusing to write there")
    return resolved


def refuse_same_file(output: str | os.PathLike[str], *inputs: str | os.PathLike[str] | None) -> None:
    """An output that is one of the inputs (the same file, through any path or link) is refused."""
    out = Path(output)
    for source in inputs:
        if source is None:
            continue
        src = Path(source)
        same = os.path.realpath(out) == os.path.realpath(src)
        if not same and out.exists() and src.exists():
            same = os.path.samefile(out, src)
        if same:
            raise ConfigError(
                f"{output}: the output is the input file {source}; writing it would destroy the input. "
                "Fix: choose another output path"
            )


def check_output_dir(path: str | Path, what: str = "output") -> None:
    """``path`` is (or can become) a writable folder; checked before any work so nothing is lost."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise InputError(
            path,
            f"the {what} path is a link to {os.readlink(path)}, which does not exist",
            "remove the link or point it at a folder",
        )
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
def output_lock(output: str | Path, command: str = "train") -> Iterator[Path]:
    """Refuse a second command writing to the same output folder while the first one runs.

    The lock is an OS lock (``flock``) on ``.dreamrelation.lock``: taking it is one atomic system
    call, and the kernel drops it when its owner dies, so a lock left by a killed process is free
    without guessing from a pid whether it is stale. The file holds the owner's pid for the message
    only. Under torchrun / accelerate only global rank 0 takes it (its peers are the same run).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    lock = output / LOCK_FILE
    if int(os.environ.get("RANK", "0")) != 0:
        yield lock
        return
    fd = _take_lock(lock, output, command)
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)  # unlinked while held: a waiter re-checks the inode
        os.close(fd)


def _take_lock(lock: Path, output: Path, command: str) -> int:
    try:
        import fcntl
    except ImportError:  # Windows: O_EXCL with the pid written before the file gets its name
        return _take_lock_by_link(lock, output, command)
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(_locked_message(lock, output, command)) from None
        try:  # the file we locked must still be the one at the lock's name (not one just released)
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            try:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
            except OSError as exc:  # a full disk: name the file (os.write does not)
                os.close(fd)
                lock.unlink(missing_ok=True)
                raise OSError(exc.errno, exc.strerror, str(lock)) from None
            return fd
        os.close(fd)


def _take_lock_by_link(lock: Path, output: Path, command: str) -> int:
    temp = _temporary_path(lock, "")
    temp.write_text(str(os.getpid()))
    try:
        for _ in range(2):
            try:
                os.link(temp, lock)  # atomic, and the pid is in the file before it has the name
                return os.open(lock, os.O_RDONLY)
            except FileExistsError:
                if _lock_owner(lock) and _alive(_lock_owner(lock)):
                    raise ConfigError(_locked_message(lock, output, command)) from None
                lock.unlink(missing_ok=True)
        raise ConfigError(_locked_message(lock, output, command))
    finally:
        temp.unlink(missing_ok=True)


def _lock_owner(lock: Path) -> int:
    try:
        return int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _locked_message(lock: Path, output: Path, command: str) -> str:
    owner = _lock_owner(lock)
    who = f" (pid {owner})" if owner else ""
    return (
        f"{output}: another `dreamrelation {command}`{who} is writing to this folder; "
        "wait for it, stop it, or use another --output"
    )


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


class OutputClaim:
    """A command's hold on its output folder, from its checks to its end.

    ``claim()`` takes the output lock (creating the folder) and removes the temporaries of writers
    that were killed there; ``release(failed)`` drops the lock and, when the command failed and the
    folder did not exist before it, removes the folder again if nothing else was written to it (no
    empty folder left behind by an error after a model loaded).
    """

    def __init__(self, output: str | Path, command: str) -> None:
        self.output = Path(output)
        self.command = command
        self.existed = self.output.exists()
        self._lock: Any = None

    def claim(self) -> OutputClaim:
        self._lock = output_lock(self.output, self.command)
        try:
            self._lock.__enter__()
        except BaseException:
            self._lock = None
            self._remove_if_empty()
            raise
        remove_stale_temporaries(self.output)
        return self

    def release(self, failed: bool) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None
        if failed:
            self._remove_if_empty()

    def _remove_if_empty(self) -> None:
        if self.existed or not self.output.is_dir():
            return
        for folder in sorted((p for p in self.output.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only empty ones go
        with contextlib.suppress(OSError):
            self.output.rmdir()
