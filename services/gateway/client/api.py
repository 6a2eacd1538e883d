"""A typed HTTP client for the gateway's Dkron v1 API: what the `cronbus` client commands talk through."""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from cronbus.common.errors import CronbusError
from cronbus.common.models import Execution, Job, Member, PauseState

__all__ = [
    "DEFAULT_GATEWAY",
    "READ_ONLY_FIELDS",
    "ApiError",
    "ExecutionEnded",
    "GatewayClient",
    "GatewayError",
    "GatewayUnreachableError",
    "JobQuery",
    "OutputReceived",
    "ProtocolError",
    "Reply",
    "StreamEvent",
    "compact_job",
    "parse_sse",
]

DEFAULT_GATEWAY: Final = "http://127.0.0.1:8080"
# The gateway sends an SSE comment every ~15 s on a quiet stream, so a read this long means it is gone.
STREAM_READ_TIMEOUT_S: Final = 90.0
# Fields the server maintains; a client sends them back only by accident, so writes leave them out.
READ_ONLY_FIELDS: Final = frozenset(
    {
        "id",
        "success_count",
        "error_count",
        "last_success",
        "last_error",
        "dependent_jobs",
        "status",
        "next",
        "created_at",
    }
)

T = TypeVar("T")


class GatewayError(CronbusError):
    """The client could not get what it asked the gateway for."""


class ApiError(GatewayError):
    """The gateway answered with an error status; `message` is its plain-text reason."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status} {message}")


class GatewayUnreachableError(GatewayError):
    """No HTTP answer at all: nothing listens at the URL, or the connection broke."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        hint = "is `cronbus gateway` running?"
        if "CERTIFICATE_VERIFY_FAILED" in reason:
            hint = "its certificate is not trusted: for a private CA, give --ca-file (or CRONBUS_CA_FILE)"
        super().__init__(f"cannot reach the gateway at {url}: {reason}; {hint}")


class ProtocolError(GatewayError):
    """An answer the client cannot read (not the JSON the API promises, or a stream cut short)."""


@dataclass(frozen=True)
class Reply(Generic[T]):
    """A decoded answer, with the body as the gateway sent it (for `--json`) and X-Total-Count on lists."""

    value: T
    raw: bytes
    total: int | None = None


@dataclass(frozen=True)
class JobQuery:
    """Filters and paging of GET /v1/jobs; empty values are left out of the query."""

    q: str = ""
    status: str = ""
    disabled: bool | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    sort: str = ""
    descending: bool = False
    start: int = 0
    end: int | None = None

    def params(self) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = []
        if self.q:
            params.append(("q", self.q))
        if self.status:
            params.append(("status", self.status))
        if self.disabled is not None:
            params.append(("disabled", "true" if self.disabled else "false"))
        params.extend((f"metadata[{k}]", v) for k, v in self.metadata.items())
        if self.sort:
            params.append(("_sort", self.sort))
        if self.descending:
            params.append(("_order", "DESC"))
        if self.start:
            params.append(("_start", str(self.start)))
        if self.end is not None:
            params.append(("_end", str(self.end)))
        return params


class OutputReceived(msgspec.Struct, frozen=True):
    """A piece of an execution's output (the first one is all the output so far)."""

    text: str


class ExecutionEnded(msgspec.Struct, frozen=True):
    """The execution finished; always the stream's last event."""

    status: str
    exit_code: int | None = None


