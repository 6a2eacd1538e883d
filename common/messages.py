"""Every wire message: frozen msgspec Structs tagged by `kind`, one union per channel, codecs built once."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Final, Literal, TypeVar, assert_never

import msgspec

from cronbus.common.models import ZERO_TIME, Execution

log = logging.getLogger(__name__)

PROTOCOL_VERSION: Final = 1
# Additions to protocol 1, announced in Hello and Welcome (an older peer ignores the field and speaks revision 0).
# Revision 1: the leader sends runs ahead of their slot (Dispatches, CancelRun); the executor accepts them in
# batches (DispatchAccepted.execution_ids) and bundles its messages (several frames per ZeroMQ message).
# Each side speaks the lower revision of the two.
REVISION: Final = 1


class _Msg(msgspec.Struct, frozen=True, tag_field="kind", kw_only=True):
    pass


# ---- executor -> leader (DEALER -> ROUTER) -------------------------------------------------------------


class Hello(_Msg, tag="hello", kw_only=True, frozen=True):
    """First message on an executor's connection: who it is, and what it holds."""

    protocol: int = PROTOCOL_VERSION
    node: str
    tags: dict[str, str]
    capacity: int
    running: list[str] = []  # execution ids running now
    max_term: int = 0  # the highest term this executor has seen: a leader below it steps down (docs/protocol.md)
    revision: int = 0  # see REVISION


class ExecutorHeartbeat(_Msg, tag="executor_heartbeat", kw_only=True, frozen=True):
    node: str
    running: int


class DispatchAccepted(_Msg, tag="accepted", kw_only=True, frozen=True):
    execution_id: str = ""  # revision 0: one run per message
    execution_ids: list[str] = []  # revision 1: the runs of a burst of dispatches, accepted together
    node: str
    duplicate: bool = False  # already known to this executor: ran or running


class DispatchRefused(_Msg, tag="refused", kw_only=True, frozen=True):
    execution_id: str
    node: str
    reason: str


class ExecutionStarted(_Msg, tag="started", kw_only=True, frozen=True):
    seq: int
    execution_id: str
    job_name: str
    node: str
    started_at: datetime


class OutputProduced(_Msg, tag="output", kw_only=True, frozen=True):
    seq: int
    execution_id: str
    job_name: str
    chunk: str


class ExecutionFinished(_Msg, tag="finished", kw_only=True, frozen=True):
    seq: int
    execution_id: str
    job_name: str
    node: str
    status: str
    exit_code: int | None = None
    reason: str = ""
    output: str = ""
    output_truncated: bool = False
    started_at: datetime = ZERO_TIME
    finished_at: datetime = ZERO_TIME


# ---- gateway -> leader control requests (DEALER -> ROUTER), each answered by ControlReply ----------------


class RunJob(_Msg, tag="run_job", kw_only=True, frozen=True):
    protocol: int = PROTOCOL_VERSION
    req_id: str
    job_name: str
    trace: dict[str, str] = {}  # W3C Trace Context of the gateway's span (common/tracing.py), when tracing


class KillExecution(_Msg, tag="kill_execution", kw_only=True, frozen=True):
    protocol: int = PROTOCOL_VERSION
    req_id: str
    job_name: str
    execution_id: str


class ListBusy(_Msg, tag="list_busy", kw_only=True, frozen=True):
    protocol: int = PROTOCOL_VERSION
    req_id: str


ToLeader = (
    Hello
    | ExecutorHeartbeat
    | DispatchAccepted
    | DispatchRefused
    | ExecutionStarted
    | OutputProduced
    | ExecutionFinished
    | RunJob
    | KillExecution
    | ListBusy
)

# The roles of bus keys (docs/production.md, "Bus keys per role"): each role's processes hold a key pair of its own.
BusRole = Literal["scheduler", "executor", "gateway"]
BUS_ROLES: Final[tuple[BusRole, ...]] = ("scheduler", "executor", "gateway")


def sender_role(message: ToLeader) -> BusRole:
    """The only role whose key may send this message to the leader: executors report, gateways ask. On a bus with
    keys, the leader refuses a message whose sender's key is of another role."""
    match message:
        case (
            Hello()
            | ExecutorHeartbeat()
            | DispatchAccepted()
            | DispatchRefused()
            | ExecutionStarted()
            | OutputProduced()
            | ExecutionFinished()
        ):
            return "executor"
        case RunJob() | KillExecution() | ListBusy():
            return "gateway"
        case _:
            assert_never(message)


