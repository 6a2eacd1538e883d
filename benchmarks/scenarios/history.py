"""History at volume: jobs x 100 execution records in PostgreSQL (loaded in bulk) read through a gateway with
`--history-store postgresql://...`, beside the same reads with the records in Consul, at the size Consul holds here.

The PostgreSQL rows are made by the server itself (one INSERT ... SELECT over generate_series per half of the jobs,
two at once), with the table's indexes dropped during the load and made again after it, as one loads a table in
bulk; each record is the JSON text cronbus writes (its fields in Execution's order). The load is checked: sampled
rows read back through the store equal the Execution that cronbus would have written for the same run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import LiteralString

import aiohttp
import msgspec
import psycopg

from benchmarks.cronbus_stack import Stack, load_jobs, noop_job, rfc3339
from benchmarks.report import at_most
from benchmarks.scenarios import Ctx
from benchmarks.support import BenchError, Distribution, rss_mib, wait_for
from cronbus.common.consul import keys
from cronbus.common.consul.client import MAX_TXN_OPS, TxnOp
from cronbus.common.local_postgres import LocalPostgres
from cronbus.common.models import Execution, ExecutionStatus, execution_id
from cronbus.common.postgresql import SCHEMA, PostgresHistoryStore

RUNS = 100  # records per job
INTERVAL_S = 8640  # a job's runs are 2.4 h apart: 100 of them span 10 days, ending now
FAILED_EVERY = 50  # one run in 50 failed (and, of those, one in 10 timed out and one in 10 was killed)
ROUNDS = 300  # sequential requests per query measured
FAILED_RUNS = "status=failed,timeout,killed"  # what the UI's "Failed runs, 24 h" asks
END = datetime.now(UTC).replace(microsecond=0)


# A run's fields are functions of its job number j and run number k, in Python here and in SQL below (the load is
# checked against these).
def _status(j: int, k: int) -> ExecutionStatus:
    n = (j + k) % (FAILED_EVERY * 10)
    if (j + k) % FAILED_EVERY:
        return "success"
    return "timeout" if n == 0 else "killed" if n == FAILED_EVERY else "failed"


def _scheduled(j: int, k: int) -> datetime:
    return END - timedelta(seconds=(RUNS - 1 - k) * INTERVAL_S + j % INTERVAL_S)


def record(j: int, k: int) -> Execution:
    """The Execution cronbus records for run k of job-j."""
    status = _status(j, k)
    scheduled = _scheduled(j, k)
    name = f"job-{j}"
    return Execution(
        id=execution_id(name, scheduled, 1),
        job_name=name,
        started_at=scheduled + timedelta(seconds=1),
        finished_at=scheduled + timedelta(seconds=3),
        success=status == "success",
        output=f"run {k} of {name}: {'ok' if status == 'success' else 'connection refused'}\n",
        node_name=f"executor-{j % 7}",
        scheduled_at=scheduled,
        status=status,
        exit_code=0 if status == "success" else 1,
        reason="" if status == "success" else f"exit code 1 ({status})",
        term=1,
    )


# The same in SQL, with the record's JSON made by format() from templates given as parameters; strings go through
# to_json (JSON-escaped as msgspec escapes them).
_TIME: LiteralString = "to_char(to_timestamp({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
_RECORD = (
    '{"id":%s,"job_name":%s,"started_at":"%s","finished_at":"%s","success":%s,"output":%s,"node_name":%s,'
    '"group":0,"attempt":1,"output_truncated":false,"scheduled_at":"%s","status":"%s","exit_code":%s,'
    '"reason":%s,"term":1,"manual":false,"due_at":"0001-01-01T00:00:00Z"}'
)
_OUTPUT = "run %s of %s: %s\n"
_ROWS: LiteralString = f"""
INSERT INTO cronbus_executions
SELECT job_name, id, to_timestamp(at), to_timestamp(at + 1), to_timestamp(at + 3), to_timestamp(at + 1), status, 1,
  format(%(record)s, to_json(id), to_json(job_name), {_TIME.format("at + 1")}, {_TIME.format("at + 3")},
         CASE WHEN ok THEN 'true' ELSE 'false' END,
         to_json(format(%(output)s, k, job_name, CASE WHEN ok THEN 'ok' ELSE 'connection refused' END)),
         to_json('executor-' || mod(j, 7)), {_TIME.format("at")}, status, CASE WHEN ok THEN 0 ELSE 1 END,
         to_json(CASE WHEN ok THEN '' ELSE 'exit code 1 (' || status || ')' END))::json
