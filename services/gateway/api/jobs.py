"""Job routes: list, read, upsert with check-and-set, delete, run, toggle, next fires, preview and restore."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final
from urllib.parse import quote

import msgspec
from litestar import Request, Response, delete, get, patch, post, put
from litestar.datastructures import ResponseHeader, UploadFile
from litestar.params import FromPath, JSONBody, MultipartBody, QueryParameter

from cronbus.common.errors import ConflictError, CronbusError, NotFoundError, UnavailableError, ValidationError
from cronbus.common.executor_config import EXECUTORS
from cronbus.common.models import JOB_SORT_FIELDS, JOB_STATUS_FILTERS, Job, utc
from cronbus.common.schedule import MAX_FIRES, next_fires, parse_schedule
from cronbus.common.validation import check_parent, order_parents_first, validate_job
from cronbus.services.gateway.api.auth import OPERATOR, READ
from cronbus.services.gateway.api.errors import responses
from cronbus.services.gateway.api.state import Gateway, GatewayState
from cronbus.services.gateway.api.table import (
    JOB_SORT_ALIASES,
    JobQuery,
    metadata_filter,
    parse_order,
)

log = logging.getLogger(__name__)

CAS_ATTEMPTS: Final = 8
UPSERT_ATTEMPTS: Final = 50  # a full body does not depend on the version it replaces: keep trying
PAUSED: Final = "New job submissions are currently paused"
HAS_DEPENDENTS: Final = "job has dependent jobs, delete them first"
RESTORE_MAX_BODY_BYTES: Final = 64 * 1024 * 1024  # a dump of many jobs is far bigger than one job

TOTAL_COUNT: Final = ResponseHeader(
    name="X-Total-Count", description="Number of items after filters, before slicing", documentation_only=True
)
LOCATION: Final = ResponseHeader(name="Location", description="/v1/jobs/<name>", documentation_only=True)
JOB_BODY: Final = {"request_body": "Job"}  # app.py adds the Job schema as these routes' request body


# ---- decoding ---------------------------------------------------------------------------------------------


def job_from_object(raw: object) -> Job:
    """A Job from decoded JSON. Unknown keys are ignored and nulls mean "default" (old Dkron clients and
    react-admin forms send both); a wrong type is a ValidationError naming the field."""
    if not isinstance(raw, dict):
        raise ValidationError("expected a JSON object (a job)")
    cleaned = {key: _dkron_ui_time(key, value) for key, value in raw.items() if value is not None}
    try:
        return msgspec.convert(cleaned, Job)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid job: {exc}") from None


_UI_MINUTE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}")


def _dkron_ui_time(key: str, value: object) -> object:
    """`starts_at`/`expires_at` as Dkron's UI sends them (an HTML datetime-local, `2006-01-02T15:04`) mean that
    minute in UTC, as in Dkron; any other value goes on as it is (RFC 3339)."""
    if key in ("starts_at", "expires_at") and isinstance(value, str) and _UI_MINUTE.fullmatch(value):
        return f"{value}:00Z"
    return value


def decode_job(body: bytes) -> Job:
    if not body.strip():
        raise ValidationError("the request body is empty; expected a job as JSON")
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ValidationError(f"invalid JSON: {exc}") from None
    return job_from_object(raw)


# ---- writes -----------------------------------------------------------------------------------------------


async def check_parent_of(gw: GatewayState, job: Job) -> None:
    """404 when the parent does not exist (read from Consul), 400 when the chain would loop."""
    if not job.parent_job:
        return
    await gw.ready_view()  # the cycle check walks the chain in the view
    parent = await gw.store.get_job(job.parent_job)
    parent_job = parent.job if parent is not None else None

    def lookup(name: str) -> Job | None:
        if name == job.name:
            return job
        if name == job.parent_job:
            return parent_job
        return gw.table.lookup(name)

    check_parent(job.name, job.parent_job, lookup)


async def upsert(gw: GatewayState, job: Job) -> tuple[Job, int]:
    """Validates and stores `job` with check-and-set; returns what was stored and a modify index at least
    as new as the write. A lost race re-reads and writes again: the body does not depend on the old
    version (only created_at is carried over), so every writer's full body ends up stored at some point.
    A disabled job whose executor cronbus does not have is stored (restore keeps such jobs; see restore)."""
    for attempt in range(UPSERT_ATTEMPTS):
        if attempt:
            # Jitter, so that writers who lost a round do not collide again in lockstep.
            await asyncio.sleep(random.uniform(0, 0.002 * min(attempt, 10)))
        stored = await gw.store.get_job(job.name)
        existing = stored.definition if stored is not None else None
        new = _validated(job, existing, gw.clock())
        await check_parent_of(gw, new)
        if await gw.store.put_job(new, cas=stored.modify_index if stored is not None else 0):
            fresh = await gw.store.get_job(new.name)
            return new, fresh.modify_index if fresh is not None else 0
    raise ConflictError(f"job '{job.name}' keeps changing under concurrent writes; try again")


def _validated(job: Job, existing: Job | None, now: datetime) -> Job:
    if job.disabled and job.executor and job.executor not in EXECUTORS:
        # Everything else is checked as for any job; the executor and its configuration wait for the executor.
        checked = validate_job(msgspec.structs.replace(job, executor="noop", executor_config={}), existing=existing,
                               now=now)  # fmt: skip
        return msgspec.structs.replace(checked, executor=job.executor, executor_config=job.executor_config)
    return validate_job(job, existing=existing, now=now)


async def _write(gw: GatewayState, job: Job, runoncreate: str | None) -> Response[Job]:
    if await gw.store.get_pause():
        raise UnavailableError(PAUSED)
    stored, index = await upsert(gw, job)
    await gw.await_job_version(stored.name, index)
    body = await gw.api_job(stored, index)
    headers = {"Location": job_location(stored.name)}
    if runoncreate is not None:
        try:
            await gw.control.run_job(stored.name)
        except CronbusError as exc:
            # The job is stored: the write succeeded and must not read as failed (Dkron also answers 201 and only
            # logs a run that could not start). The header says why there was no run.
            log.warning("runoncreate did not start a run job=%s: %s", stored.name, exc)
            headers["X-Cronbus-Warning"] = f"stored, but not run: {exc}"
    return Response(body, status_code=201, headers=headers)


def job_location(name: str) -> str:
    """The job's URL path, percent-encoded: a header is Latin-1, and a name may hold any lower-case letter."""
    return f"/v1/jobs/{quote(name, safe='')}"


