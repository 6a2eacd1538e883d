"""What the executions API reads: the chosen history store, and with PostgreSQL also the records still in Consul."""

from __future__ import annotations

from cronbus.common.consul.history import ConsulHistoryStore
from cronbus.common.consul.store import Store
from cronbus.common.errors import NotFoundError
from cronbus.common.history import CONSUL, ExecutionFilter, ExecutionPage, HistorySort, HistoryStore, sort_records
from cronbus.common.models import Execution


class History:
    """Executions as the API shows them (docs/storage.md, "History store").

    With the Consul store every record is in Consul. With PostgreSQL, a launch is recorded in Consul first (the
    leader needs it there to never launch a slot twice) and its finished record moves to PostgreSQL later: a job's
    history is then its records in PostgreSQL and those still in Consul, each once."""

    def __init__(self, live: Store, store: HistoryStore) -> None:
        self.live = live
        self.store = store

    @property
    def layered(self) -> bool:
        return self.store.name != CONSUL

    async def search(
        self, where: ExecutionFilter, *, offset: int, limit: int | None, sort: HistorySort, descending: bool
    ) -> ExecutionPage:
        """The records `where` matches, as HistoryStore.search: with PostgreSQL, of both stores, each once."""
        if not self.layered:
            return await self.store.search(where, offset=offset, limit=limit, sort=sort, descending=descending)
        # Launches under way and results not moved yet: few, whatever the history's size.
        in_consul = (await ConsulHistoryStore(self.live).search(where)).records
        ids_by_job: dict[str, list[str]] = {}
        for record in in_consul:
            ids_by_job.setdefault(record.job_name, []).append(record.id)
        moved = {(job, i) for job, ids in ids_by_job.items() for i in await self.store.stored_ids(job, ids)}
        only_in_consul = [r for r in in_consul if (r.job_name, r.id) not in moved]
        # The first offset+limit of the union are among the first offset+limit of each part.
        top = await self.store.search(
            where, limit=None if limit is None else offset + limit, sort=sort, descending=descending
        )
        merged = sort_records([*top.records, *only_in_consul], sort, descending)
        end = len(merged) if limit is None else offset + limit
        return ExecutionPage(merged[offset:end], top.total + len(only_in_consul))

    async def get(self, job_name: str, execution_id: str) -> Execution:
        """NotFoundError when neither store has it; CorruptRecordError when it does not decode."""
        if self.layered:
            try:
                return await self.live.get_execution(job_name, execution_id)  # under way: only Consul has it
            except NotFoundError:
                pass
        return await self.store.get(job_name, execution_id)

    async def delete_job(self, job_name: str) -> None:
        """Deletes the job's records from the store, and from Consul when it is another store."""
        await self.store.delete_job(job_name)
        if self.layered:
            await self.live.delete_executions(job_name)

    async def delete_archived(self, job_name: str) -> None:
        """After a job was deleted from Consul (its records there with it): its records in another store."""
        if self.layered:
            await self.store.delete_job(job_name)

    async def close(self) -> None:
        await self.store.close()
