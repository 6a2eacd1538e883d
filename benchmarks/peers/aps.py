"""APScheduler 3 peer, run in its own process: the same jobs as cronbus, in-process, timestamps to a JSON file.

python -m benchmarks.peers.aps lag  --jobs N --start T --duration D [--shell] --out FILE
python -m benchmarks.peers.aps herd --jobs N --start T --bound S --out FILE

`lag`: N interval jobs every second from the whole second T for D seconds. `herd`: N date jobs at T.
Each run records (job, scheduled run time, function start, function end); the scheduled time comes from
APScheduler's own submission event, paired with the function's calls per job in order.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
)
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

calls: dict[str, list[tuple[float, float]]] = defaultdict(list)
submitted: dict[str, list[float]] = defaultdict(list)
lost = {"missed": 0, "max_instances": 0}
done = threading.Event()


def _on_event(event: Any) -> None:
    if event.code == EVENT_JOB_SUBMITTED:
        submitted[event.job_id].extend(t.timestamp() for t in event.scheduled_run_times)
    elif event.code == EVENT_JOB_MISSED:
        lost["missed"] += 1
    elif event.code == EVENT_JOB_MAX_INSTANCES:
        lost["max_instances"] += 1


def _trigger(mode: str, start: datetime, duration: float) -> Any:
    if mode == "lag":
        end = start + timedelta(seconds=duration - 0.5)
        return IntervalTrigger(seconds=1, start_date=start, end_date=end, timezone=UTC)
    return DateTrigger(run_date=start, timezone=UTC)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["lag", "herd"])
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--start", type=float, required=True, help="wall-clock instant (a whole second)")
    parser.add_argument("--duration", type=float, default=0)
    parser.add_argument("--bound", type=float, default=60)
    parser.add_argument("--shell", action="store_true", help="each run spawns /bin/true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    total = args.jobs if args.mode == "herd" else args.jobs * round(args.duration)
    counter = {"n": 0}
    lock = threading.Lock()

    def run(job_id: str) -> None:
        started = time.time()
        if args.shell:
            subprocess.run(["/bin/true"], check=False)
        calls[job_id].append((started, time.time()))
        with lock:
            counter["n"] += 1
            if counter["n"] >= total:
                done.set()

    # Defaults (a thread pool of 10), except: late runs still run (so their lateness is measured, not hidden).
    scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"misfire_grace_time": None, "coalesce": False})
    scheduler.add_listener(_on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    start = datetime.fromtimestamp(args.start, UTC)
    for i in range(args.jobs):
        job_id = f"job-{i}"
        scheduler.add_job(run, _trigger(args.mode, start, args.duration), args=[job_id], id=job_id)
    scheduler.start()
    loaded = time.time()
    done.wait(max(0.0, args.start + args.duration - time.time()) + args.bound)
    scheduler.shutdown(wait=False)
    runs = []
    for job_id, times in calls.items():
        for scheduled, (started, finished) in zip(submitted[job_id], times, strict=False):
            runs.append((job_id, scheduled, started, finished))
    with open(args.out, "w") as file:
        json.dump({"runs": runs, "expected": total, "lost": lost, "loaded_at": loaded}, file)


if __name__ == "__main__":
    main()
