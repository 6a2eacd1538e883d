"""The history store on PostgreSQL: one table of execution records, the only code that talks to PostgreSQL."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final, LiteralString

import msgspec
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from cronbus.common.errors import CorruptRecordError, NotFoundError, SettingsError
from cronbus.common.history import (
    ExecutionFilter,
    ExecutionPage,
    HistorySort,
    HistoryStore,
    HistoryStoreError,
    when,
)
from cronbus.common.models import FINISHED_STATUSES, Execution
from cronbus.common.settings import redact_dsn

log = logging.getLogger(__name__)

TABLE: Final = "cronbus_executions"
# The schema, made on first use by whoever comes first (an advisory lock keeps two processes from racing on it).
# `listed_at` is HistoryStore's `when` (started_at, or the slot before the start): the default order and the age
# trims go by it; ids compare by code point (COLLATE "C", whatever the database's), as the Consul store's do.
# `record` is the whole Execution as cronbus encodes it, the columns beside it what is queried.
SCHEMA: Final[LiteralString] = """
CREATE TABLE IF NOT EXISTS cronbus_executions (
    job_name     text        COLLATE "C" NOT NULL,
    id           text        COLLATE "C" NOT NULL,
    scheduled_at timestamptz NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    listed_at    timestamptz NOT NULL,
    status       text        NOT NULL,
    attempt      integer     NOT NULL,
    record       json        NOT NULL,
    PRIMARY KEY (job_name, id)
);
CREATE INDEX IF NOT EXISTS cronbus_executions_job_listed ON cronbus_executions (job_name, listed_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS cronbus_executions_status_listed ON cronbus_executions (status, listed_at DESC);
"""
SCHEMA_LOCK: Final = 0x63726F6E  # pg_advisory_xact_lock key held while the schema is made ('cron')
PUT_CHUNK: Final = 1000  # records per INSERT statement (one transaction holds the whole batch)
DELETE_BATCH: Final = 1000  # rows per DELETE: each batch is its own short transaction, no long lock

_COLUMNS: Final[LiteralString] = (
    "job_name, id, scheduled_at, started_at, finished_at, listed_at, status, attempt, record"
)
_PUT: Final[LiteralString] = f"""
INSERT INTO cronbus_executions ({_COLUMNS})
SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[],
                     %s::timestamptz[], %s::text[], %s::integer[], %s::json[])
ON CONFLICT (job_name, id) DO UPDATE SET
    scheduled_at = EXCLUDED.scheduled_at, started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
    listed_at = EXCLUDED.listed_at, status = EXCLUDED.status, attempt = EXCLUDED.attempt, record = EXCLUDED.record
