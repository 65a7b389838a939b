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

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_folder", "atomic_target", "write_text_atomic"]


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