StreamEvent = OutputReceived | ExecutionEnded


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of each complete server-sent event; comments and an unfinished last event are dropped."""
    event, data = "", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


def compact_job(job: Job) -> dict[str, Any]:
    """A job as JSON to write: read-only fields and fields at their default left out (a write is a full upsert,
    so a missing field and its default mean the same)."""
    defaults = msgspec.to_builtins(Job())
    values = msgspec.to_builtins(job)
    return {k: v for k, v in values.items() if k == "name" or (k not in READ_ONLY_FIELDS and v != defaults.get(k))}


def _decode(body: bytes, type_: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"unexpected answer from the gateway: {exc}") from None


def _error_of(response: httpx.Response) -> ApiError:
    message = " ".join(response.text.split()) or response.reason_phrase
    return ApiError(response.status_code, message)


class GatewayClient:
    """Synchronous client of one gateway. Every method raises ApiError for an error status,
    GatewayUnreachableError when there is no answer, ProtocolError for an unreadable answer."""

    def __init__(
        self,
        base_url: str = DEFAULT_GATEWAY,
        *,
        token: str = "",
        timeout_s: float = 30.0,
        ca_file: str = "",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """ca_file: the CA certificate(s), PEM, that an https gateway's certificate must chain to (a private CA);
        without it, the system's trusted CAs."""
        self.base_url = check_gateway_url(base_url)
        headers = {"User-Agent": "cronbus-cli", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._timeout_s = timeout_s
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport, verify=_verify(ca_file)
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- transport ----------------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        body: object = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
    ) -> httpx.Response:
        content = msgspec.json.encode(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = self._http.request(
                method, path, params=tuple(params or ()), content=content, files=files, headers=headers
            )
        except httpx.TransportError as exc:
            raise GatewayUnreachableError(self.base_url, str(exc) or type(exc).__name__) from None
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    def _call(
        self,
        type_: type[T],
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        body: object = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
    ) -> Reply[T]:
        response = self._send(method, path, params=params, body=body, files=files)
        total = response.headers.get("X-Total-Count")
        return Reply(_decode(response.content, type_), response.content, int(total) if total is not None else None)

    # ---- jobs ---------------------------------------------------------------------------------------------

    def list_jobs(self, query: JobQuery | None = None) -> Reply[list[Job]]:
        return self._call(list[Job], "GET", "/v1/jobs", params=(query or JobQuery()).params())

    def get_job(self, name: str) -> Reply[Job]:
        return self._call(Job, "GET", f"/v1/jobs/{_seg(name)}")

    def get_job_object(self, name: str) -> dict[str, Any]:
        """The job as a JSON object, with any field this client does not know, for read-modify-write."""
        return self._call(dict[str, Any], "GET", f"/v1/jobs/{_seg(name)}").value

    def save_job(self, job: Mapping[str, Any], *, run: bool = False) -> Reply[Job]:
        """POST /v1/jobs: create or replace the job named in the body; `run` also starts it once, now."""
        return self._call(Job, "POST", "/v1/jobs", params=[("runoncreate", "true")] if run else None, body=job)

    def replace_job(self, name: str, job: Mapping[str, Any]) -> Reply[Job]:
        """PUT /v1/jobs/{name}: the body's `name` wins, so callers keep it equal to `name`."""
        return self._call(Job, "PUT", f"/v1/jobs/{_seg(name)}", body=job)

    def delete_job(self, name: str) -> Reply[Job]:
        return self._call(Job, "DELETE", f"/v1/jobs/{_seg(name)}")

    def run_job(self, name: str) -> Reply[Job]:
        """Asks for a run now; returns once the leader accepted it, without waiting for the run."""
        return self._call(Job, "POST", f"/v1/jobs/{_seg(name)}/run")

    def toggle_job(self, name: str) -> Reply[Job]:
        return self._call(Job, "POST", f"/v1/jobs/{_seg(name)}/toggle")

    def next_fires(self, name: str, count: int = 5) -> Reply[list[datetime]]:
        return self._call(list[datetime], "GET", f"/v1/jobs/{_seg(name)}/next", params=[("count", str(count))])

    def preview_schedule(
        self, schedule: str, timezone: str = "", count: int = 5, name: str = ""
    ) -> Reply[list[datetime]]:
        body = {"schedule": schedule, "timezone": timezone, "count": count, "name": name}
        return self._call(list[datetime], "POST", "/v1/schedule/preview", body=body)

    def restore(self, content: bytes, filename: str = "jobs.json") -> Reply[list[str]]:
        files = {"file": (filename, content, "application/json")}
        return self._call(list[str], "POST", "/v1/restore", files=files)

    # ---- executions ---------------------------------------------------------------------------------------

    def list_executions(
        self, job: str, *, start: int = 0, end: int | None = None, output_size_limit: int | None = None
    ) -> Reply[list[Execution]]:
        params = [("_start", str(start))]
        if end is not None:
            params.append(("_end", str(end)))
        if output_size_limit is not None:
            params.append(("output_size_limit", str(output_size_limit)))
        return self._call(list[Execution], "GET", f"/v1/jobs/{_seg(job)}/executions", params=params)

    def search_executions(self, filters: Mapping[str, str], *, end: int, output_size_limit: int | None = None
                          ) -> Reply[list[Execution]]:  # fmt: skip
        """GET /v1/executions: `filters` as its query (status, job, node, since, until, q); empty values left out."""
        params = [(k, v) for k, v in filters.items() if v] + [("_start", "0"), ("_end", str(end))]
        if output_size_limit is not None:
            params.append(("output_size_limit", str(output_size_limit)))
        return self._call(list[Execution], "GET", "/v1/executions", params=params)

    def get_execution(self, job: str, execution: str) -> Reply[Execution]:
        return self._call(Execution, "GET", f"/v1/jobs/{_seg(job)}/executions/{_seg(execution)}")

    def kill_execution(self, job: str, execution: str) -> Reply[Execution]:
        return self._call(Execution, "POST", f"/v1/jobs/{_seg(job)}/executions/{_seg(execution)}/kill")

    def stream_execution(self, job: str, execution: str) -> Iterator[StreamEvent]:
        """The live output of an execution, then its end. Raises ProtocolError when the stream stops
        before the end event."""
        path = f"/v1/jobs/{_seg(job)}/executions/{_seg(execution)}/stream"
        timeout = httpx.Timeout(self._timeout_s, read=STREAM_READ_TIMEOUT_S)
        try:
            with self._http.stream("GET", path, headers={"Accept": "text/event-stream"}, timeout=timeout) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error_of(resp)
                for event, data in parse_sse(resp.iter_lines()):
                    if event == "output":
                        yield OutputReceived(_decode(data.encode(), str))
                    elif event == "end":
                        yield _decode(data.encode(), ExecutionEnded)
                        return
        except httpx.TransportError as exc:
            raise GatewayUnreachableError(self.base_url, str(exc) or type(exc).__name__) from None
        raise ProtocolError("the gateway closed the output stream before the execution ended")

    def busy(self) -> Reply[list[Execution]]:
        return self._call(list[Execution], "GET", "/v1/busy")

    # ---- cluster ------------------------------------------------------------------------------------------

    def members(self) -> Reply[list[Member]]:
        return self._call(list[Member], "GET", "/v1/members")

    def leader(self) -> Reply[Member]:
        return self._call(Member, "GET", "/v1/leader")

    def pause_state(self) -> Reply[PauseState]:
        return self._call(PauseState, "GET", "/v1/pause")

    def pause(self) -> Reply[PauseState]:
        return self._call(PauseState, "POST", "/v1/pause")

    def unpause(self) -> Reply[PauseState]:
        return self._call(PauseState, "POST", "/v1/unpause")


def _verify(ca_file: str) -> ssl.SSLContext | bool:
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise GatewayError(f"cannot read the CA file {ca_file}: {exc}") from None


def check_gateway_url(url: str) -> str:
    """The URL without a trailing slash; raises GatewayError unless it is an http(s) URL with a host."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise GatewayError(f"invalid gateway URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise GatewayError(f"invalid gateway URL {url!r}: expected http://HOST:PORT")
    return url.rstrip("/")


def _seg(value: str) -> str:
    """One path segment: a name typed by a user may hold '/', '?' or spaces."""
    return quote(value, safe="")
