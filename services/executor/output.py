"""The bounded output of one execution: the last bytes of merged stdout+stderr, also streamed in chunks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

DEFAULT_LIMIT_BYTES = 256_000


class OutputBuffer:
    """Keeps the last `limit_bytes` bytes written and counts them all; memory stays constant.

    Live streaming: with `on_chunk`, the bytes written since the last hand-over are passed to it at most every
    `flush_interval_s` (the first hand-over comes `first_flush_s` after the buffer was made, or at once), by a
    timer on the running event loop, so `write`
    must then be called from the loop's thread. A chunk is bounded too: when more than `limit_bytes` arrive
    between two hand-overs, only the last `limit_bytes` are kept, after a marker line saying how many were
    skipped. Timed chunks end on a UTF-8 character boundary (an incomplete character waits for the next
    one). `flush()` hands over everything pending now; `close()` does so for the last time.
    `on_chunk` must not raise or block.
    """

    def __init__(
        self,
        limit_bytes: int = DEFAULT_LIMIT_BYTES,
        on_chunk: Callable[[bytes], None] | None = None,
        flush_interval_s: float = 0.3,
        first_flush_s: float = 0.0,
    ) -> None:
        if limit_bytes <= 0:
            raise ValueError(f"limit_bytes must be positive, not {limit_bytes}")
        self.total_bytes = 0
        self._limit = limit_bytes
        self._tail = bytearray()
        self._on_chunk = on_chunk
        self._interval_s = flush_interval_s
        self._pending = bytearray()
        self._skipped = 0  # bytes dropped from _pending since the last hand-over
        self._last_flush_at = time.monotonic() + first_flush_s - flush_interval_s
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def truncated(self) -> bool:
        """True when more was written than is kept."""
        return self.total_bytes > len(self._tail)

    @property
    def at_line_start(self) -> bool:
        """True when nothing was written yet or the last byte written is a newline."""
        return not self._tail or self._tail.endswith(b"\n")

    def write(self, data: bytes) -> None:
        """Appends output; never blocks, never grows memory beyond the limits."""
        if not data:
            return
        self.total_bytes += len(data)
        _append_bounded(self._tail, data, self._limit)
        if self._on_chunk is not None and not self._closed:
            self._skipped += _append_bounded(self._pending, data, self._limit)
            if self._timer is None:
                delay_s = max(0.0, self._last_flush_at + self._interval_s - time.monotonic())
                self._timer = asyncio.get_running_loop().call_later(delay_s, self._flush_on_timer)

    def data(self) -> bytes:
        """The bytes kept, as written (possibly starting inside a character when truncated)."""
        return bytes(self._tail)

    def text(self) -> str:
        """The bytes kept, decoded as UTF-8 (invalid bytes become U+FFFD), starting on a character."""
        start = _char_start(self._tail) if self.truncated else 0
        return self._tail[start:].decode("utf-8", errors="replace")

    def flush(self) -> None:
        """Hands every pending byte to `on_chunk` now (nothing happens when nothing is pending)."""
        self._hand_over(keep_partial_char=False)

    def close(self) -> None:
        """Final flush; later writes are still kept but no longer streamed, so no chunk follows the end."""
        self.flush()
        self._closed = True

    def _flush_on_timer(self) -> None:
        self._timer = None
        self._hand_over(keep_partial_char=True)

    def _hand_over(self, *, keep_partial_char: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._on_chunk is None:
            return
        start = 0
        if self._skipped:
            # The bytes dropped may have split a character; the marker line says where output is missing.
            start = _char_start(self._pending)
            self._skipped += start
        end = len(self._pending) - (_partial_char_len(self._pending) if keep_partial_char else 0)
        if end <= start and not self._skipped:
            return
        marker = b"[cronbus] %d bytes of output skipped\n" % self._skipped if self._skipped else b""
        chunk = marker + self._pending[start:end]
        del self._pending[: max(start, end)]
        self._skipped = 0
        self._last_flush_at = time.monotonic()
        self._on_chunk(chunk)


def _append_bounded(buffer: bytearray, data: bytes, limit: int) -> int:
    """Appends `data`, dropping from the front to stay within `limit`; returns how many bytes were dropped."""
    if len(data) >= limit:
        dropped = len(buffer) + len(data) - limit
        buffer[:] = memoryview(data)[-limit:]
        return dropped
    buffer += data
    excess = len(buffer) - limit
    if excess > 0:
        del buffer[:excess]  # cheap: CPython moves a bytearray's start instead of copying
        return excess
    return 0


def _char_start(data: bytearray) -> int:
    """Index of the first byte that is not a UTF-8 continuation byte (at most 3 are skipped)."""
    for index in range(min(3, len(data))):
        if data[index] & 0xC0 != 0x80:
            return index
    return min(3, len(data))


def _partial_char_len(data: bytearray) -> int:
    """Length of an incomplete UTF-8 character at the end of `data` (0 when it ends on a boundary)."""
    for back in range(1, min(4, len(data) + 1)):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for the lead byte
        if byte < 0xC0:
            return 0
        needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
        return back if needed > back else 0
    return 0
