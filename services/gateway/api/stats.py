"""Dkron's execution statistics (GET /v1/stats, Dkron 4.1.0): executions per day, from the leader's day counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

import msgspec
from litestar import get
from litestar.params import QueryParameter

from cronbus.services.gateway.api.auth import READ
from cronbus.services.gateway.api.errors import responses
from cronbus.services.gateway.api.state import Gateway
from cronbus.services.gateway.api.table import JobCounts

DEFAULT_DAYS: Final = 30
MAX_DAYS: Final = 365


class DayCount(msgspec.Struct):
    date: datetime  # the day's midnight, UTC
    success_count: int
    failed_count: int


class Stats(msgspec.Struct):
    stats: list[DayCount]
    jobs: JobCounts  # cronbus's: the jobs by status now (Dkron's clients read `stats` only)


def days_asked(text: str | None) -> int:
    """Dkron's reading of `days`: a number from 1 to 365; anything else (missing, not a number, 0 or less) is 30,
    more than 365 is 365."""
    try:
        days = int(text or "")
    except ValueError:
        return DEFAULT_DAYS
    return DEFAULT_DAYS if days <= 0 else min(days, MAX_DAYS)


@get(
    "/v1/stats",
    summary="Executions per day, succeeded and failed, oldest first, ending today (UTC)",
    description=(
        "Counted by the leader as it records each finished run (the day it finished, UTC), so deleting history "
        "does not change them; missed and skipped slots did not run and are not counted. cronbus adds `jobs`: "
        "how many jobs there are now by status (as `GET /v1/jobs?status=` filters) and how many are disabled."
    ),
    responses=responses(503),
    opt=READ,
)
async def stats(
    gw: Gateway,
    days: Annotated[str | None, QueryParameter(description="1 to 365 (default 30)")] = None,
) -> Stats:
    count = days_asked(days)
    totals = await gw.store.executions_per_day()
    today = gw.clock().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    for back in range(count - 1, -1, -1):
        day = today - timedelta(days=back)
        found = totals.get(day.strftime("%Y-%m-%d"))
        out.append(DayCount(day, found.success_count if found else 0, found.failed_count if found else 0))
    await gw.ready_view()
    return Stats(out, gw.table.counts())


ROUTES: Final = [stats]
