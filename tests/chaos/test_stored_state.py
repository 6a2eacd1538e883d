"""Stored-state fuzzing: while a real cluster runs jobs every second, write straight into Consul, under every kind
of key cronbus reads (common/consul/keys.py: jobs, status, executions, day stats, the leader and term records, pause),
garbage bytes, JSON of the wrong shape or types, empty, null, truncated and size-limit values, and keys with odd
segments; then kill the leader (twice), so that a standby takes over reading all of it.

Pass: no process exits; every other job keeps every slot; each broken record is reported with its key and why
(a job's `problem` and /health's invalid_jobs, /health's unreadable_records, or the log line "unreadable record
key=..."), and costs only itself. The table of inputs is printed with the chaos figures. CRONBUS_CHAOS_FULL=1
adds seeded random bytes and more leader kills."""

from __future__ import annotations

import os
import random
from collections import Counter
from datetime import timedelta
from typing import Final

import httpx
import msgspec
import pytest

from cronbus.common.consul import keys
from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store, encode
from cronbus.common.models import Execution, JobStatus, now_utc
from tests.chaos.conftest import FigureSheet
from tests.chaos.figures import Figures
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
KILLS: Final = 4 if FULL else 2
SIZE_LIMIT: Final = 512 * 1024  # Consul's largest value (kv_max_value_size)
TRUNCATED: Final = encode(Execution(id="x", job_name="good000", status="running"))[:25]
VALUES: dict[str, bytes] = {
    "garbage bytes": b"\xff\xfe\x00 not json \x80\x81",
    "JSON of the wrong shape": b"[1, 2, 3]",
    "JSON of the wrong types": b'{"name": 5, "success_count": "many", "running": "x", "paused": "yes", "term": "t"}',
    "empty": b"",
    "null": b"null",
    "truncated": TRUNCATED,
    "a string at the size limit": b'"' + b"x" * (SIZE_LIMIT - 2) + b'"',
    "deeply nested": b"[" * 5000 + b"]" * 5000,
}
if FULL:
    rng = random.Random(18)
    VALUES.update({f"random bytes #{i}": rng.randbytes(rng.randint(1, 4096)) for i in range(8)})
ODD_KEYS: Final = [
    keys.JOBS + "fz-odd/sub", keys.JOBS + "%00", keys.JOBS + "fz-%2F%2E%2E", keys.STATUS + "fz-odd/sub",
    keys.EXECUTIONS + "good001", keys.EXECUTIONS + "good001/a/b", keys.STATS + "not-a-day/x",
    keys.STATS + "2026-13-45/99", keys.ROOT + "unknown/x", keys.LEADER + "/sub",
]  # fmt: skip
SCHEDULER_ARGS = ("--history-limit", "100000", "--log-level", "info", "--lock-ttl", "1.5")


def _kinds(day: str) -> dict[str, str]:
    """Per kind of key, the key each value goes under ({i}: the value's number)."""
    return {
        "job definition": keys.JOBS + "fz-job-{i}",
        "job status (of a running job)": keys.status("good002"),
        "job status (of another)": keys.STATUS + "fz-status-{i}",
        "execution (of a running job)": keys.EXECUTIONS + "good001/fz-exec-{i}",
        "day stats": keys.day_stats(day, 90) + "{i}",
        "leader record": keys.LEADER,
        "term record": keys.TERM,
        "pause": keys.PAUSE,
    }


