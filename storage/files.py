"""Local files written atomically: a reader sees the old file or the new one, never a torn one.

Every place that writes a file another process may read at the same time (event table days,
lifecycle state, environment files, benchmark results, downloaded versions) goes through
:func:`atomic_path`: the content is written to a unique temporary name in the target's folder
(two writers never share one), flushed to disk, renamed over the target (the commit point),
and the folder's entry is flushed too, so a crash leaves the old file or the new one.

Several files that must change together (a day's events and quarantine) are written into one
folder, flushed (:func:`fsync_tree`), renamed into place (:func:`commit_dir`) and made current
by replacing one symbolic link (:func:`atomic_symlink`, the single commit point); writers of the
same set serialise with :func:`exclusive_lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unique_temp_path(path: Path, suffix: str = ".tmp") -> Path:
    """A new, empty, uniquely named file beside `path` (hidden, so globs skip it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    return Path(name)


def commit_temp(tmp: Path, path: Path) -> None:
    """Flush `tmp`, rename it over `path` (atomic on one filesystem) and flush the folder."""
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content to; on a clean exit it replaces
    `path`, on an exception it is removed and `path` is left as it was. `mode` (e.g. 0o600) is
    set on the temporary file before anything is written to it."""
    path = Path(path)
    tmp = unique_temp_path(path)
    try:
        if mode is not None:
            os.chmod(tmp, mode)
        yield tmp
        commit_temp(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str, mode: int | None = None) -> Path:
    with atomic_path(path, mode) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> Path:
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def fsync_tree(directory: str | os.PathLike[str]) -> None:
    """Flush every file directly in `directory`, then the folder's own entries."""
    directory = Path(directory)
    for child in directory.iterdir():
        if child.is_file() and not child.is_symlink():
            fsync_path(child)
    fsync_path(directory)


def commit_dir(tmp_dir: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Flush a folder written under a temporary name and everything in it, rename it to `path`
    (which must not exist: a folder is never renamed over another) and flush the parent."""
    tmp_dir, path = Path(tmp_dir), Path(path)
    fsync_tree(tmp_dir)
    os.rename(tmp_dir, path)
    fsync_path(path.parent)


def atomic_symlink(target: str, link: str | os.PathLike[str]) -> None:
    """Point `link` at `target` in one step: a new link under a unique temporary name, renamed
    over `link` (a file or an older link; the commit point), then the folder flushed. A reader
    resolving `link` finds the old target or the new one."""
    link = Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.parent / f".{link.name}.{secrets.token_hex(6)}.lnk"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(link.parent)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if missing) for the block: writers of
    the same files, in any process on this machine or an NFS mount with locking, take turns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def older_than(path: str | os.PathLike[str], seconds: float) -> bool:
    """Whether `path` was last modified more than `seconds` ago; False when it is gone (a
    temporary folder its own writer removed meanwhile is not litter to sweep)."""
    try:
        return time.time() - Path(path).stat().st_mtime > seconds
    except FileNotFoundError:
        return False