_WRITE_DOC: Final[dict[str, Any]] = {
    "status_code": 201,
    "response_headers": [LOCATION],
    "responses": responses(400, 404, 409, 413, 503),
    "opt": JOB_BODY,
}
RUN_ON_CREATE: Final = QueryParameter(
    required=False, description="present (any value): also run the job once it is stored"
)


@post("/v1/jobs", summary="Create or update a job (upsert by name)", **_WRITE_DOC)
async def create_job(
    request: Request[Any, Any, Any], gw: Gateway, runoncreate: Annotated[str | None, RUN_ON_CREATE] = None
) -> Response[Job]:
    return await _write(gw, decode_job(await request.body()), runoncreate)


@patch("/v1/jobs", summary="Create or update a job (as POST; Dkron treats PATCH as a full upsert)", **_WRITE_DOC)
async def patch_job(
    request: Request[Any, Any, Any], gw: Gateway, runoncreate: Annotated[str | None, RUN_ON_CREATE] = None
) -> Response[Job]:
    return await _write(gw, decode_job(await request.body()), runoncreate)


@put("/v1/jobs/{job:str}", summary="Create or update a job (the body's name wins)", **_WRITE_DOC)
async def put_job(
    job: FromPath[str],
    request: Request[Any, Any, Any],
    gw: Gateway,
    runoncreate: Annotated[str | None, RUN_ON_CREATE] = None,
) -> Response[Job]:
    body = decode_job(await request.body())
    if not body.name:
        body = msgspec.structs.replace(body, name=job)
    return await _write(gw, body, runoncreate)


# ---- reads ------------------------------------------------------------------------------------------------


