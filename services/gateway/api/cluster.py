"""Cluster routes: agent info, members, leader, leave, pause, busy executions, health and metrics."""

from __future__ import annotations

import importlib.metadata
import logging
from datetime import UTC
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter

from cronbus.common.consul import keys
from cronbus.common.consul.catalog import list_members
from cronbus.common.errors import ConsulError, NotFoundError, ValidationError
from cronbus.common.models import MAX_PAUSE_BY, MAX_PAUSE_NOTE, Execution, LeaderInfo, Member, PauseState
from cronbus.services.gateway.api import metrics
from cronbus.services.gateway.api.auth import OPEN, READ, presented_token, role_of
from cronbus.services.gateway.api.errors import responses
from cronbus.services.gateway.api.jobs import TOTAL_COUNT
from cronbus.services.gateway.api.state import Gateway, GatewayState

log = logging.getLogger(__name__)

SERVICES: Final = {
    keys.SCHEDULER_SERVICE: "scheduler",
    keys.EXECUTOR_SERVICE: "executor",
    keys.GATEWAY_SERVICE: "gateway",
}
NO_LEADER: Final = "no leader"
FOLLOWER: Final = "I am a follower"


def version() -> str:
    try:
        return importlib.metadata.version("cronbus")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _is_leader(member: Member, leader: LeaderInfo) -> bool:
    return member.Tags.get("role") == "scheduler" and member.Name in (f"scheduler-{leader.name}", leader.name)


async def members_and_leader(gw: GatewayState) -> tuple[list[Member], LeaderInfo | None]:
    members = await list_members(gw.consul, SERVICES)
    found = await gw.store.get_leader()
    leader = found[0] if found is not None else None
    if leader is not None:
        for member in members:
            if _is_leader(member, leader):
                member.Tags["leader"] = "true"
    return members, leader


class AgentName(msgspec.Struct):
    name: str
    version: str


class AgentInfo(msgspec.Struct):
    agent: AgentName
    serf: dict[str, str]
    tags: dict[str, str]


class WhoAmI(msgspec.Struct):
    role: str
    auth: bool


@get("/v1/whoami", summary="The role of the presented token (admin when no tokens are configured)", opt=READ)
async def whoami(gw: Gateway, request: Request[Any, Any, Any]) -> WhoAmI:
    tokens = gw.settings.tokens
    if not tokens:
        return WhoAmI(role="admin", auth=False)
    return WhoAmI(role=role_of(presented_token(request), tokens) or "", auth=True)


@get(["/v1"], summary="This gateway and cluster statistics", responses=responses(503), opt=READ)
async def agent_info(gw: Gateway) -> AgentInfo:
    members, leader = await members_and_leader(gw)
    stats = {
        "members": str(len(members)),
        "alive_members": str(sum(1 for m in members if m.Status == 1)),
        "leader": leader.name if leader is not None else "",
        "term": str(leader.term) if leader is not None else "0",
        "jobs": str(len(gw.view.jobs)),
        "paused": str(await gw.store.get_pause()).lower(),
    }
    return AgentInfo(
        agent=AgentName(name=gw.settings.node_name, version=version()),
        serf=stats,
        tags={"role": "gateway", "node": gw.settings.node_name},
    )


@get(
    "/v1/members",
    summary="Every process of the cluster",
    response_headers=[TOTAL_COUNT],
    responses=responses(503),
    opt=READ,
)
async def members(gw: Gateway) -> Response[list[Member]]:
    found, _ = await members_and_leader(gw)
    return Response(found, headers={"X-Total-Count": str(len(found))})


@get("/v1/leader", summary="The scheduler that leads", responses=responses(404, 503), opt=READ)
async def leader(gw: Gateway) -> Member:
    found, info = await members_and_leader(gw)
    if info is None:
        raise NotFoundError(NO_LEADER)
    for member in found:
        if member.Tags.get("leader") == "true":
            return member
    # Holding the lock but not (yet) in the catalog: describe it from its leader record.
    endpoint = urlsplit(info.router)
    return Member(
        Name=f"scheduler-{info.name}",
        Addr=endpoint.hostname or "",
        Port=endpoint.port or 0,
        Tags={"role": "scheduler", "leader": "true"},
        Status=1,
        status_text="alive",
        id=f"scheduler-{info.name}",
    )


@get(
    "/v1/isleader",
    status_code=404,
    summary='Whether this node leads: a gateway never does, so always 404 "I am a follower"',
    opt=READ,
)
async def is_leader() -> Response[str]:
    # Dkron answers a JSON string here, not plain text; Litestar sends a str as it is, so it is pre-encoded.
    return Response(msgspec.json.encode(FOLLOWER).decode(), status_code=404, media_type=MediaType.JSON)


@post(
    "/v1/leave",
    status_code=200,
    summary="This gateway leaves the cluster gracefully (stops after answering)",
    responses=responses(503),
)
async def leave(gw: Gateway) -> Response[list[Member]]:
    found, _ = await members_and_leader(gw)
    log.info("leave requested through the API")
    return Response(found, background=BackgroundTask(gw.on_leave))