"""
_ORDER: Final[dict[HistorySort, LiteralString]] = {
    "default": "listed_at",
    "started_at": "started_at",
    "finished_at": "finished_at",
    "attempt": "attempt",
}
_encoder = msgspec.json.Encoder()


def check_dsn(dsn: str, *, setting: str = "--history-store") -> None:
    """SettingsError naming the setting when libpq cannot parse the DSN; nothing is contacted."""
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise SettingsError(f"{setting} {redact_dsn(dsn)!r}: not a valid PostgreSQL DSN: {exc}") from None


def _decode(job_name: str, execution_id: str, text: str) -> Execution:
    try:
        return msgspec.json.decode(text, type=Execution)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptRecordError(f"{TABLE} {job_name}/{execution_id}", f"not a valid Execution: {exc}") from None


# PostgreSQL's JSON operators refuse a record whose output holds a NUL (text cannot), so a search reads the record
# as the text cronbus wrote: its fields in Execution's order, each string JSON-escaped, where a quote not escaped
# only ever bounds a string. The output is what lies between `"output":"` and `","node_name":"`.
_OUTPUT: Final[LiteralString] = (
    'substring(record::text, strpos(record::text, \'"output":"\') + 10,'
    ' strpos(record::text, \'","node_name":"\') - strpos(record::text, \'"output":"\') - 10)'
)
# Where an escaped needle starts in the escaped output: after an even number of backslashes, never inside an
# escape such as \n (a needle that starts with the hex digits of a \u escape may still match inside one).
_NOT_IN_AN_ESCAPE: Final = r"(^|[^\\])(\\\\)*"


def _json_escaped(value: str) -> str:
    return msgspec.json.encode(value).decode()[1:-1]


def _condition(where: ExecutionFilter) -> tuple[sql.Composable, list[Any]]:
    """The filter as SQL and its parameters. The node and the output are found in the record's text: no index, a
    search by them reads every row the other conditions leave."""
    parts: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[Any] = []
    tests: list[tuple[object, LiteralString, object]] = [
        (where.job_name, "job_name = %s", where.job_name),
        (where.statuses, "status = ANY(%s)", sorted(where.statuses)),
        (where.node, "strpos(record::text, %s) > 0", f'"node_name":"{_json_escaped(where.node)}",'),
        (where.since is not None, "listed_at >= %s", where.since),
        (where.until is not None, "listed_at < %s", where.until),
        (where.text, f"{_OUTPUT} ~* %s", _NOT_IN_AN_ESCAPE + re.escape(_json_escaped(where.text))),
    ]
    for wanted, test, value in tests:
        if wanted:
            parts.append(sql.SQL(test))
            params.append(value)
    return sql.SQL(" AND ").join(parts), params


class PostgresHistoryStore(HistoryStore):
    """Execution records in one PostgreSQL table (docs/storage.md), through a small connection pool. Connects on
    first use; a connection lost in an outage is replaced on a later call (the pool checks each one it hands out),
    and while the server cannot be reached a call fails after `timeout_s` with HistoryStoreError."""

    name = "postgresql"

    def __init__(self, dsn: str, *, timeout_s: float = 5.0, max_connections: int = 4) -> None:
        check_dsn(dsn)
        self.dsn = dsn
        self.timeout_s = timeout_s
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max_connections,
            open=False,
            timeout=timeout_s,
            check=AsyncConnectionPool.check_connection,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout_s))},
            name="cronbus-history",
        )
        self._opened = False
        self._schema_ready = False
        self.unreadable: dict[str, str] = {}  # key -> why, of records that did not decode (logged once)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A checked connection in autocommit mode; a lost server becomes HistoryStoreError."""
        try:
            if not self._opened:
                await self._pool.open(wait=False)
                self._opened = True
            async with self._pool.connection() as conn:
                if not self._schema_ready:
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                        await conn.execute(SCHEMA)
                    self._schema_ready = True
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # PoolTimeout is an OperationalError: no connection could be had within timeout_s.
            raise HistoryStoreError(f"PostgreSQL history store {redact_dsn(self.dsn)} unavailable: {exc}") from exc

    def _report(self, exc: CorruptRecordError) -> None:
        if self.unreadable.get(exc.key) != exc.reason:
            log.warning("unreadable record key=%s: %s", exc.key, exc.reason)
            self.unreadable[exc.key] = exc.reason

    async def put(self, records: Sequence[Execution]) -> None:
        latest = list({(r.job_name, r.id): r for r in records}.values())  # one row may be affected once per INSERT
        if not latest:
            return
        async with self._connection() as conn, conn.transaction():
            for start in range(0, len(latest), PUT_CHUNK):
                chunk = latest[start : start + PUT_CHUNK]
                columns = (
                    [r.job_name for r in chunk],
                    [r.id for r in chunk],
                    [r.scheduled_at for r in chunk],
                    [r.started_at for r in chunk],
                    [r.finished_at for r in chunk],
                    [when(r) for r in chunk],
                    [r.status for r in chunk],
                    [r.attempt for r in chunk],
                    [_encoder.encode(r).decode() for r in chunk],
                )
                await conn.execute(_PUT, columns)

    async def search(
        self,
        where: ExecutionFilter,
        *,
        offset: int = 0,
        limit: int | None = None,
        sort: HistorySort = "default",
        descending: bool = True,
    ) -> ExecutionPage:
        condition, params = _condition(where)
        direction = sql.SQL("DESC" if descending else "ASC")
        query = sql.SQL(
            "SELECT job_name, id, record::text FROM cronbus_executions WHERE {where} ORDER BY {col} {dir}, id {dir}"
            " OFFSET %s LIMIT %s"
        ).format(where=condition, col=sql.Identifier(_ORDER[sort]), dir=direction)
        async with self._connection() as conn:
            count = sql.SQL("SELECT count(*) FROM cronbus_executions WHERE {where}").format(where=condition)
            cursor = await conn.execute(count, params)
            total_row = await cursor.fetchone()
            cursor = await conn.execute(query, [*params, offset, limit])
            rows = await cursor.fetchall()
        return ExecutionPage(self._decoded(rows), int(total_row[0]) if total_row else 0)

    def _decoded(self, rows: Sequence[tuple[str, str, str]]) -> list[Execution]:
        """The rows' records; one that does not decode is left out and reported."""
        records = []
        for job_name, execution_id, text in rows:
            try:
                records.append(_decode(job_name, execution_id, text))
            except CorruptRecordError as exc:
                self._report(exc)
        return records

    async def get(self, job_name: str, execution_id: str) -> Execution:
        async with self._connection() as conn:
            cursor = await conn.execute(
                "SELECT record::text FROM cronbus_executions WHERE job_name = %s AND id = %s", (job_name, execution_id)
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFoundError(f"execution {execution_id!r} of job {job_name!r} not found")
        try:
            return _decode(job_name, execution_id, row[0])
        except CorruptRecordError as exc:
            self._report(exc)
            raise

    async def stored_ids(self, job_name: str, ids: Collection[str]) -> set[str]:
        async with self._connection() as conn:
            cursor = await conn.execute(
                "SELECT id FROM cronbus_executions WHERE job_name = %s AND id = ANY(%s)", (job_name, list(ids))
            )
            return {row[0] for row in await cursor.fetchall()}

    async def _delete_batches(self, query: LiteralString, params: dict[str, Any]) -> int:
        """Runs a DELETE of at most DELETE_BATCH rows until it deletes fewer: each batch commits on its own."""
        deleted = 0
        while True:
            async with self._connection() as conn:
                cursor = await conn.execute(query, {**params, "batch": DELETE_BATCH})
                count = cursor.rowcount
            deleted += count
            if count < DELETE_BATCH:
                return deleted

    async def delete_job(self, job_name: str) -> None:
        await self._delete_batches(
            "DELETE FROM cronbus_executions WHERE job_name = %(job)s AND id IN"
            " (SELECT id FROM cronbus_executions WHERE job_name = %(job)s LIMIT %(batch)s)",
            {"job": job_name},
        )

    async def trim_to_count(self, keep: int, job_name: str | None = None, *, protect: Collection[str] = ()) -> int:
        params = {"keep": keep, "finished": sorted(FINISHED_STATUSES), "protect": list(protect)}
        if job_name is not None:
            return await self._delete_batches(
                "DELETE FROM cronbus_executions WHERE job_name = %(job)s AND id IN"
                " (SELECT id FROM cronbus_executions WHERE job_name = %(job)s AND status = ANY(%(finished)s)"
                "  AND NOT id = ANY(%(protect)s) ORDER BY listed_at DESC, id DESC OFFSET %(keep)s LIMIT %(batch)s)",
                {**params, "job": job_name},
            )
        return await self._delete_batches(
            "DELETE FROM cronbus_executions WHERE (job_name, id) IN"
            " (SELECT job_name, id FROM (SELECT job_name, id, row_number() OVER"
            "   (PARTITION BY job_name ORDER BY listed_at DESC, id DESC) AS n FROM cronbus_executions"
            "   WHERE status = ANY(%(finished)s) AND NOT id = ANY(%(protect)s)) ranked"
            "  WHERE n > %(keep)s LIMIT %(batch)s)",
            params,
        )

    async def trim_older_than(self, cutoff: datetime, *, protect: Collection[str] = ()) -> int:
        return await self._delete_batches(
            "DELETE FROM cronbus_executions WHERE (job_name, id) IN"
            " (SELECT job_name, id FROM cronbus_executions WHERE listed_at < %(cutoff)s"
            "  AND status = ANY(%(finished)s) AND NOT id = ANY(%(protect)s) LIMIT %(batch)s)",
            {"cutoff": cutoff, "finished": sorted(FINISHED_STATUSES), "protect": list(protect)},
        )

    async def count(self, job_name: str | None = None) -> int:
        async with self._connection() as conn:
            if job_name is None:
                cursor = await conn.execute("SELECT count(*) FROM cronbus_executions")
            else:
                cursor = await conn.execute("SELECT count(*) FROM cronbus_executions WHERE job_name = %s", (job_name,))
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False
