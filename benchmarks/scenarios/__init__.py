"""The benchmark scenarios; each module has `async def run(ctx: Ctx) -> None` that adds figures to ctx.report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.limits import Limits
from benchmarks.report import Report


@dataclass
class Ctx:
    """What a scenario gets: its size (quick or full), where to write, the report, shared measurements."""

    quick: bool
    results: Path  # benchmarks/results: plots and summaries
    run_dir: Path  # logs and data of the processes of this run
    report: Report = field(default_factory=Report)
    limits: Limits | None = None  # measured once, by the limits scenario or by the first that needs it
    began: float = field(default_factory=time.monotonic)  # reset by the runner at each scenario

    def step(self, text: str) -> None:
        """A progress line, with the seconds since the scenario began."""
        print(f"   . {text} ({time.monotonic() - self.began:.0f} s)", flush=True)

    def size(self, quick: int, full: int) -> int:
        return quick if self.quick else full
