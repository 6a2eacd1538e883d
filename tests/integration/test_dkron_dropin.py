"""Dkron's job semantics with real processes: partially_failed, GET /v1/stats, per-job counters, @after, tags."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import httpx

from cronbus.common import messages as m
from cronbus.common.consul.agent import DevAgent, free_port
from cronbus.common.consul.store import Store
from cronbus.common.models import Execution, now_utc
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import client, control, executions, executor_joined, finished, put_job


async def _leader(store: Store) -> str:
    found = await store.get_leader()
    return found[0].name if found else ""


def _rfc3339(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def test_a_run_on_two_executors_where_one_fails_is_partially_failed_and_counted(
    cluster: Cluster, fresh_consul: DevAgent
) -> None:
    """Dkron's partially_failed: some executors of one run succeeded, some failed. The day stats count every
    execution that ran; Dkron's per-job counters (--job-metrics 2) name two jobs and count the rest as _other."""
    store = Store(client(fresh_consul))
    metrics_port = free_port()
    cluster.scheduler("--job-metrics", "2", "--metrics-port", str(metrics_port), name="s1")
    for name in ("e1", "e2"):
        cluster.executor("--tag", "pool=web", name=name)
    _, url = cluster.gateway(name="gw")
    await async_wait_until(lambda: _leader(store), timeout_s=15, what="a leader")
    await put_job(store, name="pair", schedule="@manually", tags={"pool": "web:2"}, executor="noop")

    async def both_known() -> bool:  # a run of `pair` reached both executors: the leader knows them
        reply = await control(store, m.RunJob(req_id=uuid.uuid4().hex, job_name="pair"))
        records = await async_wait_until(lambda: _all_final(store, "pair"), 15, what="pair") if reply.ok else []
        return any(len([r for r in records if r.scheduled_at == s]) == 2 for s in {r.scheduled_at for r in records})

    await async_wait_until(both_known, timeout_s=30, what="a run on both executors")
    # The lane of e2 (its execution id ends in .e2) fails; e1's succeeds.
    command = 'case "$CRONBUS_EXECUTION_ID" in *.e2) exit 4;; esac'
    await put_job(store, name="both", schedule="@manually", tags={"pool": "web:2"}, executor="shell",
                  executor_config={"command": command, "shell": "true"})  # fmt: skip
    await put_job(store, name="alone", schedule="@manually", executor="noop")
    for name in ("both", "alone"):
        assert (await control(store, m.RunJob(req_id=uuid.uuid4().hex, job_name=name))).ok
        await async_wait_until(lambda n=name: _all_final(store, n), timeout_s=15, what=f"{name} finished")  # type: ignore[misc]
    lanes = sorted((r.node_name, r.status) for r in await executions(store, "both"))
    assert lanes == [("e1", "success"), ("e2", "failed")]
    status, _ = await store.get_status("both")
    assert status.status == "partially_failed"

    async with httpx.AsyncClient(base_url=url) as api:
        await async_wait_until(lambda: _healthy(api), timeout_s=20, what="the gateway")
        assert (await api.get("/v1/jobs/both")).json()["status"] == "partially_failed"
        stats = (await api.get("/v1/stats", params={"days": "2"})).json()["stats"]
        scraped = (await api.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    midnight = now_utc().replace(hour=0, minute=0, second=0, microsecond=0)
    assert [day["date"] for day in stats] == [_rfc3339(midnight - timedelta(days=1)), _rfc3339(midnight)]
    ran = [r for job in ("pair", "both", "alone") for r in await executions(store, job)]
    totals = tuple(sum(day[key] for day in stats) for key in ("success_count", "failed_count"))
    assert totals == (sum(r.success for r in ran), 1)  # (both days: the test may run across midnight)

    lines = [line for line in scraped.splitlines() if line.startswith("dkron_job_executions_")]
    counted: dict[str, int] = {}
    for line in lines:
        series, value = line.rsplit(" ", 1)
        counted[series] = int(value)
    names = {series.split('"')[1] for series in counted}
    assert "_other" in names and len(names) == 3, counted  # two jobs named, the third as _other
    assert sum(v for k, v in counted.items() if "succeeded" in k) == sum(r.success for r in ran)
    assert sum(v for k, v in counted.items() if "failed" in k) == 1
    await store.consul.close()


async def _all_final(store: Store, name: str) -> list[Execution]:
    records = await executions(store, name)
    return records if records and len(finished(records)) == len(records) else []


async def _healthy(api: httpx.AsyncClient) -> bool:
    try:
        return (await api.get("/health")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_an_after_job_written_late_runs_once_within_its_grace_and_is_missed_past_it(
    cluster: Cluster, fresh_consul: DevAgent
) -> None:
    store = Store(client(fresh_consul))
    cluster.scheduler(name="s1")
    cluster.executor(name="e1")
    await async_wait_until(lambda: _leader(store), timeout_s=15, what="a leader")
    await async_wait_until(lambda: executor_joined(store), timeout_s=15, what="an executor")
    passed = (now_utc() - timedelta(seconds=30)).replace(microsecond=0)
    long_ago = (now_utc() - timedelta(hours=2)).replace(microsecond=0)
    await put_job(store, name="late", schedule=f"@after {_rfc3339(passed)} <PT1H", executor="noop")
    await put_job(store, name="too-late", schedule=f"@after {_rfc3339(long_ago)} <PT1H", executor="noop")
    late = await async_wait_until(lambda: _all_final(store, "late"), timeout_s=15, what="the late run")
    assert [(r.status, r.scheduled_at) for r in late] == [("success", passed)]
    missed = await async_wait_until(lambda: _all_final(store, "too-late"), timeout_s=15, what="the missed record")
    assert [(r.status, r.reason) for r in missed] == [("missed", "past its @after grace period of 1h0m0s")]
    # Written again (an edit), neither runs again: each slot was run or recorded once.
    await put_job(store, name="late", schedule=f"@after {_rfc3339(passed)} <PT1H", executor="noop", owner="x")
    await put_job(store, name="too-late", schedule=f"@after {_rfc3339(long_ago)} <PT1H", executor="noop", owner="y")
    soon = (now_utc() + timedelta(seconds=2)).replace(microsecond=0)
    await put_job(store, name="marker", schedule=f"@at {_rfc3339(soon)}", executor="noop")
    await async_wait_until(lambda: _all_final(store, "marker"), timeout_s=15, what="a later run")  # edits were seen
    assert len(await executions(store, "late")) == 1 and len(await executions(store, "too-late")) == 1
    await store.consul.close()


async def test_dkrons_getting_started_job_runs_on_an_executor_that_takes_the_server_role(
    cluster: Cluster, fresh_consul: DevAgent
) -> None:
    """Dkron's getting-started job targets {"server": "true:1"}; Dkron's examples target "role": "dkron", which
    every executor has unless its own tags give a role, and the region and version tags every Dkron agent has."""
    store = Store(client(fresh_consul))
    cluster.scheduler(name="s1")
    cluster.executor("--tag", "server=true", name="e1")
    cluster.executor("--tag", "role=web", name="e2")
    _, url = cluster.gateway(name="gw")
    await async_wait_until(lambda: _leader(store), timeout_s=15, what="a leader")
    await async_wait_until(lambda: executor_joined(store), timeout_s=15, what="an executor")
    getting_started = {
        "name": "job1", "schedule": "@every 2s", "timezone": "Europe/Berlin", "owner": "Platform Team",
        "owner_email": "platform@example.com", "disabled": False, "tags": {"server": "true:1"},
        "metadata": {"user": "12345"}, "concurrency": "allow", "executor": "shell",
        "executor_config": {"command": "date"},
    }  # fmt: skip
    examples = {"name": "example", "schedule": "@manually", "executor": "shell", "executor_config": {"command": "true"},
                "tags": {"role": "dkron", "region": "global", "dc": "dc1"}}  # fmt: skip
    async with httpx.AsyncClient(base_url=url) as api:
        await async_wait_until(lambda: _healthy(api), timeout_s=20, what="the gateway")
        assert (await api.post("/v1/jobs", json=getting_started)).status_code == 201
        ran = await async_wait_until(lambda: _all_final(store, "job1"), timeout_s=20, what="job1 ran")
        assert {r.node_name for r in ran} == {"e1"} and ran[0].success
        # Only e1 matches the example's tags: it has joined once job1 ran there (e2 may have joined first).
        created = await api.post("/v1/jobs?runoncreate", json=examples)
        assert created.status_code == 201 and "x-cronbus-warning" not in created.headers, created.headers
        members = (await api.get("/v1/members")).json()
    example = await async_wait_until(lambda: _all_final(store, "example"), timeout_s=20, what="example ran")
    assert example[0].node_name == "e1"  # e2 has a role of its own
    tags = {m["Name"]: m["Tags"] for m in members}
    assert tags["e1"]["region"] == "global" and tags["e1"]["server"] == "true" and tags["e1"]["version"]
    await store.consul.close()