# ---- leader -> one peer (ROUTER -> DEALER) ------------------------------------------------------------


class Welcome(_Msg, tag="welcome", kw_only=True, frozen=True):
    protocol: int = PROTOCOL_VERSION
    leader: str
    term: int
    revision: int = 0  # see REVISION


class LeaderHeartbeat(_Msg, tag="leader_heartbeat", kw_only=True, frozen=True):
    term: int


class Ack(_Msg, tag="ack", kw_only=True, frozen=True):
    """Confirms executor messages up to and including seq."""

    seq: int


class KillRequested(_Msg, tag="kill", kw_only=True, frozen=True):
    execution_id: str
    term: int


class CancelRun(_Msg, tag="cancel", kw_only=True, frozen=True):
    """A run sent ahead of its slot must not start after all (its job was disabled): if it has not started, the
    executor ends it `skipped` with this reason; once started, it runs on."""

    execution_id: str
    term: int
    reason: str


class NotLeader(_Msg, tag="not_leader", kw_only=True, frozen=True):
    leader: str  # name of the leader, "" when none is known


class ControlReply(_Msg, tag="reply", kw_only=True, frozen=True):
    req_id: str
    ok: bool
    code: int = 200  # the HTTP status the gateway should answer with
    error: str = ""
    executions: list[Execution] = []


ToPeer = Welcome | LeaderHeartbeat | Ack | KillRequested | CancelRun | NotLeader | ControlReply

# ---- leader PUB (to executors' tag topics and to gateways' output topics) -----------------------------


class Dispatch(_Msg, tag="dispatch", kw_only=True, frozen=True):
    """Run this execution (at its scheduled_at, if that is still to come). Only the executors named in targets
    act; the rest ignore it. Revision 1 sends them in a Dispatches, revision 0 alone and at the slot."""

    term: int
    execution_id: str
    job_name: str
    scheduled_at: datetime
    attempt: int
    group: int
    targets: list[str]
    executor: str
    config: dict[str, str]
    timeout_s: float | None = None
    processors: dict[str, dict[str, str]] = {}
    trace: dict[str, str] = {}  # W3C Trace Context of the leader's launch span (common/tracing.py), when tracing


class Dispatches(_Msg, tag="dispatches", kw_only=True, frozen=True):
    """The runs the leader sends one executor at once (the launches of one second go in a few messages)."""

    runs: list[Dispatch]


class OutputPublished(_Msg, tag="output_published", kw_only=True, frozen=True):
    execution_id: str
    chunk: str


class ExecutionEnded(_Msg, tag="ended", kw_only=True, frozen=True):
    execution_id: str
    status: str


Published = Dispatch | Dispatches | OutputPublished | ExecutionEnded

# ---- codecs (built once) ------------------------------------------------------------------------------

encoder: Final = msgspec.msgpack.Encoder()
to_leader_decoder: Final = msgspec.msgpack.Decoder(ToLeader)
to_peer_decoder: Final = msgspec.msgpack.Decoder(ToPeer)
published_decoder: Final = msgspec.msgpack.Decoder(Published)

MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
# An executor's message to the leader may carry several frames, each one message of ToLeader: what it sends in one
# turn of its loop (a burst of accepted, started and finished runs) goes in one ZeroMQ message.
MAX_BUNDLE: Final = 256  # frames per message
BUNDLE_BYTES: Final = 1024 * 1024  # a bundle is sent once its frames reach this size


def encode(message: msgspec.Struct) -> bytes:
    return encoder.encode(message)


T = TypeVar("T")


def decode(decoder: msgspec.msgpack.Decoder[T], frame: bytes, *, source: str) -> T | None:
    """Decodes one frame; a malformed or oversized frame is logged and dropped (None), never raised."""
    if len(frame) > MAX_FRAME_BYTES:
        log.warning("dropped oversized frame source=%s bytes=%d", source, len(frame))
        return None
    try:
        return decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("dropped malformed frame source=%s: %s", source, exc)
        return None


OUTPUT_TOPIC = b"out:"


def output_topic(execution_id: str) -> bytes:
    return OUTPUT_TOPIC + execution_id.encode() + b"\0"
