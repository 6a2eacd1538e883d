"""Stopping child processes for good: TERM, a bounded wait, then KILL."""

from __future__ import annotations

import contextlib
import subprocess


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    """Terminates proc (if still running) and waits; kills it after timeout_s. Returns its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
