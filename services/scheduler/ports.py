"""What the leader's run bookkeeping needs of the scheduler process: its bus and its view of the jobs."""

from __future__ import annotations

from typing import Protocol

import msgspec

from cronbus.common.models import Job


class Wire(Protocol):
    """The scheduler's sockets and its lease (SchedulerService implements it)."""

    def publish(self, topic: bytes, msg: msgspec.Struct) -> None:
        """Sends on the PUB socket at once; never blocks (a message no subscriber wants may be dropped)."""

    def send_to(self, identity: bytes, msg: msgspec.Struct) -> None:
        """Sends to one executor over the ROUTER at once; never blocks."""

    def is_leader(self) -> bool:
        """Whether the lease is held now (checked before every dispatch)."""


class Jobs(Protocol):
    """The job definitions as the scheduler last read them (SchedulerService implements it)."""

    def job(self, name: str) -> Job | None:
        """The job's definition; None when it is gone or cannot be scheduled."""

    def children(self, name: str) -> list[Job]:
        """The jobs whose parent_job is `name`."""

    def delete_ephemeral(self, name: str) -> None:
        """Deletes an ephemeral job after its successful run, in a task of its own (never raises)."""

    def disable_failing(self, name: str, reason: str) -> None:
        """Disables a job whose failed runs in a row reached its disable_after_failures, in a task of its own
        (never raises)."""
