"""Consul failing at each step of a takeover, not only in steady state: the schedulers reach Consul through a proxy
that answers 500, cuts the connection or hangs on the requests of one step, armed just after the leader is killed.
The standby taking over must step down or retry, never exit, and no slot may be lost or run twice.

Steps: reading the job statuses, reading the unfinished runs' records (recovery), the first transactions
(catch-up and launches), and the day stats. CRONBUS_CHAOS_FULL=1 repeats each with every action."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from cronbus.common.models import Job, now_utc
from tests.chaos.conftest import FigureSheet
from tests.chaos.consul_faults import Action, ConsulFaults, Rule
from tests.chaos.support import (
    all_executions,
    hold,
    new_leader,
    settle,
    slot_figures,
    starts,
    tally_slots,
    wait_leader,
    wait_running,
)
from tests.helpers import Cluster, ServiceProcess, async_wait_until
from tests.integration.scheduling import client, executor_joined, put_job

FULL = os.environ.get("CRONBUS_CHAOS_FULL") == "1"
STEPS: list[tuple[str, str, str, int]] = [  # (step, method, path, how many requests fail)
    ("job statuses", "GET", r"^/v1/kv/cronbus/status/\?.*recurse", 2),
    ("recovery reads", "GET", r"^/v1/kv/cronbus/executions/slow", 3),
    ("first transactions", "PUT", r"^/v1/txn", 3),
    ("day stats", "GET", r"^/v1/kv/cronbus/stats/", 2),
]
ACTIONS: list[Action] = ["500", "cut", "hang"] if FULL else ["500", "cut"]
SCHEDULER_ARGS = ("--history-limit", "100000", "--log-level", "info", "--lock-ttl", "1.5")


@pytest.mark.slow
@pytest.mark.timeout(900 if FULL else 420)
async def test_consul_failing_during_each_step_of_a_takeover(
    cluster: Cluster, fresh_consul: DevAgent, figures: FigureSheet
) -> None:
    store = Store(client(fresh_consul))
    faults = await ConsulFaults(fresh_consul.address).start()
    try:
        # The schedulers' Consul is the proxy; the executors talk to Consul directly.
        schedulers = {name: _scheduler(cluster, faults, name) for name in ("s1", "s2")}
        executors = [cluster.executor("--capacity", "64", "--log-level", "info", name=f"e{i}") for i in (1, 2)]
        await wait_leader(store)
        await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="an executor")
        jobs: list[Job] = [await put_job(store, name=f"tick{i:02d}", schedule="@every 1s", executor="noop")
                           for i in range(20)]  # fmt: skip
        jobs.append(await put_job(store, name="slow", schedule="@every 1s", executor="shell",
                                  executor_config={"command": "sleep 2"}))  # fmt: skip
        await wait_running(store, jobs)
        since = now_utc()
        rounds: list[str] = []
        for step, method, path, count in STEPS:
            for action in ACTIONS:
                current = await wait_leader(store, 20, "a leader to kill")
                schedulers[current.name].kill()
                rule = faults.fault(method, path, count, action)

                async def faulted(armed: Rule = rule) -> bool:
                    return armed.hit >= armed.count

                await async_wait_until(faulted, timeout_s=60, what=f"the takeover reaching '{step}' ({action})")
                faults.clear()

                async def taken_over(term: int = current.term) -> object:
                    return await new_leader(store, after_term=term)

                await async_wait_until(taken_over, timeout_s=60, what=f"a leader after '{step}' failed ({action})")
                dead = [name for name, p in schedulers.items() if not p.alive() and name != current.name]
                assert not dead, f"{dead} exited during a takeover with Consul failing on {step} ({action})"
                schedulers[current.name] = _scheduler(cluster, faults, current.name)
                rounds.append(f"{step}/{action}: {rule.hit} faulted")
                await hold(3, "runs going on before the next kill")
        until = now_utc() - timedelta(seconds=1)
        await settle(store, jobs, since, until, timeout_s=30)
        tally = tally_slots(jobs, await all_executions(store), starts(executors), since, until)
        figures.add(slot_figures(
            f"Consul failing at each takeover step ({len(rounds)} takeovers: {', '.join(a for a in ACTIONS)})",
            tally, rounds="; ".join(rounds),
        ))  # fmt: skip
        assert tally.duplicated == 0, tally.problems()
        assert tally.lost == 0, tally.problems()
        assert tally.ran_but_missed == 0, tally.problems()
        assert all(p.alive() for p in executors)
        logs = "".join(p.log() for p in schedulers.values())
        assert "crashed" not in logs, logs[-3000:]
    finally:
        await faults.stop()
        await store.consul.close()


def _scheduler(cluster: Cluster, faults: ConsulFaults, name: str) -> ServiceProcess:
    """A scheduler whose Consul is the fault proxy (the --consul given last wins)."""
    return cluster.start("scheduler", *SCHEDULER_ARGS, "--consul", faults.address, name=name)
