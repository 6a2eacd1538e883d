"""The executor's durable state on a real disk: group commit, the result journal's segments, the seen ids."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cronbus.common.messages import ExecutionFinished
from cronbus.services.executor import journal as journal_module
from cronbus.services.executor.dedupe import SeenIds
from cronbus.services.executor.group_commit import GroupCommit
from cronbus.services.executor.journal import Journal
from tests.helpers import async_wait_until


def _files(directory: Path, pattern: str = "*") -> list[Path]:
    return sorted(directory.glob(pattern))


async def _empty(directory: Path) -> bool:
    return not _files(directory)


async def _count(directory: Path, segments: int) -> bool:
    return len(_files(directory, "*.jsonl")) == segments


async def _only_bad(directory: Path) -> bool:
    return all(p.suffix == ".bad" for p in _files(directory))


def _result(seq: int) -> ExecutionFinished:
    return ExecutionFinished(seq=seq, execution_id=f"job:{seq}", job_name="job", node="n", status="success")


async def test_a_burst_of_writes_takes_two_flushes() -> None:
    flushed: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        await asyncio.sleep(0.01)
        flushed.append(items)

    commit = GroupCommit(flush)
    await asyncio.gather(*(commit.write(i) for i in range(100)))
    assert sorted(i for batch in flushed for i in batch) == list(range(100))
    assert len(flushed) == 2  # the first writer's flush, then everyone who came during it


async def test_a_failed_flush_fails_every_writer_it_held_and_not_later_ones() -> None:
    calls = 0

    async def flush(items: list[int]) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 2:
            raise OSError("disk full")

    commit = GroupCommit(flush)
    first = asyncio.create_task(commit.write(0))
    await asyncio.sleep(0)
    held = [asyncio.create_task(commit.write(i)) for i in (1, 2, 3)]
    outcomes = await asyncio.gather(first, *held, return_exceptions=True)
    assert outcomes[0] is None
    assert all(isinstance(o, OSError) for o in outcomes[1:])
    await commit.write(4)  # the next flush works again


async def test_a_cancelled_writer_does_not_stop_the_flush_that_holds_other_items() -> None:
    release = asyncio.Event()
    flushed: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        await release.wait()
        flushed.append(items)

    commit = GroupCommit(flush)
    owner = asyncio.create_task(commit.write(0))
    await asyncio.sleep(0)
    owner.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await owner
    assert flushed == [[0]]
    await commit.write(1)  # and the next one works
    assert flushed == [[0], [1]]


async def test_journal_segments_survive_a_restart_and_go_once_acknowledged(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.load()
    await asyncio.gather(*(journal.save(_result(seq)) for seq in range(1, 201)))
    assert 1 <= len(_files(tmp_path, "*.jsonl")) <= 3

    again = Journal(tmp_path)
    assert [r.seq for r in again.load()] == list(range(1, 201))
    for seq in range(1, 200):
        again.remove(seq)
    again.remove(12345)  # never saved: ignored
    assert again.segments() == 1
    again.remove(200)
    await async_wait_until(lambda: _empty(tmp_path), 5, what="every segment deleted")
    journal.close()
    again.close()


async def test_journal_skips_a_damaged_line_and_reads_single_result_files(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.load()
    await journal.save(_result(7))
    segment = _files(tmp_path, "*.jsonl")[0]
    segment.write_bytes(segment.read_bytes() + b'{"seq": "not a number"}\n')
    (tmp_path / f"{3:020d}.json").write_bytes(b'{"seq":3,"execution_id":"job:3","job_name":"job","node":"n",'
                                                b'"status":"failed"}')  # fmt: skip
    (tmp_path / "crashed.tmp").write_bytes(b"half")
    loaded = Journal(tmp_path)
    assert [(r.seq, r.status) for r in loaded.load()] == [(3, "failed"), (7, "success")]
    assert not _files(tmp_path, "*.tmp")
    assert [p.name for p in _files(tmp_path, "*.bad")] == [segment.with_suffix(".bad").name]  # kept for an operator
    loaded.remove(3)
    loaded.remove(7)
    await async_wait_until(lambda: _only_bad(tmp_path), 5, what="every segment deleted")
    journal.close()
    loaded.close()


async def test_seen_ids_group_commit_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "seen.jsonl"
    seen = SeenIds(path)
    seen.load()
    await asyncio.gather(*(seen.accept(f"job:{i}", "job") for i in range(50)))
    await asyncio.gather(*(seen.finish(f"job:{i}") for i in range(0, 50, 2)))
    await seen.see_term(9)
    reloaded = SeenIds(path)
    reloaded.load()
    assert "job:49" in reloaded and reloaded.max_term == 9
    assert sorted(eid for eid, _ in reloaded.unfinished()) == sorted(f"job:{i}" for i in range(1, 50, 2))
    seen.close()
    reloaded.close()


@pytest.mark.parametrize("count", [1, 64])
async def test_journal_save_is_on_disk_when_it_returns(tmp_path: Path, count: int) -> None:
    journal = Journal(tmp_path)
    journal.load()
    await asyncio.gather(*(journal.save(_result(seq)) for seq in range(1, count + 1)))
    on_disk = b"".join(p.read_bytes() for p in _files(tmp_path, "*.jsonl"))
    assert on_disk.count(b"\n") == count
    journal.close()


async def test_journal_appends_to_one_segment_until_it_is_all_acknowledged(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.load()
    for seq in (1, 2, 3):  # one after the other, as results trickle in
        await journal.save(_result(seq))
    assert len(_files(tmp_path, "*.jsonl")) == 1
    journal.remove(1)
    journal.remove(2)
    assert len(_files(tmp_path, "*.jsonl")) == 1
    journal.remove(3)  # all acknowledged: closed and deleted; the next result begins a new segment
    await async_wait_until(lambda: _empty(tmp_path), 5, what="the acknowledged segment deleted")
    await journal.save(_result(4))
    assert [p.name for p in _files(tmp_path, "*.jsonl")] == [f"{4:020d}.jsonl"]
    journal.close()


async def test_journal_begins_a_new_segment_when_one_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_RESULTS", 2)
    journal = Journal(tmp_path)
    journal.load()
    for seq in range(1, 6):
        await journal.save(_result(seq))
    assert [p.name for p in _files(tmp_path, "*.jsonl")] == [f"{s:020d}.jsonl" for s in (1, 3, 5)]
    for seq in (1, 2, 3, 4):  # the closed segments go once acknowledged; the open one stays open
        journal.remove(seq)
    await async_wait_until(lambda: _count(tmp_path, 1), 5, what="the full segments deleted")
    assert [r.seq for r in Journal(tmp_path).load()] == [5]
    journal.close()


async def test_journal_write_that_fails_sends_later_results_to_a_new_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path)
    journal.load()
    await journal.save(_result(1))
    real_fdatasync = os.fdatasync

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", disk_full)
    with pytest.raises(OSError, match="No space"):
        await journal.save(_result(2))
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)
    await journal.save(_result(3))
    assert [p.name for p in _files(tmp_path, "*.jsonl")] == [f"{s:020d}.jsonl" for s in (1, 3)]
    assert [r.seq for r in Journal(tmp_path).load()] == [1, 2, 3]  # 2 was written, only not known to be on disk
    journal.close()


async def test_seen_ids_rewrite_the_file_after_a_failed_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "seen.jsonl"
    seen = SeenIds(path)
    seen.load()
    await seen.accept("job:1", "job")
    real_fdatasync = os.fdatasync

    def torn(fd: int) -> None:
        with path.open("ab") as file:  # what a crash in the middle of a write leaves
            file.write(b'["accepted","job:2"')
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", torn)
    with pytest.raises(OSError, match="Input/output"):
        await seen.accept("job:2", "job")
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)
    await seen.accept("job:3", "job")  # rewrites the file from memory: no half line in front of this one
    seen.close()
    reloaded = SeenIds(path)
    reloaded.load()
    assert all(f"job:{i}" in reloaded for i in (1, 2, 3))
    assert all(line.endswith(b"]") for line in path.read_bytes().splitlines())  # no torn line left
