"""Kills the runs of an executor that died: a small process of its own, in a session of its own.

The executor tells it each run's process group as the run starts ("+PGID") and once it ended ("-PGID"); on a
system without process groups, the pid of the run's command, whose process tree it kills (processes.py; a Windows
run in a Job Object needs no guardian). When
its stdin reaches end of file (the executor exited or was killed, even with SIGKILL) it kills the groups still
registered, so a run declared "executor lost" and retried elsewhere does not go on here as well. Processes a run
moves out of its group are not covered (a per-run cgroup would be), nor a run started in the very turn of the
executor's loop it died in.

One process for all runs, where a wrapper per run (`setpriv --pdeathsig`) cost an extra exec each: it made a
`/bin/true` run three times as expensive to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys

import psutil

from cronbus.services.executor import processes

log = logging.getLogger(__name__)
RETRY_S = 0.1
PIPE_BUF = getattr(select, "PIPE_BUF", 512)  # what a pipe takes whole (POSIX's least, where the system says none)


def main(argv: list[str]) -> None:
    """The guardian process: `python -m cronbus.services.executor.guardian [groups|trees]`, stdin from the
    executor. Its argument says what the executor registers: process groups, or (a system without them) the pids
    of runs' commands, whose process trees it kills (processes.py)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the executor must not disarm it
    kill = _kill_tree if argv[:1] == ["trees"] else _kill_group
    ids: set[int] = set()
    for line in sys.stdin.buffer:
        try:
            run_id = int(line[1:])
        except ValueError:
            continue
        if run_id <= 1:  # never this process's own group (0), every process (-1) or init's
            continue
        if line.startswith(b"+"):
            ids.add(run_id)
        elif line.startswith(b"-"):
            ids.discard(run_id)
    for run_id in ids:
        kill(run_id)


def _mode() -> str:
    """What the guardian is told the executor registers: process groups, or else process trees (also on a Windows
    whose runs got no Job Object, processes.py)."""
    return "groups" if processes.kind() == "groups" else "trees"


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_tree(pid: int) -> None:
    with contextlib.suppress(psutil.Error):
        command = psutil.Process(pid)
        for process in [*command.children(recursive=True), command]:
            with contextlib.suppress(psutil.Error):
                process.kill()


class Guardian:
    """The executor's side, used from its event loop: started at the first run, started again if it is found gone.
    Registrations are written at the loop's next turn (one write for a burst of runs), in whole lines of at most
    PIPE_BUF bytes, which a pipe takes whole or not at all; what a busy guardian does not take is tried again."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._groups: set[int] = set()
        self._unsent = b""
        self._flushing: asyncio.Handle | None = None  # the write scheduled on the loop
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it is scheduled on

    def watch(self, pgid: int) -> None:
        """Called from the event loop, right after the run's process started."""
        self._groups.add(pgid)
        self._queue(b"+%d\n" % pgid)

    def release(self, pgid: int) -> None:
        self._groups.discard(pgid)
        self._queue(b"-%d\n" % pgid)

    def close(self) -> None:
        """Ends the guardian (it kills what is still registered: nothing, once every run ended)."""
        process, self._process = self._process, None
        if process is not None and process.stdin is not None:
            process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)

    def _queue(self, line: bytes) -> None:
        self._unsent += line
        loop = asyncio.get_running_loop()
        if self._flushing is None or self._loop is not loop:  # (a loop that ended took its callback along)
            self._loop = loop
            self._flushing = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = None
        if not self._write():  # tried again a little later
            self._flushing = asyncio.get_running_loop().call_later(RETRY_S, self._flush)

    def _write(self) -> bool:
        """Writes what is queued; False when some of it must wait."""
        process = self._process
        if process is None or process.poll() is not None:
            if process is not None:
                log.error("run guardian exited with code %s: starting it again", process.returncode)
            process = self._start()
        assert process.stdin is not None
        while self._unsent:
            cut = self._unsent.rfind(b"\n", 0, PIPE_BUF) + 1 or len(self._unsent)
            try:
                os.write(process.stdin.fileno(), self._unsent[:cut])
            except BlockingIOError:
                log.warning("run guardian not reading (stopped?): %d bytes of registrations wait", len(self._unsent))
                return False
            except BrokenPipeError:
                log.error("run guardian gone: it is started again")
                return False
            self._unsent = self._unsent[cut:]
        return True

    def _start(self) -> subprocess.Popen[bytes]:
        """Starts the guardian with every group registered so far (what was queued is in there)."""
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, _mode()], stdin=subprocess.PIPE, start_new_session=True
        )  # a session of its own: a signal to the executor's process group does not reach it
        assert process.stdin is not None
        if hasattr(os, "set_blocking"):  # (Python 3.11 on Windows has none for pipes)
            os.set_blocking(process.stdin.fileno(), False)  # a stopped guardian must never block the executor
        self._process = process
        self._unsent = b"".join(b"+%d\n" % pgid for pgid in self._groups)
        return process


if __name__ == "__main__":
    main(sys.argv[1:])
