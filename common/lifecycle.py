"""Process lifecycle: one asyncio loop, SIGTERM/SIGINT turn into a stop event, a crashed task ends the process."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


def run_service(name: str, main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Runs main(stop) until it returns; SIGTERM or SIGINT set `stop`. Returns the process exit code."""

    async def runner() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            on_signal(sig, stop.set)
        await main(stop)

    try:
        asyncio.run(runner())
    except Exception as exc:  # task boundary of the whole process: log, exit non-zero
        for error in exc.exceptions if isinstance(exc, ExceptionGroup) else [exc]:
            log.critical("%s crashed: %r", name, error, exc_info=error)
        return 1
    log.info("%s stopped", name)
    return 0


def on_signal(sig: signal.Signals, callback: Callable[[], None]) -> Callable[[], object]:
    """Calls `callback` on the running loop when `sig` comes; returns what undoes it. The loop's own handler where it
    has one (Unix); elsewhere (Windows' loop has none) a plain signal handler that hands over to the loop
    (docs/portability.md)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(sig, callback)
    except NotImplementedError:
        previous = signal.signal(sig, lambda _sig, _frame: loop.call_soon_threadsafe(callback))
        return lambda: signal.signal(sig, previous)
    return lambda: loop.remove_signal_handler(sig)


async def reload_on_sighup(reload: Callable[[], Awaitable[None]], until: asyncio.Event) -> None:
    """Runs reload() at each SIGHUP until `until` is set, one at a time: SIGHUPs that come during a reload make one
    more. An error of reload() ends this task, and so the process (rule 4): reload() handles what it can survive.
    A system without SIGHUP (Windows) reloads by a restart: this then only waits."""
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is None:
        log.debug("no SIGHUP on this system: what it reloads is read again at a restart")
        await until.wait()
        return
    wanted = asyncio.Event()
    undo = on_signal(hangup, wanted.set)
    ended = asyncio.create_task(until.wait())
    try:
        while not until.is_set():
            woken = asyncio.create_task(wanted.wait())
            await asyncio.wait([woken, ended], return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            if wanted.is_set() and not until.is_set():
                wanted.clear()
                log.info("SIGHUP: reloading")
                await reload()
    finally:
        ended.cancel()
        undo()


def tune_gc() -> None:
    """For the services' hot paths: every run allocates a few dozen objects that live for milliseconds. Python's
    default thresholds collect the young generation every 700 allocations and run full collections (over every
    job and run held) so often that they dominated a leader at 2 000 runs per second."""
    gc.set_threshold(50_000, 50, 100)


async def wait_or_stop(stop: asyncio.Event, timeout_s: float) -> bool:
    """Sleeps up to timeout_s; True when `stop` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout_s)
    except TimeoutError:
        return False
    return True
