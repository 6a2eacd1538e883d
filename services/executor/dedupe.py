"""The execution ids this executor has accepted, and the highest leader term seen, persisted across restarts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from cronbus.services.executor.group_commit import AppendedFile, GroupCommit, write_durably

log = logging.getLogger(__name__)

KEEP_S = 24 * 3600.0
KEEP_COUNT = 100_000


class _Accepted(msgspec.Struct, tag="accepted", array_like=True):
    id: str
    job: str
    at: float


class _Finished(msgspec.Struct, tag="finished", array_like=True):
    id: str


class _Term(msgspec.Struct, tag="term", array_like=True):
    term: int


_Record = _Accepted | _Finished | _Term
_decoder = msgspec.json.Decoder(_Record)
_encoder = msgspec.json.Encoder()


class _Entry(msgspec.Struct):
    job: str
    at: float
    finished: bool = False


class SeenIds:
    """Ids accepted (and whether they finished) plus the highest term, in an append-only JSON-lines file.

    An id is kept while younger than keep_s or among the last keep_count, so a repeated dispatch is
    recognised even after a restart. Each change is fsynced before its awaitable returns; the in-memory view
    changes at once, so checks on the event loop never wait for the disk. The file is compacted when it
    holds more than twice the records needed.
    """

    def __init__(
        self,
        path: Path,
        *,
        keep_s: float = KEEP_S,
        keep_count: int = KEEP_COUNT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.keep_s = keep_s
        self.keep_count = keep_count
        self._clock = clock
        self._entries: dict[str, _Entry] = {}  # oldest first
        self.max_term = 0
        self._lines = 0
        self._file = AppendedFile(path)  # appended to between compactions
        self._torn = False  # an append failed: its line may be half written, so the next flush compacts
        self._commit = GroupCommit(self._flush)  # one flush at a time: a compaction never misses an append

    def load(self) -> None:
        """Reads the file (blocking; call before serving). A damaged line is logged and skipped."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with self.path.open("rb") as file:
                for number, line in enumerate(file, 1):
                    self._replay(line, number)
        self._prune()
        self._compact(self._snapshot())
        log.info("loaded seen ids=%d max_term=%d path=%s", len(self._entries), self.max_term, self.path)

    def _replay(self, line: bytes, number: int) -> None:
        if not line.strip():
            return
        try:
            record = _decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("skipped damaged record path=%s line=%d: %s", self.path, number, exc)
            return
        match record:
            case _Accepted(id=eid, job=job, at=at):
                self._entries[eid] = _Entry(job, at)
            case _Finished(id=eid):
                if eid in self._entries:
                    self._entries[eid].finished = True
            case _Term(term=term):
                self.max_term = max(self.max_term, term)

    def __contains__(self, execution_id: str) -> bool:
        return execution_id in self._entries

    def unfinished(self) -> list[tuple[str, str]]:
        """(id, job) of runs accepted but never finished: interrupted by a crash."""
        return [(eid, e.job) for eid, e in self._entries.items() if not e.finished]

    async def accept(self, execution_id: str, job_name: str) -> None:
        self._entries[execution_id] = _Entry(job_name, self._clock())
        await self._write(_Accepted(execution_id, job_name, self._entries[execution_id].at))

    async def finish(self, execution_id: str) -> None:
        entry = self._entries.get(execution_id)
        if entry is not None:
            entry.finished = True
            await self._write(_Finished(execution_id))

    async def see_term(self, term: int) -> None:
        """Raises the highest term seen (never lowers it)."""
        if term > self.max_term:
            self.max_term = term
            await self._write(_Term(term))

    async def _write(self, record: _Record) -> None:
        """Returns once the record is on disk (group commit: a burst of dispatches costs one fsync, not one each)."""
        await self._commit.write(_encoder.encode(record) + b"\n")

    async def _flush(self, lines: list[bytes]) -> None:
        self._prune()
        if self._torn or self._lines > 4 * len(self._entries) + 1000:  # at most 2 records per id are needed
            # The snapshot holds these lines' changes already (the in-memory view changes first).
            await asyncio.to_thread(self._compact, self._snapshot())
        else:
            await asyncio.to_thread(self._append, lines)

    def _prune(self) -> None:
        """Forgets the oldest ids that are both older than keep_s and beyond the last keep_count."""
        horizon = self._clock() - self.keep_s
        while len(self._entries) > self.keep_count:
            eid, entry = next(iter(self._entries.items()))
            if entry.at >= horizon:
                break
            del self._entries[eid]

    def _snapshot(self) -> list[bytes]:
        records: list[_Record] = [_Term(self.max_term)]
        for eid, entry in self._entries.items():
            records.append(_Accepted(eid, entry.job, entry.at))
            if entry.finished:
                records.append(_Finished(eid))
        return [_encoder.encode(r) + b"\n" for r in records]

    def _append(self, lines: list[bytes]) -> None:
        try:
            self._file.append(b"".join(lines))
        except BaseException:
            self._torn = True
            self.close()
            raise
        self._lines += len(lines)

    def _compact(self, lines: list[bytes]) -> None:
        """Rewrites the file from a snapshot, atomically."""
        self.close()  # the file it had open is replaced
        write_durably(self.path, b"".join(lines))
        self._lines = len(lines)
        self._torn = False

    def close(self) -> None:
        self._file.close()
