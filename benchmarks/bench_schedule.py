"""Benchmark: next fire of 100 000 jobs with mixed schedules and zones, cronbus.common.schedule vs bare croniter.

Usage: .venv/bin/python -m benchmarks.bench_schedule [--quick] [--jobs N] (also part of `python -m benchmarks.run`)
Goal: the next fire of 100 000 parsed jobs in < 2 s and no slower than 2x croniter. Exits 1 when missed.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from croniter import croniter

from cronbus.common.schedule import Schedule, parse_schedule

# Six fields, seconds first, in the subset croniter reads the same way (no hash, no descriptors).
SCHEDULES = [
    "0 */15 * * * *",
    "0 30 9 * * 1-5",
    "0 0 0 * * *",
    "0 0 * * * *",
    "0 0 12 1 * *",
    "0 */5 * * * *",
    "0 0 0 29 2 *",
    "0 0 8-18/2 * * MON-FRI",
    "0 30 2 * * *",
    "0 0 0 1 1 *",
    "*/10 * * * * *",
    "0 15 3 * * 0",
]
ZONES = ["", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe"]
NOW = datetime(2026, 5, 17, 13, 7, 11, tzinfo=UTC)
GOAL_S = 2.0
GOAL_RATIO = 2.0
FULL_JOBS = 100_000
T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    # Like timeit: collector pauses would be charged to whichever side allocated last, so keep them out.
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - start
    finally:
        gc.enable()


class Measured(NamedTuple):
    jobs: int
    ours_parse: float
    ours_next: float
    theirs_build: float
    theirs_next: float
    agree: int

    @property
    def projected_next_s(self) -> float:
        """Next fire of FULL_JOBS jobs, projected from this run's per-job time."""
        return self.ours_next * FULL_JOBS / self.jobs

    @property
    def ratio(self) -> float:
        return self.ours_next / self.theirs_next


def measure(n: int) -> Measured:
    jobs = [(SCHEDULES[i % len(SCHEDULES)], ZONES[i // len(SCHEDULES) % len(ZONES)], f"job-{i}") for i in range(n)]

    def parse_all() -> list[Schedule]:
        out = []
        for expr, zone, name in jobs:
            sched = parse_schedule(expr, zone, job_name=name)
            assert sched is not None
            out.append(sched)
        return out

    def build_all() -> list[croniter]:
        return [
            croniter(expr, NOW.astimezone(ZoneInfo(zone or "UTC")), second_at_beginning=True) for expr, zone, _ in jobs
        ]

    parsed, ours_parse = timed(parse_all)
    ours, ours_next = timed(lambda: [s.next_after(NOW) for s in parsed])
    iters, theirs_build = timed(build_all)
    theirs, theirs_next = timed(lambda: [it.get_next(datetime) for it in iters])
    agree = sum(a == b for a, b in zip(ours, theirs, strict=True))
    return Measured(n, ours_parse, ours_next, theirs_build, theirs_next, agree)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"10 000 jobs instead of {FULL_JOBS:,}")
    parser.add_argument("--jobs", type=int, default=0, help="number of jobs (overrides --quick)")
    args = parser.parse_args()
    n = args.jobs or (10_000 if args.quick else FULL_JOBS)
    r = measure(n)
    rows = [
        ("parse / build iterator", r.ours_parse, r.theirs_build),
        ("next fire (pre-parsed)", r.ours_next, r.theirs_next),
        ("parse + next fire", r.ours_parse + r.ours_next, r.theirs_build + r.theirs_next),
    ]
    print(f"schedule benchmark: {n:,} jobs, {len(SCHEDULES)} schedules x {len(ZONES)} zones, now {NOW.isoformat()}")
    print(f"{'phase':<26}{'cronbus':>12}{'croniter':>12}{'ratio':>9}{'cronbus/job':>14}{'croniter/job':>14}")
    for label, a, b in rows:
        print(f"{label:<26}{a:>10.3f} s{b:>10.3f} s{a / b:>8.2f}x{a / n * 1e6:>11.1f} µs{b / n * 1e6:>11.1f} µs")
    print(f"same next fire as croniter: {r.agree:,}/{n:,}")
    ok_time, ok_ratio = r.projected_next_s < GOAL_S, r.ratio <= GOAL_RATIO
    verdict = "PASS" if ok_time else "FAIL"
    print(f"goal: next fire of {FULL_JOBS:,} jobs < {GOAL_S:g} s: {r.projected_next_s:.3f} s {verdict}")
    print(f"goal: <= {GOAL_RATIO:g}x croniter: {r.ratio:.2f}x {'PASS' if ok_ratio else 'FAIL'}")
    return 0 if ok_time and ok_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
