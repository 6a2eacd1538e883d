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
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        asyncio.run(runner())
    except Exception as exc:  # task boundary of the whole process: log, exit non-zero
        for error in exc.exceptions if isinstance(exc, ExceptionGroup) else [exc]:
            log.critical("%s crashed: %r", name, error, exc_info=error)
        return 1
    log.info("%s stopped", name)
    return 0


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