@get(
    "/v1/jobs",
    summary="List jobs",
    description=(
        "Filters: `metadata[k]=v` (repeatable, AND, exact), `q` (substring of name or displayname), `status`, "
        "`disabled`, `id` (repeatable: only these jobs, react-admin's getMany). react-admin paging: `_sort`, "
        "`_order`, `_start`, `_end` (slice [_start:_end))."
    ),
    response_headers=[TOTAL_COUNT],
    responses=responses(400, 503),
    opt=READ,
)
async def list_jobs(
    request: Request[Any, Any, Any],
    gw: Gateway,
    _sort: Annotated[
        str | None, QueryParameter(description=f"one of {', '.join(JOB_SORT_FIELDS)}, or id (= name, as Dkron maps it)")
    ] = None,
    _order: Annotated[str | None, QueryParameter(description="ASC (default) or DESC")] = None,
    _start: Annotated[int | None, QueryParameter(ge=0)] = None,
    _end: Annotated[int | None, QueryParameter(ge=0)] = None,
    q: Annotated[str | None, QueryParameter(description="substring of name or displayname")] = None,
    status: Annotated[str | None, QueryParameter(description=f"one of {', '.join(JOB_STATUS_FILTERS)}")] = None,
    disabled: Annotated[bool | None, QueryParameter()] = None,
) -> Response[list[Job]]:
    query = JobQuery(
        sort=JOB_SORT_ALIASES.get(_sort or "", _sort or "name"),
        descending=parse_order(_order),
        start=_start or 0,
        end=_end,
        q=q or "",
        status=status or "",
        disabled=disabled,
        metadata=metadata_filter(request.query_params),
        ids=frozenset(request.query_params.getall("id", [])),
    )
    await gw.ready_view()
    total, jobs = gw.table.list(query)
    return Response(jobs, headers={"X-Total-Count": str(total)})


@get("/v1/jobs/{job:str}", summary="Show a job", responses=responses(404, 409, 503), opt=READ)
async def show_job(job: FromPath[str], gw: Gateway) -> Job:
    return await gw.viewed_job(job)


@delete(
    "/v1/jobs/{job:str}",
    status_code=200,
    summary="Delete a job and its executions",
    responses=responses(404, 409, 503),
)
async def delete_job(job: FromPath[str], gw: Gateway) -> Job:
    await gw.ready_view()  # dependents are known from the view
    for _ in range(CAS_ATTEMPTS):
        stored = await gw.store.get_job(job)
        if stored is None:
            raise NotFoundError(f"job '{job}' not found")
        if gw.table.has_dependents(job):
            raise ConflictError(HAS_DEPENDENTS)
        # An unreadable definition can still be deleted: that is how an operator gets rid of it.
        definition = stored.definition
        shown = (
            await gw.api_job(definition, stored.modify_index, problem=stored.problem)
            if definition is not None
            else Job(id=job, name=job, problem=stored.problem)
        )
        try:
            await gw.store.delete_job(job, cas=stored.modify_index)
        except ConflictError:
            continue
        await gw.history.delete_archived(job)  # a PostgreSQL store's records of it (Consul's went with it)
        await gw.await_job_gone(job)
        return shown
    raise ConflictError(f"job '{job}' keeps changing; try again")


async def _run(job: str, gw: GatewayState) -> Response[Job]:
    found, index = await gw.stored_job(job)
    await gw.control.run_job(job)
    return Response(await gw.api_job(found, index), status_code=202)


_RUN_DOC: Final[dict[str, Any]] = {
    "status_code": 202,
    "responses": responses(404, 409, 503),
    "opt": OPERATOR,
    "description": "Returns once the leader accepted the run, without waiting for it. Works for disabled jobs.",
}


@post("/v1/jobs/{job:str}", summary="Run a job now", **_RUN_DOC)
async def run_job(job: FromPath[str], gw: Gateway) -> Response[Job]:
    return await _run(job, gw)


@post("/v1/jobs/{job:str}/run", summary="Run a job now", **_RUN_DOC)
async def run_job_alias(job: FromPath[str], gw: Gateway) -> Response[Job]:
    return await _run(job, gw)


@post(
    "/v1/jobs/{job:str}/toggle",
    status_code=200,
    summary="Enable or disable a job",
    responses=responses(404, 409, 503),
    opt=OPERATOR,
)
async def toggle_job(job: FromPath[str], gw: Gateway) -> Job:
    for _ in range(CAS_ATTEMPTS):
        stored = await gw.store.get_job(job)
        if stored is None:
            raise NotFoundError(f"job '{job}' not found")
        found, index = stored.definition, stored.modify_index
        if found is None:
            raise ConflictError(f"job '{job}' has an invalid stored definition: {stored.problem}")
        if found.disabled and stored.problem:
            raise ConflictError(f"job '{job}' cannot be enabled: {stored.problem}")
        flipped = msgspec.structs.replace(found, disabled=not found.disabled)
        # The new value depends on the version read, so a lost race must re-read, never blindly rewrite.
        if await gw.store.put_job(flipped, cas=index):
            fresh = await gw.store.get_job(job)
            new_index = fresh.modify_index if fresh is not None else index
            await gw.await_job_version(job, new_index)
            return await gw.api_job(flipped, new_index, problem=stored.problem)
    raise ConflictError(f"job '{job}' keeps changing; try again")


