"""Execution routes: history (list, show, delete), kill, and the live output stream of a running execution."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Final

import msgspec
from litestar import Response, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from cronbus.common.errors import ConflictError, CronbusError, NotFoundError, ValidationError
from cronbus.common.messages import ExecutionEnded, OutputPublished
from cronbus.common.models import FINISHED_STATUSES, ZERO_TIME, Execution, Job, JobStatus
from cronbus.services.gateway.api.auth import OPERATOR, READ, READ_STREAM
from cronbus.services.gateway.api.errors import responses
from cronbus.services.gateway.api.jobs import TOTAL_COUNT
from cronbus.services.gateway.api.state import Gateway, GatewayState
from cronbus.services.gateway.api.table import parse_order

log = logging.getLogger(__name__)

EXECUTION_SORT_FIELDS: Final = ("started_at", "finished_at", "attempt")
STREAM_POLL_S: Final = 1.0  # how often a stream checks the record for an end its subscription missed
KEEPALIVE_S: Final = 15.0  # an SSE comment this often keeps proxies from closing an idle stream


def _newest_first_key(execution: Execution) -> tuple[datetime, str]:
    # A pending execution has no started_at yet; its slot says when it belongs.
    when = execution.started_at if execution.started_at != ZERO_TIME else execution.scheduled_at
    return when, execution.id


def truncate_output(execution: Execution, limit: int) -> Execution:
    """Keeps the last `limit` bytes of the output (never splitting a character); flags the cut."""
    data = execution.output.encode()
    if len(data) <= limit:
        return execution
    kept = data[len(data) - limit :].decode("utf-8", errors="ignore")
    return msgspec.structs.replace(execution, output=kept, output_truncated=True)


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
    _sort: Annotated[str | None, QueryParameter(description=f"one of {', '.join(EXECUTION_SORT_FIELDS)}")] = None,
    _order: Annotated[str | None, QueryParameter(description="ASC or DESC (default)")] = None,
    _start: Annotated[int | None, QueryParameter(ge=0)] = None,
    _end: Annotated[int | None, QueryParameter(ge=0)] = None,
    output_size_limit: Annotated[
        int | None, QueryParameter(ge=0, description="keep the last N bytes of each output")
    ] = None,
) -> Response[list[Execution]]:
    sort = _sort
    if sort is not None and sort not in EXECUTION_SORT_FIELDS:
        raise ValidationError(f"_sort must be one of {', '.join(EXECUTION_SORT_FIELDS)}, not '{sort}'")
    descending = parse_order(_order or "DESC")
    if await gw.store.get_job(job) is None:
        raise NotFoundError(f"job '{job}' not found")
    executions = await gw.store.list_executions(job)
    if sort is None:
        executions.sort(key=_newest_first_key, reverse=descending)
    else:
        executions.sort(key=lambda e: (getattr(e, sort), e.id), reverse=descending)
    total = len(executions)
    first, last = _start or 0, total if _end is None else _end
    page = executions[first:last] if first < last else []
    if output_size_limit is not None:
        page = [truncate_output(e, output_size_limit) for e in page]
    return Response(page, headers={"X-Total-Count": str(total)})


@delete(
    "/v1/jobs/{job:str}/executions",
    status_code=200,
    summary="Delete a job's executions and reset its counters",
    responses=responses(404, 409, 503),
)
async def delete_executions(job: FromPath[str], gw: Gateway) -> Job:
    found, index = await gw.stored_job(job)
    await gw.store.delete_executions(job)

    def reset(status: JobStatus) -> JobStatus:
        # What is running now and the leader's slot bookkeeping are not history: keep them.
        return JobStatus(running=status.running, last_slot=status.last_slot, problem=status.problem)

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
    return await gw.store.get_execution(job, execution)


@post(
    "/v1/jobs/{job:str}/executions/{execution:str}/kill",
    status_code=202,
    summary="Stop a running execution (process group TERM, then KILL after a grace period)",
    responses=responses(404, 409, 503),
    opt=OPERATOR,
)
async def kill_execution(job: FromPath[str], execution: FromPath[str], gw: Gateway) -> Execution:
    found = await gw.store.get_execution(job, execution)
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
    async with gw.control.output(leader.publisher, record.id) as subscription:
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
        return await gw.store.get_execution(record.job_name, record.id)
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
    record = await gw.store.get_execution(job, execution)
    if record.status not in FINISHED_STATUSES:
        await gw.control.leader()  # 503 "no leader" now, rather than an empty stream
    return Stream(
        _stream(gw, record),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


ROUTES: Final = [list_executions, delete_executions, show_execution, kill_execution, stream_execution]
