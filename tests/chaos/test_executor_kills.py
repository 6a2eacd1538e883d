"""Kill -9 an executor in the middle of several runs: each becomes failed "executor lost" within the heartbeat
timeout and is retried on another executor (docs/semantics.md §3.5); nothing the dead executor started keeps running
beside its retry."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path

from cronbus.common import messages as m
from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from cronbus.common.models import Execution, now_utc
from tests.chaos.conftest import FigureSheet
from tests.chaos.figures import Figures
from tests.chaos.support import all_executions, pid_alive
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import client, control, executor_joined, put_job

RUNS = 9
RUN_S = 8  # long enough to be killed in the middle, short enough for the retries to end soon
HEARTBEAT_S, LIVENESS = 1.0, 3  # the services' defaults: an executor is dead after 3 s of silence
DETECTION_BOUND_S = HEARTBEAT_S * LIVENESS + 3.0  # plus the leader's tick and a loaded machine's slack


async def test_executor_killed_mid_runs_fails_them_and_retries_elsewhere(
    cluster: Cluster, fresh_consul: DevAgent, figures: FigureSheet, tmp_path: Path
) -> None:
    store = Store(client(fresh_consul))
    pids = tmp_path / "pids"
    pids.mkdir()
    orphans: list[int] = []
    try:
        cluster.scheduler("--log-level", "info", name="s1")
        executors = {n: cluster.executor("--log-level", "info", name=n) for n in ("e1", "e2", "e3")}

        async def three_joined() -> bool:
            return await executor_joined(store) and "executor joined node=e3" in cluster.processes[0].log()

        await async_wait_until(three_joined, timeout_s=20, what="three executors")
        names = [f"long{i}" for i in range(RUNS)]
        command = f"echo $$ > {pids}/$CRONBUS_EXECUTION_ID.pid; exec sleep {RUN_S}"
        for name in names:
            await put_job(store, name=name, schedule="@manually", retries=1, retry_backoff="1s", executor="shell",
                          executor_config={"command": command, "shell": "true"})  # fmt: skip
        for name in names:
            assert (await control(store, m.RunJob(req_id=uuid.uuid4().hex, job_name=name))).ok

        async def all_running() -> dict[str, list[Execution]]:
            records = await all_executions(store)
            first = [r for n in names for r in records.get(n, []) if r.attempt == 1]
            return records if len(first) == RUNS and all(r.status == "running" for r in first) else {}

        records = await async_wait_until(all_running, timeout_s=20, what=f"{RUNS} runs running")
        by_node: dict[str, list[Execution]] = {}
        for name in names:
            record = records[name][0]
            by_node.setdefault(record.node_name, []).append(record)
        victim = max(by_node, key=lambda n: len(by_node[n]))
        doomed = by_node[victim]
        assert len(doomed) >= 2, f"runs not spread over the executors: {by_node}"
        lost_at = now_utc()
        executors[victim].kill()

        async def declared_lost() -> list[Execution]:
            now = await all_executions(store)
            firsts = [now[r.job_name][0] for r in doomed]
            return firsts if all(r.status != "running" for r in firsts) else []

        failed = await async_wait_until(declared_lost, timeout_s=20, what="the dead executor's runs resolved")
        detection_s = max((r.finished_at - lost_at).total_seconds() for r in failed)
        orphans = [pid for r in doomed if pid_alive(pid := _pid(pids, r.id))]

        async def retries_running() -> list[Execution]:
            now = await all_executions(store)
            again = [r for d in doomed for r in now.get(d.job_name, []) if r.attempt == 2]
            return again if len(again) == len(doomed) and all(r.status != "pending" for r in again) else []

        retries = await async_wait_until(retries_running, timeout_s=15, what="the retries started")
        # A process of the dead executor still alive while its retry runs is the same run twice.
        doubled = [r.job_name for r, d in zip(retries, doomed, strict=True) if pid_alive(_pid(pids, d.id))]

        async def retried() -> dict[str, list[Execution]]:
            now = await all_executions(store)
            done = [n for n in names if any(r.status == "success" for r in now.get(n, []))]
            return now if len(done) == RUNS else {}

        final: dict[str, list[Execution]] = {}
        with contextlib.suppress(AssertionError):
            final = await async_wait_until(retried, timeout_s=RUN_S + 20, what="every run succeeding")
        final = final or await all_executions(store)
        succeeded = sum(any(r.status == "success" for r in final.get(n, [])) for n in names)
        figures.add(
            Figures(
                fault=f"executor kill -9 mid-run ({len(doomed)} of {RUNS} runs on it)",
                expected=RUNS,
                executed=succeeded,
                duplicated=len(doubled),
                lost=RUNS - succeeded,
                details={
                    "detection_s": detection_s,
                    "bound_s": DETECTION_BOUND_S,
                    "retried_elsewhere": sum(r.node_name != victim for r in retries),
                    "orphans_alive_at_detection": len(orphans),
                    "orphans_running_beside_retry": len(doubled),
                },
            )
        )
        assert all(r.status == "failed" and r.reason == "executor lost" for r in failed), failed
        assert detection_s < DETECTION_BOUND_S
        assert succeeded == RUNS, {n: [(r.attempt, r.status, r.node_name) for r in final.get(n, [])] for n in names}
        assert all(r.node_name != victim for r in retries)
        assert not doubled, f"processes of the killed executor still run beside their retries: {orphans}"
    finally:
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await store.consul.close()


def _pid(directory: Path, exec_id: str) -> int:
    return int((directory / f"{exec_id}.pid").read_text())