@pytest.mark.slow
@pytest.mark.timeout(900 if FULL else 420)
async def test_stored_state_fuzzing_costs_only_the_broken_records(
    cluster: Cluster, fresh_consul: DevAgent, figures: FigureSheet
) -> None:
    store = Store(client(fresh_consul))
    consul = store.consul
    try:
        schedulers: dict[str, ServiceProcess] = {n: cluster.scheduler(*SCHEDULER_ARGS, name=n) for n in ("s1", "s2")}
        executors = [cluster.executor("--capacity", "64", "--log-level", "info", name=f"e{i}") for i in (1, 2)]
        _, url = cluster.gateway("--log-level", "info", name="gw")
        await wait_leader(store)
        await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="an executor")
        good = [await put_job(store, name=f"good{i:03d}", schedule="@every 1s", executor="noop") for i in range(10)]
        # Jobs whose runs are under way at each kill: the new leader resolves them (recovery reads their records).
        good.append(await put_job(store, name="goodslow", schedule="@every 1s", executor="shell",
                                  executor_config={"command": "sleep 1.5"}))  # fmt: skip
        await wait_running(store, good)
        # A running job's status lists an id whose record is unreadable: the takeover's recovery reads it.
        broken = await put_job(store, name="fz-running", schedule="@manually", executor="noop")
        await consul.kv_put(keys.status("fz-running"), encode(JobStatus(running=["fz-running.x.1"])))
        await consul.kv_put(keys.execution("fz-running", "fz-running.x.1"), b"\x00 garbage")
        # A definition that decodes but is invalid (edited by hand): it must not run on a guessed timeout.
        invalid = msgspec.structs.replace(broken, name="fz-bad-timeout", id="fz-bad-timeout", schedule="@every 1s",
                                          timeout="soon")  # fmt: skip
        await consul.kv_put(keys.job("fz-bad-timeout"), encode(invalid))

        since = now_utc()
        written: dict[tuple[str, str], str] = {}  # (kind, value) -> key
        day = now_utc().strftime("%Y-%m-%d")
        killed: list[ServiceProcess] = []
        async with httpx.AsyncClient(base_url=url, timeout=10) as api:
            for i, (value_name, value) in enumerate(VALUES.items()):
                for kind, template in _kinds(day).items():
                    key = template.format(i=i)
                    await consul.kv_put(key, value)
                    written[(kind, value_name)] = key
                await _read_all(api)  # the readers of a key written over again read each value
                if i % 3 == 2 and len(killed) < KILLS:
                    killed.append(await _kill_leader(store, schedulers, cluster))
            for key in ODD_KEYS:
                await consul.kv_put(key, VALUES["garbage bytes"])
            while len(killed) < KILLS:
                killed.append(await _kill_leader(store, schedulers, cluster))
            await hold(4, "runs going on after the last write")
            until = now_utc() - timedelta(seconds=1)
            await _read_all(api)
            health = (await api.get("/health")).json()
            bad_timeout = (await api.get("/v1/jobs/fz-bad-timeout")).json()

        skip = frozenset(key for key in written.values() if key.startswith(keys.EXECUTIONS))
        skip |= {
            keys.execution("fz-running", "fz-running.x.1"),
            *(k for k in ODD_KEYS if k.startswith(keys.EXECUTIONS)),
        }
        await settle(store, good, since, until, timeout_s=30, skip=skip)
        records = await all_executions(store, skip=skip)
        tally = tally_slots(good, records, starts(executors), since, until)
        logs = "\n".join(p.log() for p in cluster.processes)
        reported = _reports(health, logs)
        table = Counter[str]()
        rows: list[Figures] = []
        for kind in _kinds(day):
            outcomes = {value_name: _outcome(kind, written[(kind, value_name)], reported) for value_name in VALUES}
            table.update(outcomes.values())
            rows.append(Figures(fault=f"stored {kind}: {len(VALUES)} bad values", expected=len(VALUES),
                                executed=sum(o != "not reported" for o in outcomes.values()),
                                lost=sum(o == "not reported" for o in outcomes.values()),
                                details=dict(outcomes)))  # fmt: skip
        odd = {key: _outcome("odd key", key, reported) for key in ODD_KEYS}
        rows.append(Figures(fault=f"stored values under {len(ODD_KEYS)} odd keys", expected=len(ODD_KEYS),
                            executed=sum(v != "not reported" for v in odd.values()), details=dict(odd)))  # fmt: skip
        for row in rows:
            figures.add(row)
        figures.add(slot_figures(
            f"the other jobs' slots while {len(written)} bad values are written and the leader killed {KILLS}x",
            tally,
        ))  # fmt: skip

        exited = [p.name for p in cluster.processes if not p.alive() and p not in killed]
        assert not exited, f"processes exited: {exited}"
        assert "crashed" not in logs and "Traceback" not in logs, logs[-4000:]
        assert tally.lost == 0 and tally.duplicated == 0 and tally.ran_but_missed == 0, tally.problems()
        assert not records.get("fz-bad-timeout"), "a definition with an invalid timeout ran"
        assert "invalid timeout 'soon'" in bad_timeout["problem"]
        missing = [row.fault for row in rows if row.lost or any(v == "not reported" for v in row.details.values())]
        assert not missing, f"broken records not reported: {[r.details for r in rows if r.fault in missing]}"
        leader = await wait_leader(store)
        assert leader.router.startswith("tcp://"), "the leader record was not written again"
    finally:
        await consul.close()


