"""Traces of real processes sent to a real OTLP/HTTP receiver on a loopback socket: a manual run is one trace
across gateway (run_job), leader (launch) and executor (run) (docs/metrics.md, "Traces")."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers import Cluster, wait_until


@dataclass(frozen=True)
class Received:
    service: str
    name: str
    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    attributes: dict[str, str]


class Receiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP receiver (protobuf on POST /v1/traces), as a collector's otlphttp receiver answers it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Received] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/v1/traces" or self.headers["Content-Type"] != "application/x-protobuf":
            self.send_response(404)
            self.end_headers()
            return
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            for resource in request.resource_spans:
                service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        attributes = {a.key: str(a.value.string_value or a.value.int_value) for a in span.attributes}
                        self.server.spans.append(
                            Received(service, span.name, span.trace_id, span.span_id, span.parent_span_id, attributes)
                        )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _post(url: str, body: dict[str, object] | None = None) -> int:
    """The status of a POST; 0 while the gateway does not answer, or answers an error (no leader yet)."""
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except OSError:  # HTTPError included
        return 0


def test_a_manual_run_is_one_trace_across_gateway_leader_and_executor(cluster: Cluster, receiver: Receiver) -> None:
    otel = ("--otel-endpoint", receiver.url)
    cluster.scheduler(*otel, name="s1")
    executor = cluster.executor(*otel, name="e1")
    gateway, url = cluster.gateway(*otel, name="g1")
    job: dict[str, object] = {
        "name": "traced",
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": "exit 3"},
    }
    wait_until(lambda: _post(f"{url}/v1/jobs", job) == 201, timeout_s=30, what="the job created")
    wait_until(lambda: _post(f"{url}/v1/jobs/traced") == 202, timeout_s=30, what="the run accepted")

    def the_trace() -> tuple[Received, Received, Received] | None:
        """The executor's run span, its parent (the launch) and the launch's parent (the request), once all came."""
        with receiver.lock:
            by_id = {s.span_id: s for s in receiver.spans}
        for run in (s for s in by_id.values() if s.name == "cronbus.run"):
            launch = by_id.get(run.parent_id)
            run_job = by_id.get(launch.parent_id) if launch is not None else None
            if launch is not None and run_job is not None:
                return run_job, launch, run
        return None

    for process in (executor, gateway):
        process.stop()  # a stop sends what is buffered
    trace = wait_until(the_trace, timeout_s=30, what="the three spans of the run at the receiver")
    assert trace is not None
    run_job, launch, run = trace
    assert (run_job.name, launch.name) == ("cronbus.run_job", "cronbus.launch")
    assert (run_job.service, launch.service, run.service) == (
        "cronbus-gateway",
        "cronbus-scheduler",
        "cronbus-executor",
    )
    assert run_job.trace_id == launch.trace_id == run.trace_id
    assert launch.parent_id == run_job.span_id and run.parent_id == launch.span_id
    assert run.attributes["cronbus.job"] == "traced" and run.attributes["cronbus.status"] == "failed"
    assert launch.attributes["cronbus.execution_id"] == run.attributes["cronbus.execution_id"]
