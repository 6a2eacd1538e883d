"""The history store on Consul KV (cronbus/executions/<job>/<id>): today's layout, kept for small installations."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from cronbus.common.consul import keys
from cronbus.common.consul.client import TxnOp
from cronbus.common.consul.store import Store, encode
from cronbus.common.history import (
    ExecutionFilter,
    ExecutionPage,
    HistorySort,
    HistoryStore,
    finished,
    newest_first_key,
    sort_records,
    when,
)
from cronbus.common.models import Execution


class ConsulHistoryStore(HistoryStore):
    """Execution records as JSON values under cronbus/executions/ (docs/storage.md). Every read lists a whole job
    (or, for count and search, every job): Consul has no index but the key. Its ceiling is Consul's memory: about
    2.6 KB per record."""

    name = "consul"

    def __init__(self, store: Store) -> None:
        self.store = store

    async def put(self, records: Sequence[Execution]) -> None:
        latest = {(r.job_name, r.id): r for r in records}  # the later of two records of one key wins
        ops = [TxnOp("set", keys.execution(r.job_name, r.id), encode(r)) for r in latest.values()]
        await self.store.apply(ops)

    async def get(self, job_name: str, execution_id: str) -> Execution:
        return await self.store.get_execution(job_name, execution_id)

    async def stored_ids(self, job_name: str, ids: Collection[str]) -> set[str]:
        stored = {keys.name_from_key(keys.executions(job_name), k) for k in await self.store.execution_keys(job_name)}
        return stored & set(ids)

    async def delete_job(self, job_name: str) -> None:
        await self.store.delete_executions(job_name)  # the prefix ends with '/': 'backup' never takes 'backup-db'

    async def trim_to_count(self, keep: int, job_name: str | None = None, *, protect: Collection[str] = ()) -> int:
        names = [job_name] if job_name is not None else await self._job_names()
        deleted = 0
        for name in names:
            kept = sorted(
                (r for r in await self.store.list_executions(name) if finished(r) and r.id not in protect),
                key=newest_first_key,
                reverse=True,
            )
            deleted += await self._delete(kept[keep:])
        return deleted

    async def trim_older_than(self, cutoff: datetime, *, protect: Collection[str] = ()) -> int:
        deleted = 0
        for name in await self._job_names():
            old = [
                r
                for r in await self.store.list_executions(name)
                if finished(r) and r.id not in protect and when(r) < cutoff
            ]
            deleted += await self._delete(old)
        return deleted

    async def count(self, job_name: str | None = None) -> int:
        prefix = keys.EXECUTIONS if job_name is None else keys.executions(job_name)
        return len(await self.store.consul.kv_keys(prefix))

    async def search(
        self,
        where: ExecutionFilter,
        *,
        offset: int = 0,
        limit: int | None = None,
        sort: HistorySort = "default",
        descending: bool = True,
    ) -> ExecutionPage:
        names = [where.job_name] if where.job_name else await self._job_names()
        found = [r for name in names for r in await self.store.list_executions(name) if where.matches(r)]
        return _paged(sort_records(found, sort, descending), offset, limit)

    async def close(self) -> None:
        """The Consul client belongs to the service (the Store's owner), which closes it."""

    async def _job_names(self) -> list[str]:
        found = await self.store.consul.kv_keys(keys.EXECUTIONS, separator="/")
        return sorted({keys.name_from_key(keys.EXECUTIONS, key) for key in found})

    async def _delete(self, records: Sequence[Execution]) -> int:
        # Transactions of 64 deletes: each is short, none holds Consul's write path for long.
        await self.store.apply([TxnOp("delete", keys.execution(r.job_name, r.id)) for r in records])
        return len(records)


def _paged(records: list[Execution], offset: int, limit: int | None) -> ExecutionPage:
    end = len(records) if limit is None else offset + limit
    return ExecutionPage(records[offset:end], len(records))