async def _read_all(api: httpx.AsyncClient) -> None:
    """What the gateway's readers read: none may answer 500."""
    for path in ("/v1/jobs", "/v1/pause", "/v1/stats?days=3", "/v1/jobs/good001/executions", "/v1/busy",
                 "/v1/jobs/fz-running/executions/fz-running.x.1", "/v1/jobs/good002", "/v1/leader"):  # fmt: skip
        response = await api.get(path)
        assert response.status_code < 500 or response.status_code == 503, (path, response.text)


async def _kill_leader(store: Store, schedulers: dict[str, ServiceProcess], cluster: Cluster) -> ServiceProcess:
    """Kills the leader (-9), waits for a standby to take over, starts the killed one again; the killed process."""
    current = await wait_leader(store, 30, "a leader to kill")
    victim = schedulers[current.name]
    victim.kill()

    async def replaced() -> object:
        # Not necessarily a higher term: with both the term and the leader record overwritten, the next term may
        # equal the dead leader's (never less than an executor saw; see docs/semantics.md, "Terms").
        return await new_leader(store, after_term=current.term - 1, not_name=current.name)

    await async_wait_until(replaced, timeout_s=30, what=f"a standby replacing {current.name}")
    schedulers[current.name] = cluster.scheduler(*SCHEDULER_ARGS, name=current.name)
    return victim


def _reports(health: dict[str, object], logs: str) -> set[str]:
    """Every key some reader reported: /health's lists and the "unreadable record key=" log lines."""
    found: set[str] = set()
    for line in [*health.get("unreadable_records", []), *health.get("invalid_jobs", [])]:  # type: ignore[misc]
        found.add(str(line).split(": ", 1)[0])
    for line in logs.splitlines():
        if "unreadable record key=" in line:
            found.add(line.split("unreadable record key=", 1)[1].split(":", 1)[0].strip())
        if "invalid job definition in Consul job=" in line:
            found.add(line.split("job=", 1)[1].split(":", 1)[0])
    return found


def _outcome(kind: str, key: str, reported: set[str]) -> str:
    name = keys.name_from_key(keys.JOBS, key) if key.startswith(keys.JOBS) else ""
    if key in reported or (name and name in reported):
        return "reported"
    if kind == "leader record":
        return "written again by the leader"  # checked at the end: the record is the leader's again
    if kind == "term record":
        return "written again at the next takeover"  # read only then: terms kept growing (the test's waits)
    if _never_read(key):
        return "never read (no record lives there)"
    return "not reported"


def _never_read(key: str) -> bool:
    """Keys no reader of cronbus reads: outside its prefixes, beside a record's key, or beside a job's prefix."""
    return (
        key.startswith(keys.ROOT + "unknown/")
        or key.startswith(keys.LEADER + "/")
        or (key.startswith(keys.EXECUTIONS) and "/" not in key[len(keys.EXECUTIONS) :])
    )