@get(
    "/v1/pause",
    summary="Whether new job submissions are paused, with the note of whoever paused them",
    responses=responses(503),
    opt=READ,
)
async def get_pause(gw: Gateway) -> PauseState:
    return await gw.store.get_pause_state()


class PauseNote(msgspec.Struct, forbid_unknown_fields=True):
    """The optional body of POST /v1/pause (cronbus's; Dkron's takes none)."""

    note: str = ""
    paused_by: str = ""


def pause_note(body: bytes, note: str | None, paused_by: str | None) -> PauseNote:
    """The note from the JSON body and/or the query (the query wins); an empty body is no note."""
    given = PauseNote()
    if body.strip():
        try:
            given = msgspec.json.decode(body, type=PauseNote)
        except msgspec.DecodeError as exc:
            raise ValidationError(f"invalid pause note: {exc}") from None
    found = PauseNote(
        note=(note if note is not None else given.note).strip(),
        paused_by=(paused_by if paused_by is not None else given.paused_by).strip(),
    )
    if len(found.note) > MAX_PAUSE_NOTE:
        raise ValidationError(f"note must be at most {MAX_PAUSE_NOTE} characters")
    if len(found.paused_by) > MAX_PAUSE_BY:
        raise ValidationError(f"paused_by must be at most {MAX_PAUSE_BY} characters")
    return found


@post(
    "/v1/pause",
    status_code=200,
    summary="Pause new job submissions (cluster-wide)",
    description=(
        'Optional: a note, as a JSON body `{"note": ..., "paused_by": ...}` or as the query parameters `note` and '
        "`paused_by`; it is kept with the pause state, with the time, until unpaused. Pausing again replaces it."
    ),
    responses=responses(400, 503),
)
async def pause(
    request: Request[Any, Any, Any],
    gw: Gateway,
    note: Annotated[str | None, QueryParameter(description="why (at most 1000 characters)")] = None,
    paused_by: Annotated[str | None, QueryParameter(description="who (at most 200 characters)")] = None,
) -> PauseState:
    given = pause_note(await request.body(), note, paused_by)
    state = PauseState(paused=True, note=given.note, paused_by=given.paused_by, paused_at=gw.clock().astimezone(UTC))
    await gw.store.set_pause_state(state)
    log.info("job submissions paused by=%r note=%r", state.paused_by, state.note)
    return state


@post("/v1/unpause", status_code=200, summary="Accept new job submissions again", responses=responses(503))
async def unpause(gw: Gateway) -> PauseState:
    await gw.store.set_pause_state(PauseState())
    log.info("job submissions resumed")
    return PauseState()


@get(
    "/v1/busy",
    summary="Executions running now, with their output so far",
    response_headers=[TOTAL_COUNT],
    responses=responses(503),
    opt=READ,
)
async def busy(gw: Gateway) -> Response[list[Execution]]:
    running = await gw.control.list_busy()
    return Response(running, headers={"X-Total-Count": str(len(running))})


class HealthReport(msgspec.Struct, omit_defaults=True):
    """Dkron's `{"status": ...}` and cronbus's details. Not Dkron's `leader` (a bool: whether this node leads,
    which a gateway never does): the scheduler that leads is `leader_name`."""

    status: str
    consul: str
    leader_name: str = ""
    invalid_jobs: list[str] = []  # stored definitions the scheduler cannot use: "name: why"
    unreadable_records: list[str] = []  # other stored values this gateway met that do not decode: "key: why"
    problem: str = ""  # why the gateway itself is unhealthy, when Consul is fine


@get(
    "/health",
    summary="Liveness of the gateway and its Consul",
    responses={
        503: ResponseSpec(data_container=HealthReport, description="Consul is unreachable", generate_examples=False)
    },
    opt=OPEN,
)
async def health(gw: Gateway) -> Response[HealthReport]:
    try:
        await gw.consul.status_leader()
        found = await gw.store.get_leader()
    except ConsulError as exc:
        return Response(HealthReport(status="unhealthy", consul=str(exc)), status_code=503)
    if gw.view_failure:
        report = HealthReport(status="unhealthy", consul="ok", problem=f"job view: {gw.view_failure}")
        return Response(report, status_code=503)
    # Definitions that do not decode, and those the scheduler reported it cannot schedule.
    problems = {s.name: s.problem for s in gw.view.jobs.values() if s.job is None}
    for name, (status, _) in gw.view.statuses.items():
        if status.problem and name in gw.view.jobs:
            problems.setdefault(name, status.problem)
    invalid = [f"{name}: {problem}" for name, problem in sorted(problems.items())]
    return Response(
        HealthReport(
            status="healthy",
            consul="ok",
            leader_name=found[0].name if found else "",
            invalid_jobs=invalid,
            unreadable_records=[f"{key}: {why}" for key, why in sorted(gw.store.unreadable.items())],
        )
    )


@get(
    "/metrics",
    summary="Prometheus metrics",
    media_type=metrics.CONTENT_TYPE,
    responses=responses(),
    opt=READ,
)
async def metrics_text(gw: Gateway) -> str:
    return gw.metrics.render()


ROUTES: Final = [
    whoami,
    agent_info,
    members,
    leader,
    is_leader,
    leave,
    get_pause,
    pause,
    unpause,
    busy,
    health,
    metrics_text,
]
