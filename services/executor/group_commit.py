"""Group commit: writers that come while a flush runs are flushed together by the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """`await write(item)` returns once a flush that holds the item is done. One flush runs at a time; the
    items that arrive meanwhile wait for it and then go in a single flush, so a burst of N writes costs a couple
    of flushes (and fsyncs), not N. A flush that raises fails every writer whose item it held."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]]) -> None:
        self._flush = flush
        self._lock = asyncio.Lock()
        self._buffer: list[T] = []
        self._started = 0  # flushes begun
        self._finished = 0  # flushes done
        self._failed: dict[int, BaseException] = {}  # generation -> what its flush raised (kept while waited on)

    async def write(self, item: T) -> None:
        self._buffer.append(item)
        generation = self._started  # the flush that will carry this item
        async with self._lock:
            if self._finished > generation:  # an earlier caller's flush carried it
                if generation in self._failed:
                    raise self._failed[generation]
                return
            items, self._buffer = self._buffer, []
            self._started += 1
            try:
                await self._flush(items)
            except BaseException as exc:
                self._failed = {generation: exc}  # only the latest failure is reported to late waiters
                raise
            finally:
                self._finished = self._started
