"""Finished results not yet acknowledged by a leader, in fsynced segment files, so a restart delivers them."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import msgspec

from cronbus.common.messages import ExecutionFinished
from cronbus.services.executor.group_commit import AppendedFile, GroupCommit, fsync_directory

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ExecutionFinished)
SEGMENT_RESULTS = 1000
SEGMENT_BYTES = 16 * 1024 * 1024


class Journal:
    """A directory of segments: `<seq>.jsonl` files of ExecutionFinished, one JSON line each (an operator can
    read them), named after the first seq they hold.

    save() returns once the result is durable: appended to the open segment and fsynced (a new segment's
    directory entry is fsynced too). Results saved while a write is under way are appended together by the next
    one (group commit: a burst of N results costs two fsyncs, not N). The open segment is closed and a new one
    begun after SEGMENT_RESULTS results or SEGMENT_BYTES, after a failed write (its last line may be torn), or
    when all it holds is acknowledged. A closed segment is deleted once every result in it is acknowledged
    (remove()); deletion is not fsynced. After a restart every result of a segment left on disk is sent again,
    acknowledged ones included: the leader ignores a result it has recorded.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._segment_of: dict[int, Path] = {}  # seq -> its segment
        self._left: dict[Path, set[int]] = {}  # segment -> seqs in it not yet removed
        self._commit: GroupCommit[ExecutionFinished] = GroupCommit(self._write)
        self._open: _Segment | None = None  # the segment saves append to
        self._writing = False  # a write to the open segment is under way (in a thread)
        self._doomed: list[Path] = []  # empty segments to delete
        self._deleting: asyncio.Task[None] | None = None

    def load(self) -> list[ExecutionFinished]:
        """Every saved result, in seq order (blocking; call before serving). A damaged line is logged and
        skipped, and its segment copied to `*.bad`; a segment that cannot be read is renamed to `*.bad`.
        Single-result `<seq>.json` files of earlier versions are read too."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.tmp"):  # a save interrupted by a crash, never acknowledged as done
            stale.unlink()
        results: list[ExecutionFinished] = []
        for path in sorted([*self.directory.glob("*.jsonl"), *self.directory.glob("*.json")]):
            try:
                lines = path.read_bytes().splitlines()
            except OSError as exc:
                log.warning("unreadable journal segment path=%s: %s", path, exc)
                path.replace(path.with_suffix(".bad"))
                continue
            kept = []
            for number, line in enumerate(lines, 1):
                try:
                    kept.append(_decoder.decode(line))
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    log.warning("skipped damaged journaled result path=%s line=%d: %s", path, number, exc)
            if len(kept) < len(lines):  # kept for an operator as `*.bad`: nothing unreadable is deleted
                shutil.copyfile(path, path.with_suffix(".bad"))
            if not kept:
                path.unlink()
                continue
            self._left[path] = {r.seq for r in kept}
            self._segment_of.update((r.seq, path) for r in kept)
            results.extend(kept)
        return sorted(results, key=lambda r: r.seq)

    async def save(self, result: ExecutionFinished) -> None:
        await self._commit.write(result)

    def remove(self, seq: int) -> None:
        """Forgets an acknowledged result; its segment is deleted (in the background) once it holds no other and
        is closed. The open segment is closed then, unless a write to it is under way."""
        path = self._segment_of.pop(seq, None)
        if path is None:
            return
        left = self._left[path]
        left.discard(seq)
        if left:
            return
        del self._left[path]
        if self._open is not None and self._open.path == path:
            if self._writing:
                return  # what is being written keeps it; a later remove() closes it
            self._close_open()
        self._doom(path)

    def close(self) -> None:
        """Closes the open segment's file (at shutdown; a later save opens a new segment)."""
        if self._open is not None:
            self._close_open()

    def segments(self) -> int:
        return len(self._left)

    async def _delete(self) -> None:
        while self._doomed:
            doomed, self._doomed = self._doomed, []
            await asyncio.to_thread(_unlink_all, doomed)

    async def _write(self, results: list[ExecutionFinished]) -> None:
        data = b"".join(_encoder.encode(r) + b"\n" for r in results)
        segment = self._open
        if segment is not None and (segment.results >= SEGMENT_RESULTS or segment.nbytes >= SEGMENT_BYTES):
            self._close_open()
            if segment.path not in self._left:  # all acknowledged while writes kept it open
                self._doom(segment.path)
            segment = None
        if segment is None:
            segment = self._open = _Segment(self.directory / f"{results[0].seq:020d}.jsonl")
        self._writing = True
        try:
            await asyncio.to_thread(segment.append, data)
        except BaseException:
            if self._open is segment:
                self._close_open()  # its last line may be torn: later results go to a new segment
                if segment.path not in self._left:
                    self._doom(segment.path)  # nothing in it is waiting for an acknowledgement
            raise
        finally:
            self._writing = False
        segment.results += len(results)
        self._left.setdefault(segment.path, set()).update(r.seq for r in results)
        self._segment_of.update((r.seq, segment.path) for r in results)

    def _doom(self, path: Path) -> None:
        """Deletes a closed segment that holds nothing unacknowledged, in the background."""
        self._doomed.append(path)
        if self._deleting is None or self._deleting.done():
            self._deleting = asyncio.create_task(self._delete())

    def _close_open(self) -> None:
        assert self._open is not None
        self._open.close()
        self._open = None


class _Segment(AppendedFile):
    """The segment results are appended to: its file stays open between writes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.results = 0
        self.nbytes = 0

    def append(self, data: bytes) -> bool:
        """Appends and fsyncs (blocking: call in a thread). Creating the file also fsyncs its directory."""
        created = super().append(data)
        self.nbytes += len(data)
        if created:
            fsync_directory(self.path.parent)
        return created


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # a segment left behind is delivered again after a restart, and ignored
            log.warning("could not delete journal segment path=%s: %s", path, exc)
