"""OutputBuffer: the last bytes kept, constant memory, UTF-8 boundaries and coalesced live chunks."""

from __future__ import annotations

import asyncio

import pytest

from cronbus.services.executor.output import OutputBuffer
from tests.helpers import async_wait_until


def test_keeps_everything_under_the_limit() -> None:
    output = OutputBuffer(limit_bytes=10)
    output.write(b"hello ")
    output.write(b"")
    output.write(b"you")
    assert output.data() == b"hello you"
    assert output.text() == "hello you"
    assert output.total_bytes == 9
    assert not output.truncated


def test_keeps_exactly_the_last_limit_bytes() -> None:
    output = OutputBuffer(limit_bytes=1000)
    for index in range(10_000):
        output.write(b"%09d\n" % index)  # 10 bytes each
    assert output.total_bytes == 100_000
    assert output.truncated
    assert len(output.data()) == 1000
    assert output.data().endswith(b"000009999\n")
    assert output.data().startswith(b"000009900\n")


def test_a_write_larger_than_the_limit_keeps_its_end() -> None:
    output = OutputBuffer(limit_bytes=4)
    output.write(b"ab")
    output.write(b"0123456789")
    assert output.data() == b"6789"
    assert output.total_bytes == 12


def test_text_starts_on_a_character_when_truncated() -> None:
    output = OutputBuffer(limit_bytes=5)
    output.write("xééé".encode())  # 7 bytes: the cut falls inside the first é
    assert output.data() == b"\xa9\xc3\xa9\xc3\xa9"
    assert output.text() == "éé"


def test_invalid_utf8_is_replaced_not_raised() -> None:
    output = OutputBuffer()
    output.write(b"caf\xe9 \xff\xfe ok")
    assert output.text() == "caf\ufffd \ufffd\ufffd ok"


def test_at_line_start() -> None:
    output = OutputBuffer()
    assert output.at_line_start
    output.write(b"partial")
    assert not output.at_line_start
    output.write(b" line\n")
    assert output.at_line_start


def test_rejects_a_limit_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="limit_bytes"):
        OutputBuffer(limit_bytes=0)


async def test_chunks_are_coalesced_and_the_first_goes_out_at_once() -> None:
    chunks: list[bytes] = []
    output = OutputBuffer(on_chunk=chunks.append, flush_interval_s=0.2)

    async def count(n: int) -> bool:
        return len(chunks) >= n

    output.write(b"first\n")
    await async_wait_until(lambda: count(1), timeout_s=5)
    assert chunks == [b"first\n"]
    # These arrive within one interval of the first chunk, so they travel together.
    output.write(b"second\n")
    output.write(b"third\n")
    await async_wait_until(lambda: count(2), timeout_s=5)
    assert chunks == [b"first\n", b"second\nthird\n"]
    output.close()
    assert len(chunks) == 2  # nothing pending: no empty chunk


async def test_the_first_chunk_can_wait_for_first_flush_s() -> None:
    """The executor holds a run's first output until it reports the run started (a run that ends sooner sends its
    output with its result only)."""
    chunks: list[tuple[float, bytes]] = []
    loop = asyncio.get_running_loop()
    made = loop.time()
    output = OutputBuffer(on_chunk=lambda c: chunks.append((loop.time(), c)), flush_interval_s=0.05, first_flush_s=0.3)
    output.write(b"early\n")
    output.write(b"more\n")

    async def handed_over() -> bool:
        return bool(chunks)

    await async_wait_until(handed_over, timeout_s=5)
    [(at, chunk)] = chunks
    assert chunk == b"early\nmore\n"
    assert at - made >= 0.3


async def test_close_flushes_at_once_and_ends_streaming() -> None:
    chunks: list[bytes] = []
    output = OutputBuffer(on_chunk=chunks.append, flush_interval_s=60)
    output.write(b"a")
    output.flush()
    output.write(b"b")
    output.close()
    assert chunks == [b"a", b"b"]
    output.write(b"c")  # kept, no longer streamed
    output.flush()
    assert chunks == [b"a", b"b"]
    assert output.data() == b"abc"


async def test_a_chunk_is_bounded_with_a_marker_for_skipped_bytes() -> None:
    chunks: list[bytes] = []
    output = OutputBuffer(limit_bytes=10, on_chunk=chunks.append, flush_interval_s=60)
    output.write(b"0123456789" * 2)
    output.write(b"abcde")
    output.close()
    assert chunks == [b"[cronbus] 15 bytes of output skipped\n56789abcde"]


async def test_timed_chunks_do_not_split_a_character() -> None:
    chunks: list[bytes] = []
    output = OutputBuffer(on_chunk=chunks.append, flush_interval_s=0.05)

    async def count(n: int) -> bool:
        return len(chunks) >= n

    output.write(b"ab\xc3")  # the first byte of an é
    await async_wait_until(lambda: count(1), timeout_s=5)
    assert chunks == [b"ab"]
    output.write(b"\xa9!")
    await async_wait_until(lambda: count(2), timeout_s=5)
    assert [chunk.decode() for chunk in chunks] == ["ab", "é!"]


async def test_close_hands_over_an_incomplete_character_too() -> None:
    chunks: list[bytes] = []
    output = OutputBuffer(on_chunk=chunks.append, flush_interval_s=60)
    output.write(b"x\xe2\x82")
    output.close()
    assert chunks == [b"x\xe2\x82"]


async def test_streaming_memory_stays_bounded() -> None:
    chunks: list[bytes] = []
    output = OutputBuffer(limit_bytes=1000, on_chunk=chunks.append, flush_interval_s=60)

    async def count(n: int) -> bool:
        return len(chunks) >= n

    output.write(b"start\n")
    await async_wait_until(lambda: count(1), timeout_s=5)
    block = b"z" * 65_536
    for _ in range(200):  # 13 MB between two hand-overs
        output.write(block)
        await asyncio.sleep(0)
    output.close()
    assert output.total_bytes == 6 + 200 * 65_536
    assert len(output.data()) == 1000
    assert chunks == [b"start\n", b"[cronbus] %d bytes of output skipped\n" % (200 * 65_536 - 1000) + b"z" * 1000]
