"""Runs every benchmark scenario: `.venv/bin/python -m benchmarks.run [--quick] [--only NAME[,NAME]]`.

Prints one table of every figure with its goal and verdict (PASS / FAIL / INFO), writes PNG plots and
summary.json + summary.md under benchmarks/results/ (logs of every process under benchmarks/results/run/).
Peers are measured in the same run, on the same machine, one at a time. Exit code 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import resource
import shutil
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.report import at_least, fmt
from benchmarks.scenarios import Ctx
from benchmarks.setup_peers import ensure_peers, versions
from benchmarks.support import REPO, machine

SCENARIOS = ["schedule", "limits", "lag", "herd", "throughput", "failover", "scale", "fanout", "history"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: the whole run in under 3 minutes")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios among: {', '.join(SCENARIOS)}")
    parser.add_argument("--no-setup", action="store_true", help="do not install missing peers")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or SCENARIOS
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose among {', '.join(SCENARIOS)}")
    if not args.no_setup:
        ensure_peers()
    # 1 000 simulated executors hold 2 000 sockets, and the leader a connection per socket.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65_536)), hard))
    run_dir = args.results / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    ctx = Ctx(quick=args.quick, results=args.results, run_dir=run_dir)
    started = datetime.now(UTC)
    began = time.monotonic()
    info = {"machine": machine(), "versions": versions()}
    print(f"machine: {info['machine']}", flush=True)
    print(f"versions: {info['versions']}", flush=True)
    for name in chosen:
        module = importlib.import_module(f"benchmarks.scenarios.{name}")
        print(f"== {name} ({time.monotonic() - began:.0f} s into the run)", flush=True)
        first = len(ctx.report.figures)
        t = ctx.began = time.monotonic()
        try:
            asyncio.run(module.run(ctx))
        except Exception as exc:  # one scenario's failure is reported, and the others still run
            (run_dir / f"{name}-error.txt").write_text(traceback.format_exc())
            ctx.report.add(name, "scenario completed", 0, goal=at_least(1), note=f"{type(exc).__name__}: {exc}"[:400])
        ctx.report.durations[name] = round(time.monotonic() - t, 1)
        for figure in ctx.report.figures[first:]:
            print(f"   {figure.name}: {fmt(figure.value, figure.unit)} {figure.unit} {figure.verdict}", flush=True)
    duration = time.monotonic() - began
    print()
    print(ctx.report.table())
    for scenario, notes in ctx.report.notes.items():
        for note in notes:
            print(f"  [{scenario}] {note}")
    meta = {"started": started.isoformat(timespec="seconds"), "quick": args.quick, "duration_s": round(duration, 1),
            "scenarios": chosen, **info}  # fmt: skip
    ctx.report.write(args.results, meta)
    counts = ctx.report.counts()
    print(f"\n{counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['INFO']} INFO in {duration:.0f} s; "
          f"summary in {args.results / 'summary.md'}, plots in {args.results}")  # fmt: skip
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
