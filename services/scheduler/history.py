"""History trimming: a job's oldest execution records beyond history_limit are deleted, off the results' path."""

from __future__ import annotations

from cronbus.common.consul import keys
from cronbus.common.consul.client import TxnOp
from cronbus.services.scheduler.ledger import Ledger, Unit
from cronbus.services.scheduler.runs import RunBook

TRIM_CHUNK = 60  # deletes per ledger unit (a transaction holds 64 operations)


class History:
    """Counts the records written per job, and trims a job's history every tenth of history_limit records."""

    def __init__(self, *, ledger: Ledger, runs: RunBook, history_limit: int) -> None:
        self._ledger = ledger
        self._runs = runs
        self.history_limit = history_limit
        self._written: dict[str, int] = {}  # records written per job since the last history trim

    def written(self, job_name: str) -> None:
        """A final record of the job was written."""
        self._written[job_name] = self._written.get(job_name, 0) + 1

    def forget(self, job_name: str) -> None:
        """The job is gone, and its history with it."""
        self._written.pop(job_name, None)

    def jobs_to_trim(self) -> list[str]:
        """The jobs that wrote a tenth of history_limit records since they were last returned."""
        due = [name for name, count in self._written.items() if count >= max(1, self.history_limit // 10)]
        for name in due:
            self._written[name] = 0
        return due

    async def trim(self, job_name: str, record_keys: list[str]) -> None:
        """Deletes the oldest records beyond history_limit (ids sort by scheduled time), but never the record of
        a run under way."""
        excess = len(record_keys) - self.history_limit
        if excess <= 0:
            return
        active = {keys.execution(job_name, i) for i in self._runs.under_way()}
        doomed = [k for k in record_keys[:excess] if k not in active]
        for start in range(0, len(doomed), TRIM_CHUNK):
            await self._ledger.submit(Unit(delete=[TxnOp("delete", k) for k in doomed[start : start + TRIM_CHUNK]]))
