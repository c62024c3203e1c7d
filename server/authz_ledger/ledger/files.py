"""Files outside LMDB that must survive a crash whole: write to a temporary name, fsync, rename into place.

A reader of such a file sees the old content or the new one, never half of either, and a rename is durable only
once its directory is fsynced too. Temporary files are dot files next to their target (``.<name>.tmp``): a crash's
leftover is overwritten by the next write.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

_FSYNC_WORKERS = 8  # concurrent fsyncs let the filesystem share journal commits
_MAX_PENDING_FSYNCS = 256


def write_file_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write, fsync, rename, fsync the directory: readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make the directory's entries (files created, renamed or removed in it) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBatchWriter:
    """Many new files under one directory: each via temp name, fsync and rename; ``finish`` makes them all durable.

    The fsyncs run on a small thread pool while the caller produces the next file, and the directories that gained
    entries are fsynced once each at the end, deepest first. ``durable=False`` skips every fsync (the renames still
    happen). Only one batch may write into a directory at a time (the caller holds a lock): temp names are fixed.
    """

    def __init__(
        self, root: Path, *, durable: bool, file_mode: int, dir_mode: int, thread_name_prefix: str = "fsync"
    ) -> None:
        self.root = str(root)
        self.durable = durable
        self.bytes = 0
        """Bytes written so far."""
        self._file_mode = file_mode
        self._dir_mode = dir_mode
        self._dirs_known: set[str] = set()
        self._dirty_dirs: set[str] = set()
        self._pool = ThreadPoolExecutor(_FSYNC_WORKERS, thread_name_prefix) if durable else None
        self._pending: deque[Future[None]] = deque()

    def exists(self, rel: str) -> bool:
        # A file, not merely a name: a directory in its place must make the write fail, not be skipped.
        return os.path.isfile(os.path.join(self.root, rel))

    def write(self, rel: str, data: bytes) -> None:
        path = os.path.join(self.root, rel)
        parent = os.path.dirname(path)
        if parent not in self._dirs_known:
            self._make_dirs(parent)
        # One writer at a time holds the lock, so a fixed temp name is safe, and a crash's leftover is reused.
        tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, self._file_mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            raise
        self.bytes += len(data)
        self._dirty_dirs.add(parent)
        if self._pool is None:
            os.close(fd)
            os.replace(tmp, path)
            return
        while len(self._pending) >= _MAX_PENDING_FSYNCS:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(_fsync_and_rename, fd, tmp, path))

    def _make_dirs(self, directory: str) -> None:
        missing = []
        d = directory
        while not os.path.isdir(d):
            missing.append(d)
            d = os.path.dirname(d)
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(d, self._dir_mode)
            self._dirty_dirs.add(os.path.dirname(d))  # the new directory's own name must become durable
        self._dirs_known.add(directory)

    def finish(self) -> None:
        """Wait until every new file and directory entry is durable (a no-op wait when not ``durable``)."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self.close()
        if self.durable:
            for d in sorted(self._dirty_dirs, key=len, reverse=True):
                fsync_directory(d)

    def close(self) -> None:
        if self._pool is not None:
            # Let queued fsyncs run (each owns an open descriptor); after an error their result no longer matters.
            self._pool.shutdown(wait=True)
            self._pending.clear()


def _fsync_and_rename(fd: int, tmp: str, path: str) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