# ---- schedule previews ------------------------------------------------------------------------------------

Count = Annotated[int, msgspec.Meta(ge=1, le=MAX_FIRES)]


@get(
    "/v1/jobs/{job:str}/next",
    summary="The job's next fire times (UTC)",
    responses=responses(400, 404, 409, 503),
    opt=READ,
)
async def job_next(
    job: FromPath[str], gw: Gateway, count: Annotated[int, QueryParameter(ge=1, le=MAX_FIRES)] = 5
) -> list[datetime]:
    found, _ = await gw.stored_job(job)
    # A definition edited by hand in Consul may carry naive times; they mean UTC, as on input.
    bounded = msgspec.structs.replace(
        found,
        starts_at=utc(found.starts_at) if found.starts_at is not None else None,
        expires_at=utc(found.expires_at) if found.expires_at is not None else None,
        created_at=utc(found.created_at) if found.created_at is not None else None,
    )
    try:
        return next_fires(bounded, gw.clock(), count)
    except ValidationError as exc:
        raise ConflictError(f"job '{job}' cannot be scheduled: {exc}") from None


class SchedulePreview(msgspec.Struct, kw_only=True):
    """A schedule of a job not saved yet."""

    schedule: str
    timezone: str = ""
    count: Count = 5
    after: datetime | None = None
    name: str = ""  # seeds the `~`/`H` hash as the job's name would


@post(
    "/v1/schedule/preview",
    status_code=200,
    summary="Fire times of an unsaved schedule (UTC)",
    responses=responses(400),
    opt=READ,
)
async def preview_schedule(data: JSONBody[SchedulePreview], gw: Gateway) -> list[datetime]:
    now = gw.clock()
    after = utc(data.after) if data.after is not None else now
    try:
        # Anchored at now: an `@every` job saved now would be anchored at its creation.
        schedule = parse_schedule(data.schedule, data.timezone, job_name=data.name, anchor=now)
    except ValidationError as exc:
        raise ValidationError(f"can't parse job schedule: {exc}") from None
    if schedule is None:
        raise ValidationError("the schedule is empty")
    fires: list[datetime] = []
    t = after
    while len(fires) < data.count and (fire := schedule.next_after(t)) is not None:
        fires.append(fire)
        t = fire
    return fires


# ---- restore ----------------------------------------------------------------------------------------------


@dataclass
class RestoreForm:
    file: UploadFile  # a file part: curl -F file=@dump.json


@post(
    "/v1/restore",
    status_code=200,
    summary="Create or update the jobs of a dump (what GET /v1/jobs returns), parents first",
    responses=responses(400, 413),
    request_max_body_size=RESTORE_MAX_BODY_BYTES,
)
async def restore(data: MultipartBody[RestoreForm], gw: Gateway) -> list[str]:
    content = await data.file.read()
    try:
        raw = msgspec.json.decode(content)
    except msgspec.DecodeError as exc:
        raise ValidationError(f"file is not JSON: {exc}") from None
    if not isinstance(raw, list):
        raise ValidationError("file must be a JSON array of jobs")
    results: list[str] = []
    jobs: list[Job] = []
    for position, item in enumerate(raw):
        try:
            jobs.append(job_from_object(item))
        except ValidationError as exc:
            name = item.get("name") if isinstance(item, dict) else None
            results.append(f"fail create {name if isinstance(name, str) else f'#{position}'}: {exc}")
    last: tuple[str, int] | None = None
    for job in order_parents_first(jobs):
        # A job whose executor cronbus does not have is kept, disabled: a dump never loses a job. Its problem
        # (shown by the API and the UI) says why; it can be enabled once its executor exists.
        unavailable = bool(job.executor) and job.executor not in EXECUTORS
        try:
            stored, index = await upsert(gw, msgspec.structs.replace(job, disabled=True) if unavailable else job)
        except CronbusError as exc:
            results.append(f"fail create {job.name}: {exc}")
            continue
        note = f": stored disabled, the executor '{job.executor}' is not available in cronbus" if unavailable else ""
        results.append(f"success create {stored.name}{note}")
        last = (stored.name, index)
    if last is not None:  # consul applies writes in order: once the last shows, all do
        await gw.await_job_version(*last)
    return results


ROUTES: Final = [
    list_jobs,
    create_job,
    patch_job,
    show_job,
    put_job,
    delete_job,
    run_job,
    run_job_alias,
    toggle_job,
    job_next,
    preview_schedule,
    restore,
]
