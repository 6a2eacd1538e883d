"""The executor's durable writes: group commit (writers that come while a flush runs are flushed together by the
next one), and files replaced atomically."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """`await write(item)` returns once a flush that holds the item is done. One flush runs at a time; the
    items that arrive meanwhile wait for it and then go in a single flush, so a burst of N writes costs a couple
    of flushes (and fsyncs), not N. A flush that raises fails every writer whose item it held; a writer that is
    cancelled while its flush runs lets it finish for the others."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]]) -> None:
        self._flush = flush
        self._lock = asyncio.Lock()
        self._buffer: list[T] = []
        self._started = 0  # flushes begun
        self._finished = 0  # flushes done
        self._failed: dict[int, BaseException] = {}  # generation -> what its flush raised

    async def write(self, item: T) -> None:
        self._buffer.append(item)
        generation = self._started  # the flush that will carry this item
        async with self._lock:
            if self._finished > generation:  # an earlier caller's flush carried it
                failure = self._failed.get(generation)
                if failure is not None:
                    raise failure
                return
            items, self._buffer = self._buffer, []
            self._started += 1
            flush = asyncio.ensure_future(self._flush(items))
            try:
                await asyncio.shield(flush)  # others' items are in it: a cancelled writer does not stop it
            except asyncio.CancelledError:
                await asyncio.wait([flush])
                raise
            finally:
                error = _failure(flush)
                if error is not None:
                    self._failed = {generation: error}  # only the latest failure is kept, for its waiters
                self._finished = self._started


def _failure(flush: asyncio.Future[None]) -> BaseException | None:
    if not flush.done():
        return None
    if flush.cancelled():
        return OSError("the write was cancelled")
    return flush.exception()


class AppendedFile:
    """A file appended to and made durable by each append, kept open between appends (blocking: call in a
    thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None

    def append(self, data: bytes) -> bool:
        """Appends `data` and makes it durable (fdatasync, or fsync where the system has no fdatasync: macOS);
        True when this append opened the file."""
        opened = self._file is None
        if self._file is None:
            self._file = self.path.open("ab")
        self._file.write(data)
        self._file.flush()
        _datasync(self._file.fileno())
        return opened

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _datasync(fd: int) -> None:
    # Looked up at each call, so a test can take fdatasync away as macOS has none (docs/portability.md).
    getattr(os, "fdatasync", os.fsync)(fd)


def write_durably(path: Path, data: bytes) -> None:
    """Writes `path` whole or not at all, and on disk when it returns: a temporary file fsynced, renamed over
    `path`, and the directory fsynced (blocking: call in a thread)."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Makes the directory's entries (a file created, renamed) durable (blocking)."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows: a directory cannot be opened to fsync; NTFS journals its entries
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
