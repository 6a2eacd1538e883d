"""Bad jobs: 100 MB of output, non-UTF-8 output, a forked daemon, a job that ignores SIGTERM past its timeout,
a 10 000-character name. Each ends with a clear record, and the executor's memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from cronbus.common import messages as m
from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from cronbus.common.models import Execution
from tests.chaos.conftest import FigureSheet
from tests.chaos.figures import Figures
from tests.chaos.support import OPEN, pid_alive, vm_rss_kib
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import client, control, executions, executor_joined, put_job

KILL_GRACE_S = 2.0
OUTPUT_KEPT = 256_000
RSS_GROWTH_BOUND_MIB = 64  # 100 MB went through the executor: it may keep 256 kB of it, not the lot


@dataclass
class Case:
    name: str
    what: str
    config: dict[str, str]
    timeout: str = ""


async def test_bad_jobs_end_with_a_clear_record_and_bounded_memory(
    cluster: Cluster, fresh_consul: DevAgent, figures: FigureSheet, tmp_path: Path
) -> None:
    store = Store(client(fresh_consul))
    pids = {k: tmp_path / f"{k}.pid" for k in ("daemon", "background", "stubborn")}
    try:
        cluster.scheduler("--log-level", "info", name="s1")
        executor = cluster.executor("--kill-grace", str(KILL_GRACE_S), "--log-level", "info", name="e1")
        _, url = cluster.gateway("--log-level", "info", name="g1")
        await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="an executor")
        cases = [
            Case("flood", "100 MB of output (zero bytes)", {"command": "head -c 100000000 /dev/zero"}),
            Case("binary", "non-UTF-8 output",
                 {"command": r"printf 'ok \377\376 not utf-8 \200\n'", "shell": "true"}),
            Case("binary-big", "300 kB of random bytes", {"command": "head -c 300000 /dev/urandom"}),
            Case("daemon", "forks a daemon (setsid) and exits", {
                "command": f"setsid sh -c 'echo $$ > {pids['daemon']}; exec sleep 60' & "
                           f"sleep 60 & echo $! > {pids['background']}; echo forked",
                "shell": "true"}),
            Case("stubborn", "ignores SIGTERM, timeout 2s",
                 {"command": f"trap '' TERM; echo $$ > {pids['stubborn']}; sleep 30", "shell": "true"}, "2s"),
        ]  # fmt: skip
        for case in cases:
            await put_job(store, name=case.name, schedule="@manually", executor="shell",
                          executor_config=case.config, timeout=case.timeout)  # fmt: skip
        baseline_kib = vm_rss_kib(executor.pid)
        peak_kib = baseline_kib
        sampling = True

        async def sample() -> None:
            nonlocal peak_kib
            while sampling:
                with contextlib.suppress(FileNotFoundError, AssertionError):
                    peak_kib = max(peak_kib, vm_rss_kib(executor.pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        for case in cases:
            assert (await control(store, m.RunJob(req_id=uuid.uuid4().hex, job_name=case.name))).ok, case.name

        async def ended(name: str) -> Execution | None:
            records = await executions(store, name)
            return records[0] if records and records[0].status not in OPEN else None

        results: dict[str, Execution | None] = dict.fromkeys((c.name for c in cases), None)

        async def all_ended() -> bool:
            for name, record in results.items():
                results[name] = record or await ended(name)
            return all(results.values())

        with contextlib.suppress(AssertionError):  # what has not ended by then is reported below
            await async_wait_until(all_ended, timeout_s=20, interval_s=0.3, what="every bad job ending")
        sampling = False
        await sampler
        growth_mib = (peak_kib - baseline_kib) / 1024

        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            long_name = "n" * 10_000
            body = {"name": long_name, "schedule": "@manually", "executor": "noop"}
            response = await http.post("/v1/jobs", json=body)
        _, stored = await store.list_jobs()
        long_name_stored = any(len(s.name) > 1000 for s in stored)

        checks: dict[str, Callable[[Execution], bool]] = {
            "flood": lambda r: r.status == "success" and r.output_truncated and len(r.output.encode()) <= OUTPUT_KEPT,
            "binary": lambda r: r.status == "success" and "\ufffd" in r.output and "not utf-8" in r.output,
            "binary-big": lambda r: r.status == "success" and r.output_truncated,
            "daemon": lambda r: r.status == "success" and "forked" in r.output and _seconds(r) < 5,
            "stubborn": lambda r: (
                r.status == "timeout" and "timed out after 2s" in r.reason and _seconds(r) < 2 + KILL_GRACE_S + 3
            ),
        }
        daemon_alive = pids["daemon"].exists() and pid_alive(int(pids["daemon"].read_text()))
        background_alive = pids["background"].exists() and pid_alive(int(pids["background"].read_text()))
        stubborn_alive = pids["stubborn"].exists() and pid_alive(int(pids["stubborn"].read_text()))
        survivors: dict[str, dict[str, bool]] = {
            "daemon": {"setsid_daemon_survives": daemon_alive, "background_child_survives": background_alive},
            "stubborn": {"still_running_after": stubborn_alive},
        }
        for case in cases:
            record = results[case.name]
            good = record is not None and checks[case.name](record)
            details = {**_details(record, growth_mib), **survivors.get(case.name, {})}
            figures.add(
                Figures(
                    fault=f"bad job: {case.what}",
                    expected=1,
                    executed=int(good),
                    lost=int(record is None),
                    details=details,
                )
            )
        figures.add(
            Figures(
                fault="bad job: a 10 000-character name",
                expected=1,
                missed=int(response.status_code == 400),
                details={"http_status": response.status_code, "stored": long_name_stored},
            )
        )
        assert executor.alive(), "the executor died"
        assert response.status_code == 400 and not long_name_stored, response.text[:200]
        assert growth_mib < RSS_GROWTH_BOUND_MIB, f"executor RSS grew by {growth_mib:.0f} MiB"
        assert not background_alive, "a background child in the job's process group outlived the run"
        assert not stubborn_alive, "the SIGTERM-ignoring job still runs after its timeout"
        never = [name for name, record in results.items() if record is None]
        assert never == [], f"runs that never got a final record: {never}"
        wrong = {n: (r.status, r.reason, r.output[:80]) for n, r in results.items() if r and not checks[n](r)}
        assert wrong == {}, wrong
    finally:
        for path in pids.values():
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(int(path.read_text()), signal.SIGKILL)
        await store.consul.close()


def _details(record: Execution | None, growth_mib: float) -> dict[str, int | float | str | bool]:
    details: dict[str, int | float | str | bool] = {
        "status": record.status if record is not None else "never finished",
        "reason": record.reason if record is not None else "",
        "executor_rss_growth_mib": growth_mib,
    }
    if record is not None:
        details["output_chars"] = len(record.output)
        details["seconds"] = _seconds(record)
    return details


def _seconds(record: Execution) -> float:
    return (record.finished_at - record.started_at).total_seconds()
