"""Finished results not yet acknowledged by a leader, in fsynced segment files, so a restart delivers them."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import msgspec

from cronbus.common.messages import ExecutionFinished
from cronbus.services.executor.group_commit import GroupCommit, write_durably

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ExecutionFinished)


class Journal:
    """A directory of segments: `<seq>.jsonl` files of ExecutionFinished, one JSON line each (an operator can
    read them), named after the first seq they hold.

    save() returns once the result is durable (segment and directory fsynced). Results saved while a write is
    under way go in the next segment together (group commit: a burst of N results costs two fsyncs, not 2N). A
    segment is deleted once every result in it is acknowledged (remove()); deletion is not fsynced. After a restart
    every result of a segment left on disk is sent again, acknowledged ones included: the leader ignores a result
    it has recorded.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._segment_of: dict[int, Path] = {}  # seq -> its segment
        self._left: dict[Path, set[int]] = {}  # segment -> seqs in it not yet removed
        self._commit: GroupCommit[ExecutionFinished] = GroupCommit(self._write)
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
        """Forgets an acknowledged result; its segment is deleted (in the background) once it holds no other."""
        path = self._segment_of.pop(seq, None)
        if path is None:
            return
        left = self._left[path]
        left.discard(seq)
        if not left:
            del self._left[path]
            self._doomed.append(path)
            if self._deleting is None or self._deleting.done():
                self._deleting = asyncio.create_task(self._delete())

    def segments(self) -> int:
        return len(self._left)

    async def _delete(self) -> None:
        while self._doomed:
            doomed, self._doomed = self._doomed, []
            await asyncio.to_thread(_unlink_all, doomed)

    async def _write(self, results: list[ExecutionFinished]) -> None:
        path = self.directory / f"{results[0].seq:020d}.jsonl"
        data = b"".join(_encoder.encode(r) + b"\n" for r in results)
        await asyncio.to_thread(write_durably, path, data)
        self._left[path] = {r.seq for r in results}
        self._segment_of.update((r.seq, path) for r in results)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # a segment left behind is delivered again after a restart, and ignored
            log.warning("could not delete journal segment path=%s: %s", path, exc)
