"""Finished results not yet acknowledged by a leader, one fsynced JSON file each, so a restart delivers them."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import msgspec

from cronbus.common.messages import ExecutionFinished

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ExecutionFinished)


class Journal:
    """A directory of `<seq>.json` files, each one ExecutionFinished (JSON, so an operator can read it).

    save() returns once the result is durable (file and directory fsynced); remove() is not fsynced:
    a removal lost in a crash only means the leader receives a result twice, which it ignores.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self) -> list[ExecutionFinished]:
        """Every saved result, in seq order (blocking; call before serving). An unreadable file is renamed
        to `*.bad`, logged and skipped."""
        self.directory.mkdir(parents=True, exist_ok=True)
        results = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                results.append(_decoder.decode(path.read_bytes()))
            except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("unreadable journaled result path=%s: %s", path, exc)
                path.replace(path.with_suffix(".bad"))
        for stale in self.directory.glob("*.tmp"):  # a save interrupted by a crash, never acknowledged as done
            stale.unlink()
        return sorted(results, key=lambda r: r.seq)

    async def save(self, result: ExecutionFinished) -> None:
        await asyncio.to_thread(self._save, self._path(result.seq), _encoder.encode(result))

    async def remove(self, seq: int) -> None:
        path = self._path(seq)
        await asyncio.to_thread(path.unlink, missing_ok=True)

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}.json"

    def _save(self, path: Path, data: bytes) -> None:
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(path)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
