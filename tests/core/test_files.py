"""files.write_text_atomic / atomic_target / atomic_folder: UTF-8, all-or-nothing, no temporary file or
folder left behind."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from dreamrelation import files
from dreamrelation.files import atomic_folder, atomic_target, disk_full_message, write_text_atomic


def test_writes_utf8_exactly_as_given(tmp_path: Path) -> None:
    text = "| method | acc |\r\n| ours | 0.61 ± 0.02 → best |\n"
    path = write_text_atomic(tmp_path / "deep" / "table.md", text)  # parent folders are created
    assert path == tmp_path / "deep" / "table.md"
    assert path.read_bytes() == text.encode("utf-8")  # UTF-8 whatever the locale, no newline rewrite
    assert [p.name for p in path.parent.iterdir()] == ["table.md"]


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("old", encoding="utf-8")
    write_text_atomic(path, "new")
    assert path.read_text(encoding="utf-8") == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


class _Boom(Exception):
    pass


def test_failed_write_leaves_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "summary.csv"
    path.write_text("old ±", encoding="utf-8")
    real_fsync = files.os.fsync
    calls: list[int] = []

    def fsync_after_partial_write(fd: int) -> None:  # the data is written, then syncing it fails
        calls.append(fd)
        raise _Boom

    monkeypatch.setattr(files.os, "fsync", fsync_after_partial_write)
    with pytest.raises(_Boom):
        write_text_atomic(path, "new text that must not land")
    monkeypatch.setattr(files.os, "fsync", real_fsync)
    assert calls  # the failure happened after the temporary file was written
    assert path.read_text(encoding="utf-8") == "old ±"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


def test_exception_while_writing_leaves_nothing(tmp_path: Path) -> None:
    """A text the encoder rejects fails mid-write (a lone surrogate): no file, no temporary file."""
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(tmp_path / "out.txt", "fine so far \udc80")
    assert list(tmp_path.iterdir()) == []


def test_atomic_target_keeps_suffix_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    with pytest.raises(_Boom), atomic_target(path, ".png") as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".plot.png.tmp-") and temp.suffix == ".png"
        temp.write_bytes(b"half")
        raise _Boom
    assert list(tmp_path.iterdir()) == []
    with atomic_target(path, ".png") as temp:
        temp.write_bytes(b"whole")
    assert path.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_disk_full_names_the_target_not_the_temporary(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    with pytest.raises(OSError) as caught, atomic_target(path, ".mp4") as temp:
        raise OSError(errno.ENOSPC, "No space left on device", str(temp))
    assert disk_full_message(caught.value) == (
        f"the disk is full while writing {path}; free some space and run the command again (it resumes)"
    )


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_atomic_folder_replaces_the_whole_folder(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint"
    with atomic_folder(path) as temp:  # a new folder (its parents too)
        assert temp.parent == tmp_path and temp.name.startswith(".checkpoint.tmp-") and temp.is_dir()
        (temp / "state.json").write_text("one")
        (temp / "old.bin").write_bytes(b"only in the first")
    assert _tree(path) == {"old.bin": b"only in the first", "state.json": b"one"}
    with atomic_folder(path) as temp:
        assert _tree(path) == {"old.bin": b"only in the first", "state.json": b"one"}  # untouched meanwhile
        (temp / "sub").mkdir()
        (temp / "sub" / "weights.safetensors").write_bytes(b"two")
        (temp / "state.json").write_text("two")
    # the new content only: a file the new folder lacks is gone, not merged
    assert _tree(path) == {"state.json": b"two", "sub/weights.safetensors": b"two"}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]  # no temporary or old folder left


def test_atomic_folder_failure_leaves_the_old_folder_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "exemplars"
    path.mkdir()
    (path / "clip.mp4").write_bytes(b"old")
    with pytest.raises(_Boom), atomic_folder(path) as temp:  # the writer fails half way
        (temp / "clip.mp4").write_bytes(b"half")
        raise _Boom
    assert _tree(path) == {"clip.mp4": b"old"} and [p.name for p in tmp_path.iterdir()] == ["exemplars"]

    def fsync_fails(fd: int) -> None:  # everything is written, then syncing it to disk fails
        raise _Boom

    monkeypatch.setattr(files.os, "fsync", fsync_fails)
    with pytest.raises(_Boom), atomic_folder(path) as temp:
        (temp / "clip.mp4").write_bytes(b"new")
    assert _tree(path) == {"clip.mp4": b"old"} and [p.name for p in tmp_path.iterdir()] == ["exemplars"]
    monkeypatch.undo()

    real_replace = files.os.replace

    def publish_fails(src: str | Path, dst: str | Path) -> None:  # the old folder moves aside (and back),
        if Path(src).suffix != ".old" and Path(dst) == path:  # the new one cannot be renamed onto it
            raise _Boom
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", publish_fails)
    with pytest.raises(_Boom), atomic_folder(path) as temp:
        (temp / "clip.mp4").write_bytes(b"new")
    assert _tree(path) == {"clip.mp4": b"old"} and [p.name for p in tmp_path.iterdir()] == ["exemplars"]


def test_module_does_not_import_torch() -> None:
    code = "import sys, dreamrelation.files; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