FROM (SELECT j, k, at, status, status = 'success' AS ok, 'job-' || j AS job_name,
             'job-' || j || '.' || to_char(to_timestamp(at) AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS') || '.000000Z.1'
               AS id
      FROM (SELECT j, k, at,
                   CASE WHEN mod(j + k, {FAILED_EVERY}) <> 0 THEN 'success'
                        WHEN mod(j + k, {FAILED_EVERY * 10}) = 0 THEN 'timeout'
                        WHEN mod(j + k, {FAILED_EVERY * 10}) = {FAILED_EVERY} THEN 'killed' ELSE 'failed' END AS status
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS j, generate_series(0, {RUNS - 1}) AS k,
                 LATERAL (SELECT %(end)s::bigint - ({RUNS - 1} - k) * {INTERVAL_S} - mod(j, {INTERVAL_S}) AS at) AS t
           ) AS slots
     ) AS runs
"""
_DROP: LiteralString = (
    "ALTER TABLE cronbus_executions DROP CONSTRAINT cronbus_executions_pkey;"
    " DROP INDEX cronbus_executions_job_listed; DROP INDEX cronbus_executions_status_listed"
)


async def load_postgres(dsn: str, jobs: int) -> tuple[float, float]:
    """Fills the table with `jobs` x RUNS records; returns (seconds to insert, seconds to index)."""
    store = PostgresHistoryStore(dsn)
    try:
        await store.count()  # makes the schema
    finally:
        await store.close()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(_DROP)
    began = time.monotonic()
    half = jobs // 2

    async def insert(first: int, last: int) -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            params = {"first": first, "last": last, "end": int(END.timestamp()), "record": _RECORD, "output": _OUTPUT}
            await conn.execute(_ROWS, params)

    await asyncio.gather(insert(0, half - 1), insert(half, jobs - 1))
    inserted = time.monotonic()

    async def index(statement: LiteralString) -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("SET maintenance_work_mem = '1GB'")
            await conn.execute(statement)

    await asyncio.gather(
        index("ALTER TABLE cronbus_executions ADD PRIMARY KEY (job_name, id)"),
        index(SCHEMA.split(";")[1]),  # the job's index
    )
    await index(SCHEMA.split(";")[2])  # the status index
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("VACUUM ANALYZE cronbus_executions")
    return inserted - began, time.monotonic() - inserted


async def check_sample(dsn: str, jobs: int) -> None:
    """Sampled rows, read through the store, are exactly what cronbus would have written."""
    store = PostgresHistoryStore(dsn)
    rng = random.Random(5)
    try:
        for _ in range(200):
            j, k = rng.randrange(jobs), rng.randrange(RUNS)
            want = record(j, k)
            got = await store.get(want.job_name, want.id)
            if got != want:
                raise BenchError(f"bulk-loaded row differs from cronbus's record:\n{got}\n{want}")
    finally:
        await store.close()


async def load_consul(stack: Stack, jobs: int) -> float:
    encoder = msgspec.json.Encoder()
    ops = [
        TxnOp("set", keys.execution(f"job-{j}", r.id), encoder.encode(r))
        for j in range(jobs)
        for r in (record(j, k) for k in range(RUNS))
    ]
    began = time.monotonic()
    gate = asyncio.Semaphore(6)

    async def write(batch: list[TxnOp]) -> None:
        async with gate:
            ok, _, errors = await stack.client.txn(batch)
            if not ok:
                raise BenchError(f"record load transaction failed: {errors}")

    await asyncio.gather(*(write(ops[i : i + MAX_TXN_OPS]) for i in range(0, len(ops), MAX_TXN_OPS)))
    return time.monotonic() - began


async def measure(ctx: Ctx, label: str, url: str, jobs: int, rounds: int, searches: int, *, goals: bool) -> None:
    """The job page (`rounds` sequential requests) and the failed-runs search as the UI asks them (`searches`), and
    two searches that read every row (3 each); with `goals`, the issue's goals apply."""
    scenario = "history"
    since = rfc3339(END - timedelta(hours=24))
    rng = random.Random(11)
    queries: dict[str, tuple[Callable[[], str], float | None]] = {
        "GET /v1/jobs/{job}/executions (the job page)": (
            lambda: f"/v1/jobs/job-{rng.randrange(jobs)}/executions?_start=0&_end=20&output_size_limit=200",
            50.0,
        ),
        "failed runs of 24 h across all jobs (the UI's search)": (
            lambda: f"/v1/executions?{FAILED_RUNS}&since={since}&_start=0&_end=25&output_size_limit=200",
            200.0,
        ),
        "every run across all jobs, first page": (lambda: "/v1/executions?_start=0&_end=25", None),
        "text in the output across all jobs": (lambda: f"/v1/executions?q=job-{rng.randrange(jobs)}%3A&_end=25", None),
    }
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=120)) as http:

        async def up() -> bool:
            try:
                async with http.get("/v1/jobs/job-0") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(up, 120, "the gateway to serve job-0", interval_s=0.5)
        for what, (path, goal) in queries.items():
            latencies: list[float] = []
            totals: set[int] = set()
            count = 3 if goal is None else rounds if "job page" in what else searches
            for _ in range(count):
                asked = path()
                began = time.perf_counter()
                async with http.get(asked) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise BenchError(f"GET {asked}: {resp.status} {body[:300]!r}")
                    totals.add(int(resp.headers.get("X-Total-Count", "-1")))
                latencies.append((time.perf_counter() - began) * 1000)
            dist = Distribution(latencies)
            found = f"{count} sequential, X-Total-Count {min(totals):,}" + (
                f"-{max(totals):,}" if len(totals) > 1 else ""
            )
            ctx.report.add(scenario, f"{label}: {what} p50", dist.p50, "ms", note=found)
            ctx.report.add(scenario, f"{label}: {what} p99", dist.p99, "ms", at_most(goal) if goal and goals else None)


