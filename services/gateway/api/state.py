"""What every request handler shares: settings, the store, the history, the job view and table, control, metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, TypeAlias

from litestar.di import NamedDependency

from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.store import Store, StoredJob
from cronbus.common.consul.view import JobView
from cronbus.common.errors import ConflictError, NotFoundError, UnavailableError
from cronbus.common.models import Job, JobStatus, now_utc
from cronbus.common.settings import GatewaySettings
from cronbus.services.gateway.api.control import ControlClient
from cronbus.services.gateway.api.history import History
from cronbus.services.gateway.api.metrics import Metrics
from cronbus.services.gateway.api.table import JobTable

VIEW_SYNC_TIMEOUT_S: Final = 2.0  # how long a write waits for the view to show it (read-your-writes on lists)


@dataclass
class GatewayState:
    settings: GatewaySettings
    consul: ConsulClient
    store: Store
    history: History
    view: JobView
    table: JobTable
    control: ControlClient
    metrics: Metrics
    on_leave: Callable[[], None]
    clock: Callable[[], datetime] = now_utc
    view_failure: str = ""  # why the job view stopped, when it crashed
    view_crashed: asyncio.Event = field(default_factory=asyncio.Event)  # set with view_failure: the process ends

    async def ready_view(self) -> JobView:
        """The view once it has loaded (bounded by the request timeout); UnavailableError when it has not."""
        if self.view_failure:
            raise UnavailableError(f"the job list is unavailable: {self.view_failure}")
        if not self.view.jobs_ready.is_set() or not self.view.statuses_ready.is_set():
            try:
                async with asyncio.timeout(self.settings.request_timeout_s):
                    await self.view.jobs_ready.wait()
                    await self.view.statuses_ready.wait()
            except TimeoutError:
                raise UnavailableError("the job list is not loaded yet (is Consul reachable?)") from None
        return self.view

    async def stored_job(self, name: str) -> tuple[Job, int]:
        """The stored definition and its modify index, read from Consul (not the view): NotFoundError when
        missing, ConflictError when the stored value is not a valid job."""
        stored = await self.store.get_job(name)
        return usable(stored, name)

    async def viewed_job(self, name: str) -> Job:
        """The job as the API shows it, from the in-memory view, kept current by blocking queries (a write through
        this gateway answers only once the view has it, so a client reads what it wrote). A definition that decodes
        but is invalid is shown with its problem; one that does not decode is a ConflictError."""
        view = await self.ready_view()
        stored = view.jobs.get(name)
        if stored is None:
            raise NotFoundError(f"job '{name}' not found")
        if stored.definition is None:
            raise ConflictError(f"job '{name}' has an invalid stored definition: {stored.problem}")
        found = view.statuses.get(name)
        return self.table.shown(stored, found[0] if found else None, self.clock())

    async def api_job(self, job: Job, modify_index: int, status: JobStatus | None = None, problem: str = "") -> Job:
        if status is None:
            status, _ = await self.store.get_status(job.name)
        return self.table.api_job(job, status, modify_index, self.clock(), problem)

    async def await_job_version(self, name: str, modify_index: int) -> None:
        await self.table.wait_for(lambda: self.table.has_version(name, modify_index), VIEW_SYNC_TIMEOUT_S)

    async def await_job_gone(self, name: str) -> None:
        await self.table.wait_for(lambda: name not in self.view.jobs, VIEW_SYNC_TIMEOUT_S)

    async def await_status(self, name: str, status: JobStatus) -> None:
        # The view offers no listener for statuses; poll briefly, bounded.
        deadline = time.monotonic() + VIEW_SYNC_TIMEOUT_S
        while time.monotonic() < deadline:
            found = self.view.statuses.get(name)
            if found is not None and found[0] == status:
                return
            await asyncio.sleep(0.02)


def usable(stored: StoredJob | None, name: str) -> tuple[Job, int]:
    if stored is None:
        raise NotFoundError(f"job '{name}' not found")
    if stored.job is None:
        raise ConflictError(f"job '{name}' has an invalid stored definition: {stored.problem}")
    return stored.job, stored.modify_index


# How handlers ask for the state: an explicitly named dependency (the app provides it as "gw").
Gateway: TypeAlias = NamedDependency[GatewayState]
