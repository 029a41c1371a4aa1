"""Whole-file writes that a crash can never leave half done: temporary file, fsync, rename.

Every file kdtui writes in place of another (the registry, a run's record and spec, checkpoints,
teacher caches, tickets, exports, reports) goes through here, so a reader sees the old file or the
new one, never a mixture, and a power cut after the rename keeps the new one. This is the only code
that renames a file over another (a test checks it). It lives in `kernels`, without torch, so that
the engine's checkpoints and the app's records share it; `kdtui.core.files` re-exports it.

Only a regular file (or nothing) is ever replaced: a rename over a symbolic link, a FIFO, a device
or a folder would destroy something that is not a file kdtui wrote (the link itself, a pipe another
program reads, `/dev/full` when run as root), so those are refused with `NotARegularFile`.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator


def _read_umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it the classic way, once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()
TEMP_SUFFIX = ".tmp"


def temp_prefix(path: Path) -> str:
    """Temporary files for `path` start with this (a writer killed mid-write leaves one behind)."""
    return f".{path.name}."


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not fsync directories
    finally:
        os.close(fd)


def _keep_mode(tmp: Path, path: Path) -> None:
    """mkstemp makes 0600 files; give the new file the old file's mode (or a normal file's)."""
    with contextlib.suppress(OSError):
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o666 & ~_UMASK
        os.chmod(tmp, mode)


class NotARegularFile(OSError):
    """`path` exists and is not a regular file; `strerror` says what it is, in a few words."""


_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_replaceable(path: str | Path) -> None:
    """Raise NotARegularFile unless `path` is absent or a regular file (a symbolic link is refused,
    not followed: its target may be anything)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise NotARegularFile(errno.EEXIST, f"it is {kind}, not a regular file", str(path))


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to (for writers that want a file name: torch.save,
    matplotlib); on a clean exit it is fsynced and renamed over `path`, on an error removed.
    NotARegularFile before anything is written when `path` is there and not a regular file."""
    path = Path(path)
    check_replaceable(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _keep_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Replace `path` with `data` (text is UTF-8) in one step."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_output(path) as tmp:
        tmp.write_bytes(payload)


def atomic_write_many(items: Iterable[tuple[Path, str | bytes]]) -> None:
    """`atomic_write` for many files (a sweep's run folders), each one still atomic and durable when
    this returns. A few files are written one by one; many are written to their temporary files,
    flushed to disk with one sync of their file system, renamed, and synced once more: two flushes
    instead of one fsync per file (5,000 fsyncs took ~6 s, the two syncs well under one)."""
    items = list(items)
    if len(items) < _BATCH_MIN:
        for path, data in items:
            atomic_write(path, data)
        return
    for path, _ in items:
        check_replaceable(path)
    pending: list[tuple[Path, Path]] = []
    renamed = 0
    try:
        for path, data in items:
            path = Path(path)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=TEMP_SUFFIX)
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            pending.append((Path(tmp_name), path))
            _keep_mode(Path(tmp_name), path)
        _sync_file_systems([path for _, path in pending])  # every new content is on disk before any file is replaced
        for tmp, path in pending:
            os.replace(tmp, path)
            renamed += 1
    except BaseException:
        for tmp, _ in pending[renamed:]:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    _sync_file_systems([path for _, path in pending])  # and the renames


_BATCH_MIN = 16


def _sync_file_systems(paths: list[Path]) -> None:
    """syncfs(2) once for each file system holding one of `paths`; os.sync() where there is no syncfs."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    syncfs = getattr(libc, "syncfs", None)
    folders = {}
    for folder in {path.parent for path in paths}:
        with contextlib.suppress(OSError):
            folders.setdefault(os.stat(folder).st_dev, folder)
    for folder in folders.values():
        fd = os.open(folder, os.O_RDONLY)
        try:
            if syncfs is None or syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)
