"""Execution routes: history (list, search across jobs, show, delete), kill, and the live output stream of a running
execution."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from typing import Annotated, Final, get_args

import msgspec
from litestar import Response, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from cronbus.common.errors import ConflictError, CronbusError, NotFoundError, ValidationError
from cronbus.common.history import HISTORY_SORTS, ExecutionFilter, HistorySort
from cronbus.common.messages import ExecutionEnded, OutputPublished
from cronbus.common.models import FINISHED_STATUSES, Execution, ExecutionStatus, Job, JobStatus, utc
from cronbus.services.gateway.api.auth import OPERATOR, READ, READ_STREAM
from cronbus.services.gateway.api.control import OutputSubscription
from cronbus.services.gateway.api.errors import responses
from cronbus.services.gateway.api.jobs import TOTAL_COUNT
from cronbus.services.gateway.api.state import Gateway, GatewayState
from cronbus.services.gateway.api.table import parse_order

log = logging.getLogger(__name__)

EXECUTION_SORT_FIELDS: Final = ("started_at", "finished_at", "attempt")
# react-admin's default sort is `id` (Dkron's UI sends it on every Executions tab); Dkron maps it to started_at.
EXECUTION_SORT_ALIASES: Final = {"id": "started_at"}
SEARCH_PAGE: Final = 100  # executions a search returns when it is not given _end
SEARCH_PAGE_MAX: Final = 1000
SEARCH_TEXT_MAX: Final = 1000  # characters of text to find in the outputs
EXECUTION_STATUSES: Final[tuple[ExecutionStatus, ...]] = get_args(ExecutionStatus)
_STATUS_OF: Final[dict[str, ExecutionStatus]] = {status: status for status in EXECUTION_STATUSES}
STREAM_POLL_S: Final = 1.0  # how often a stream checks the record for an end its subscription missed
KEEPALIVE_S: Final = 15.0  # an SSE comment this often keeps proxies from closing an idle stream


def truncate_output(execution: Execution, limit: int) -> Execution:
    """Keeps the last `limit` bytes of the output (never splitting a character); flags the cut."""
    data = execution.output.encode()
    if len(data) <= limit:
        return execution
    kept = data[len(data) - limit :].decode("utf-8", errors="ignore")
    return msgspec.structs.replace(execution, output=kept, output_truncated=True)


_SortParam = Annotated[
    str | None, QueryParameter(description=f"one of {', '.join(EXECUTION_SORT_FIELDS)}, or id (= started_at, as Dkron)")
]
_OrderParam = Annotated[str | None, QueryParameter(description="ASC or DESC (default)")]
_OutputLimitParam = Annotated[int | None, QueryParameter(ge=0, description="keep the last N bytes of each output")]
_StatusParam = Annotated[
    str | None, QueryParameter(description=f"only these statuses, comma-separated: {', '.join(EXECUTION_STATUSES)}")
]


@get(
    "/v1/jobs/{job:str}/executions",
    summary="List a job's executions (newest first by default)",
    response_headers=[TOTAL_COUNT],
    responses=responses(400, 404, 503),
    opt=READ,
)
async def list_executions(
    job: FromPath[str],
    gw: Gateway,
    _sort: _SortParam = None,
    _order: _OrderParam = None,
    _start: Annotated[int | None, QueryParameter(ge=0)] = None,
    _end: Annotated[int | None, QueryParameter(ge=0)] = None,
    output_size_limit: _OutputLimitParam = None,
    status: _StatusParam = None,
) -> Response[list[Execution]]:
    order = _order_of(_sort, _order)  # a bad query is reported before the job is looked up
    where = ExecutionFilter(job_name=job, statuses=parse_statuses(status))
    if await gw.store.get_job(job) is None:
        raise NotFoundError(f"job '{job}' not found")
    first = _start or 0
    return await _found(gw, where, order, first, None if _end is None else max(0, _end - first), output_size_limit)


@get(
    "/v1/executions",
    summary="Search the executions of every job: by status, job, executor, time and output (newest first)",
    response_headers=[TOTAL_COUNT],
    responses=responses(400, 503),
    opt=READ,
)
async def search_executions(
    gw: Gateway,
    status: _StatusParam = None,
    job: Annotated[str | None, QueryParameter(description="only this job's")] = None,
    node: Annotated[str | None, QueryParameter(description="only those this executor ran")] = None,
    since: Annotated[str | None, QueryParameter(description="started (or due) at or after, RFC 3339")] = None,
    until: Annotated[str | None, QueryParameter(description="started (or due) before, RFC 3339")] = None,
    q: Annotated[str | None, QueryParameter(description="text in the output, ignoring case")] = None,
    _sort: _SortParam = None,
    _order: _OrderParam = None,
    _start: Annotated[int | None, QueryParameter(ge=0)] = None,
    _end: Annotated[int | None, QueryParameter(ge=0)] = None,
    output_size_limit: _OutputLimitParam = None,
) -> Response[list[Execution]]:
    order = _order_of(_sort, _order)
    first = _start or 0
    limit = SEARCH_PAGE if _end is None else max(0, _end - first)
    if limit > SEARCH_PAGE_MAX:
        raise ValidationError(f"a search returns at most {SEARCH_PAGE_MAX} executions a page: _end - _start is {limit}")
    if q is not None and len(q) > SEARCH_TEXT_MAX:
        raise ValidationError(f"q is {len(q)} characters: a search looks for at most {SEARCH_TEXT_MAX}")
    where = ExecutionFilter(
        statuses=parse_statuses(status),
        job_name=job or "",
        node=node or "",
        since=_instant("since", since),
        until=_instant("until", until),
        text=q or "",
    )
    return await _found(gw, where, order, first, limit, output_size_limit)


def parse_statuses(value: str | None) -> frozenset[ExecutionStatus]:
    """`status=failed,timeout` as the statuses it names; empty: every status."""
    found: set[ExecutionStatus] = set()
    for word in (value or "").split(","):
        name = word.strip()
        if not name:
            continue
        status = _STATUS_OF.get(name)
        if status is None:
            raise ValidationError(f"status must be among {', '.join(EXECUTION_STATUSES)}, not '{name}'")
        found.add(status)
    return frozenset(found)


def _instant(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{name} must be an RFC 3339 time like 2026-12-01T00:00:00Z, not '{value}'") from None
    if parsed.tzinfo is None:
        raise ValidationError(f"{name} '{value}' has no time zone: add Z or an offset such as +01:00")
    return utc(parsed)


def _order_of(sort_param: str | None, order: str | None) -> tuple[HistorySort, bool]:
    sort = EXECUTION_SORT_ALIASES.get(sort_param, sort_param) if sort_param else "default"  # empty: default order
    if sort_param and sort not in EXECUTION_SORT_FIELDS:
        raise ValidationError(f"_sort must be one of {', '.join(EXECUTION_SORT_FIELDS)}, not '{sort}'")
    return _sort_of(sort), parse_order(order or "DESC")


async def _found(
    gw: GatewayState,
    where: ExecutionFilter,
    order: tuple[HistorySort, bool],
    first: int,
    limit: int | None,
    output_size_limit: int | None,
) -> Response[list[Execution]]:
    sort, descending = order
    found = await gw.history.search(where, offset=first, limit=limit, sort=sort, descending=descending)
    page = found.records
    if output_size_limit is not None:
        page = [truncate_output(e, output_size_limit) for e in page]
    return Response(page, headers={"X-Total-Count": str(found.total)})


def _sort_of(field: str) -> HistorySort:
    for known in HISTORY_SORTS:
        if known == field:
            return known
    raise ValidationError(f"_sort must be one of {', '.join(EXECUTION_SORT_FIELDS)}, not '{field}'")


@delete(
    "/v1/jobs/{job:str}/executions",
    status_code=200,
    summary="Delete a job's executions and reset its counters",
    responses=responses(404, 409, 503),
)
async def delete_executions(job: FromPath[str], gw: Gateway) -> Job:
    found, index = await gw.stored_job(job)
    await gw.history.delete_job(job)

    def reset(status: JobStatus) -> JobStatus:
        # What is running now, the leader's slot bookkeeping and why it disabled the job are not history: kept.
        return JobStatus(
            running=status.running,
            started=status.started,
            last_slot=status.last_slot,
            problem=status.problem,
            disabled_reason=status.disabled_reason,
        )

    status = await gw.store.update_status(job, reset)
    await gw.await_status(job, status)
    return await gw.api_job(found, index, status)


@get(
    "/v1/jobs/{job:str}/executions/{execution:str}",
    summary="Show an execution with its full output",
    responses=responses(404, 503),
    opt=READ,
)
async def show_execution(job: FromPath[str], execution: FromPath[str], gw: Gateway) -> Execution:
    return await gw.history.get(job, execution)


@post(
    "/v1/jobs/{job:str}/executions/{execution:str}/kill",
    status_code=202,
    summary="Stop a running execution (process group TERM, then KILL after a grace period)",
    responses=responses(404, 409, 503),
    opt=OPERATOR,
)
async def kill_execution(job: FromPath[str], execution: FromPath[str], gw: Gateway) -> Execution:
    found = await gw.history.get(job, execution)
    if found.status in FINISHED_STATUSES:
        raise ConflictError(f"execution '{execution}' already ended ({found.status})")
    await gw.control.kill_execution(job, execution)
    return found


# ---- live output ------------------------------------------------------------------------------------------


def sse(event: str, data: object) -> bytes:
    """One server-sent event whose data is JSON (so newlines and carriage returns in output survive)."""
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


def end_event(execution: Execution) -> bytes:
    return sse("end", {"status": execution.status, "exit_code": execution.exit_code})


def unseen(snapshot: str, chunks: list[str]) -> list[str]:
    """The chunks not already at the end of `snapshot`: chunks that arrived while the snapshot was taken may
    or may not be part of it (the snapshot and the subscription are two connections)."""
    for k in range(len(chunks), 0, -1):
        if snapshot.endswith("".join(chunks[:k])):
            return chunks[k:]
    return chunks


async def _output_so_far(gw: GatewayState, record: Execution) -> str:
    """The leader's copy of a running execution's output (the record is written only now and then)."""
    try:
        busy = await gw.control.list_busy()
    except CronbusError as exc:
        log.debug("busy list unavailable for a stream exec=%s: %s", record.id, exc)
        return record.output
    for running in busy:
        if running.id == record.id:
            return running.output
    return record.output


async def _stream(gw: GatewayState, record: Execution) -> AsyncIterator[bytes]:
    if record.status in FINISHED_STATUSES:
        if record.output:
            yield sse("output", record.output)
        yield end_event(record)
        return
    leader = await gw.control.leader()
    # Subscribe before taking the snapshot, so nothing published in between is lost.
    async with gw.control.output(leader, record.id) as subscription:
        snapshot = await _output_so_far(gw, record)
        sent = snapshot
        if snapshot:
            yield sse("output", snapshot)
        early = await subscription.drain()
        early_chunks = [e.chunk for e in early if isinstance(e, OutputPublished)]
        for chunk in unseen(snapshot, early_chunks):
            sent += chunk
            yield sse("output", chunk)
        ended = next((e for e in early if isinstance(e, ExecutionEnded)), None)
        if ended is not None:
            yield await _end_of(gw, record, ended)
            return
        async with contextlib.aclosing(_live(gw, record, subscription, sent)) as frames:
            async for frame in frames:
                yield frame


async def _live(
    gw: GatewayState, record: Execution, subscription: OutputSubscription, sent: str
) -> AsyncGenerator[bytes, None]:
    """The stream once caught up (`sent`: the output streamed so far): chunks as published, then the end."""
    quiet_since = time.monotonic()
    while True:
        event = await subscription.receive(STREAM_POLL_S)
        if isinstance(event, OutputPublished):
            sent += event.chunk
            quiet_since = time.monotonic()
            yield sse("output", event.chunk)
            continue
        if isinstance(event, ExecutionEnded):
            yield await _end_of(gw, record, event)
            return
        # No event for a while: the end may have been published before the subscription was up.
        final = await _final_record(gw, record)
        if final is not None and final.status in FINISHED_STATUSES:
            if final.output.startswith(sent) and len(final.output) > len(sent):
                yield sse("output", final.output[len(sent) :])
            yield end_event(final)
            return
        if time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield b": keep-alive\n\n"


async def _end_of(gw: GatewayState, record: Execution, ended: ExecutionEnded) -> bytes:
    """The end event; the exit code comes from the record when the leader has written it already."""
    final = await _final_record(gw, record)
    exit_code = final.exit_code if final is not None and final.status in FINISHED_STATUSES else None
    return sse("end", {"status": ended.status, "exit_code": exit_code})


async def _final_record(gw: GatewayState, record: Execution) -> Execution | None:
    try:
        return await gw.history.get(record.job_name, record.id)
    except CronbusError:
        return None


@get(
    "/v1/jobs/{job:str}/executions/{execution:str}/stream",
    summary="Live output of an execution, then its end (text/event-stream)",
    description=(
        "Server-sent events. `output`: data is a JSON string, a piece of output (first all the output so far). "
        '`end`: data is `{"status": ..., "exit_code": ...}`, sent once, last. A finished execution gives its '
        "output and its end at once."
    ),
    media_type="text/event-stream",
    responses={
        200: ResponseSpec(
            data_container=str,
            media_type="text/event-stream",
            description="event stream",
            generate_examples=False,
        ),
        **responses(404, 503),
    },
    opt=READ_STREAM,
)
async def stream_execution(job: FromPath[str], execution: FromPath[str], gw: Gateway) -> Stream:
    record = await gw.history.get(job, execution)
    if record.status not in FINISHED_STATUSES:
        await gw.control.leader()  # 503 "no leader" now, rather than an empty stream
    return Stream(
        _stream(gw, record),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


ROUTES: Final = [
    list_executions,
    search_executions,
    delete_executions,
    show_execution,
    kill_execution,
    stream_execution,
]