async def run(ctx: Ctx) -> None:
    scenario = "history"
    jobs = ctx.size(10_000, 100_000)
    server = LocalPostgres().init()
    try:
        settings = ("shared_buffers=1GB", "max_wal_size=16GB", "synchronous_commit=off", "checkpoint_timeout=30min")
        server.start(60, *settings)
        async with Stack(ctx.run_dir, "history-postgresql") as stack:
            count, load_s = await load_jobs(stack.client, (noop_job(f"job-{j}", "@every 1h", END) for j in range(jobs)))
            assert stack.agent.proc is not None
            before = rss_mib(stack.agent.proc.pid)
            note = "a dev agent: its Raft log is in memory too"
            ctx.report.add(scenario, f"Consul RSS, {jobs:,} jobs stored, before any reader", before, "MiB", note=note)
            ctx.step(f"{count:,} jobs in Consul ({load_s:.0f} s); loading {jobs * RUNS:,} records into PostgreSQL")
            insert_s, index_s = await load_postgres(server.dsn, jobs)
            note = f"{jobs:,} jobs x {RUNS}; inserted in {insert_s:.0f} s, indexed in {index_s:.0f} s"
            ctx.report.add(scenario, "records in PostgreSQL", jobs * RUNS, "records", note=note)
            await check_sample(server.dsn, jobs)
            async with await psycopg.AsyncConnection.connect(server.dsn) as conn:
                size = await (await conn.execute("SELECT pg_database_size(current_database())")).fetchone()
            ctx.report.add(scenario, "PostgreSQL database size", (size[0] if size else 0) / 2**20, "MiB")
            ctx.step("gateway on PostgreSQL")
            _, url = stack.gateway("gateway", "--history-store", server.dsn)
            await measure(ctx, "PostgreSQL", url, jobs, ctx.size(100, ROUNDS), ctx.size(100, ROUNDS), goals=True)
            ctx.report.add(scenario, f"Consul RSS, {jobs:,} jobs (history in PostgreSQL), after the gateway's reads",
                           rss_mib(stack.agent.proc.pid), "MiB", at_most(300))  # fmt: skip
    finally:
        server.remove()
    consul_jobs = ctx.size(1_000, 5_000)
    async with Stack(ctx.run_dir, "history-consul") as stack:
        await load_jobs(stack.client, (noop_job(f"job-{j}", "@every 1h", END) for j in range(consul_jobs)))
        ctx.step(f"loading {consul_jobs * RUNS:,} records into Consul")
        load_s = await load_consul(stack, consul_jobs)
        assert stack.agent.proc is not None
        note = f"{consul_jobs:,} jobs x {RUNS}, written in {load_s:.0f} s (64-op transactions)"
        rss = rss_mib(stack.agent.proc.pid)
        ctx.report.add(scenario, f"Consul store: Consul RSS, {consul_jobs * RUNS:,} records", rss, "MiB", note=note)
        _, url = stack.gateway("gateway")
        label = f"Consul store ({consul_jobs * RUNS:,})"
        await measure(ctx, label, url, consul_jobs, ctx.size(30, 100), ctx.size(5, 5), goals=False)
