"""The grpc executor against a real gRPC server (grpcio, reflection on) serving a service described in the test."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from grpc_reflection.v1alpha import reflection

from cronbus.common.consul.agent import free_port
from cronbus.services.executor.executors.base import RunRequest, RunResult
from cronbus.services.executor.executors.grpc import GrpcExecutor
from cronbus.services.executor.output import OutputBuffer
from tests.helpers import async_wait_until

F = descriptor_pb2.FieldDescriptorProto
MIDNIGHT = 1767225600  # 2026-01-01T00:00:00Z


def _descriptors() -> descriptor_pool.DescriptorPool:
    """demo.Jobs with a unary, a server-streaming and a client-streaming method; its reply uses a well-known type
    from another file, so the executor has to ask the server for a dependency too."""
    jobs = descriptor_pb2.FileDescriptorProto(name="demo/jobs.proto", package="demo", syntax="proto3")
    jobs.dependency.append("google/protobuf/timestamp.proto")
    request = jobs.message_type.add(name="RunRequest")
    request.field.add(name="job", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    request.field.add(name="attempt", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    reply = jobs.message_type.add(name="RunReply")
    reply.field.add(name="greeting", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    reply.field.add(name="attempt", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    reply.field.add(name="seen_headers", number=3, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    reply.field.add(name="at", number=4, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                    type_name=".google.protobuf.Timestamp")  # fmt: skip
    service = jobs.service.add(name="Jobs")
    service.method.add(name="Run", input_type=".demo.RunRequest", output_type=".demo.RunReply")
    service.method.add(name="Watch", input_type=".demo.RunRequest", output_type=".demo.RunReply",
                       server_streaming=True)  # fmt: skip
    service.method.add(name="Upload", input_type=".demo.RunRequest", output_type=".demo.RunReply",
                       client_streaming=True)  # fmt: skip
    timestamp = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(timestamp)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(timestamp)
    pool.Add(jobs)
    return pool


class JobsServer:
    """A grpcio server on a free loopback port: demo.Jobs and the reflection service."""

    def __init__(self) -> None:
        self.pool = _descriptors()
        self.request_type: Any = message_factory.GetMessageClass(self.pool.FindMessageTypeByName("demo.RunRequest"))
        self.reply_type: Any = message_factory.GetMessageClass(self.pool.FindMessageTypeByName("demo.RunReply"))
        self.hanging = threading.Event()  # a call waits in job "slow"
        self.release = threading.Event()
        self.cancelled = threading.Event()  # the client went away while it waited
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        decode, encode = self.request_type.FromString, self.reply_type.SerializeToString
        handlers = {
            "Run": grpc.unary_unary_rpc_method_handler(self.run, decode, encode),
            "Watch": grpc.unary_stream_rpc_method_handler(self.watch, decode, encode),
            "Upload": grpc.stream_unary_rpc_method_handler(self.upload, decode, encode),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Jobs", handlers),))
        reflection.enable_server_reflection(["demo.Jobs", reflection.SERVICE_NAME], self.server, pool=self.pool)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def url(self, method: str = "demo.Jobs/Run") -> str:
        return f"127.0.0.1:{self.port}/{method}"

    def run(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.job == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "no job 'missing'")
        if request.job == "slow":
            self.hanging.set()
            context.add_callback(self.cancelled.set)
            self.release.wait(timeout=30)
        headers = sorted(f"{k}={v!r}" if isinstance(v, bytes) else f"{k}={v}"
                         for k, v in context.invocation_metadata() if k.startswith("x-"))  # fmt: skip
        return self.reply_type(
            greeting=f"ran {request.job}",
            attempt=request.attempt,
            seen_headers=headers,
            at=datetime.fromtimestamp(MIDNIGHT, UTC),  # a Timestamp of the pool of this service
        )

    def watch(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        for step in range(3):
            yield self.reply_type(greeting=f"{request.job} step {step}")

    def upload(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        return self.reply_type(greeting=f"got {len(list(requests))}")


@pytest.fixture(scope="module")
def server() -> Iterator[JobsServer]:
    jobs = JobsServer()
    jobs.server.start()
    yield jobs
    jobs.release.set()
    jobs.server.stop(grace=1).wait(timeout=10)


async def run(
    config: dict[str, str], timeout_s: float | None = None, kill: asyncio.Event | None = None
) -> tuple[RunResult, str]:
    request = RunRequest(
        execution_id="call-1-1",
        job_name="call",
        scheduled_at=datetime(2026, 1, 1, tzinfo=UTC),
        attempt=1,
        executor="grpc",
        config=config,
        timeout_s=timeout_s,
    )
    output = OutputBuffer()
    result = await GrpcExecutor().run(request, output, kill or asyncio.Event())
    return result, output.text()


@pytest.mark.parametrize("method", ["demo.Jobs/Run", "demo.Jobs.Run"])  # the second as grpcurl also takes it
async def test_the_response_is_the_output_as_json(server: JobsServer, method: str) -> None:
    config = {
        "url": server.url(method),
        "body": '{"job": "backup", "attempt": 3}',
        "headers": '["X-Team: ops", "X-Trace-Bin: AAEC"]',
        "timeout": "30",
        "expectCode": "0",
    }
    result, output = await run(config)
    assert result == RunResult("success", None), output
    assert json.loads(output) == {
        "greeting": "ran backup",
        "attempt": 3,
        "seenHeaders": ["x-team=ops", "x-trace-bin=b'\\x00\\x01\\x02'"],
        "at": "2026-01-01T00:00:00Z",
    }


async def test_an_unexpected_code_fails_with_the_servers_details(server: JobsServer) -> None:
    result, output = await run({"url": server.url(), "body": '{"job": "missing"}'})
    assert result.status == "failed"
    assert result.reason == "server returned NOT_FOUND (5): no job 'missing', expected OK (0)"
    assert output == f"[cronbus] {result.reason}\n"


async def test_an_expected_error_code_is_a_success(server: JobsServer) -> None:
    result, output = await run({"url": server.url(), "body": '{"job": "missing"}', "expectCode": "5"})
    assert result == RunResult("success", None)
    assert output == "server returned NOT_FOUND (5): no job 'missing'\n"
    result, _ = await run({"url": server.url(), "body": '{"job": "backup"}', "expectCode": "5"})
    assert result.status == "failed"
    assert result.reason == "server returned OK (0), expected NOT_FOUND (5)"


async def test_a_server_streaming_method_prints_each_response(server: JobsServer) -> None:
    result, output = await run({"url": server.url("demo.Jobs/Watch"), "body": '{"job": "w"}'})
    assert result == RunResult("success", None), output
    documents = [json.loads("{" + part) for part in output.strip().removeprefix("{").split("\n{")]
    assert [d["greeting"] for d in documents] == ["w step 0", "w step 1", "w step 2"]


async def test_a_method_that_streams_requests_is_refused(server: JobsServer) -> None:
    result, _ = await run({"url": server.url("demo.Jobs/Upload")})
    assert result.status == "failed"
    assert result.reason == "/demo.Jobs/Upload streams requests: a job sends one request, so it cannot call it"


async def test_unknown_services_methods_and_request_fields_fail_clearly(server: JobsServer) -> None:
    result, _ = await run({"url": server.url("demo.Nope/Run")})
    assert result.status == "failed"
    assert result.reason.startswith("the server's reflection service does not know demo.Nope: NOT_FOUND (5)")
    result, _ = await run({"url": server.url("demo.Jobs/Jump")})
    assert result.reason == "the server's service demo.Jobs has no method Jump"
    result, _ = await run({"url": server.url(), "body": '{"name": "x"}'})
    assert result.reason.startswith("body: not a demo.RunRequest request: ")
    assert "name" in result.reason


async def test_a_server_that_is_down_fails_the_run() -> None:
    port = free_port()
    result, _ = await run({"url": f"127.0.0.1:{port}/demo.Jobs/Run", "timeout": "5"})
    assert result.status == "failed"
    assert result.reason.startswith(f"reflection on 127.0.0.1:{port} failed: UNAVAILABLE: ")


async def test_the_timeout_ends_the_call(server: JobsServer) -> None:
    server.cancelled.clear()
    result, output = await run({"url": server.url(), "body": '{"job": "slow"}', "timeout": "1"})
    assert result == RunResult("timeout", None, "timed out after 1s")
    assert output == "[cronbus] timed out after 1s\n"
    assert await asyncio.to_thread(server.cancelled.wait, 10)  # the call was cancelled at the server too


async def test_a_kill_ends_the_call(server: JobsServer) -> None:
    server.hanging.clear()
    kill = asyncio.Event()
    running = asyncio.create_task(run({"url": server.url(), "body": '{"job": "slow"}'}, kill=kill))

    async def hanging() -> bool:
        return server.hanging.is_set()

    await async_wait_until(hanging, timeout_s=10, what="the call at the server")
    kill.set()
    result, _ = await asyncio.wait_for(running, 10)
    assert result == RunResult("killed", None, "killed")


async def test_a_server_without_reflection_fails_saying_so() -> None:
    """Asked 30 times: on one open stream, about one call in five lost the server's UNIMPLEMENTED to grpcio's own
    INTERNAL (the server ended the call while the request was being written)."""
    bare = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = bare.add_insecure_port("127.0.0.1:0")
    bare.start()
    try:
        results = [(await run({"url": f"127.0.0.1:{port}/demo.Jobs/Run"}))[0] for _ in range(30)]
    finally:
        bare.stop(grace=None).wait(timeout=10)
    expected = f"reflection on 127.0.0.1:{port} failed: UNIMPLEMENTED: Method not found! "
    assert {(result.status, result.reason) for result in results} == {
        ("failed", expected + "(is the server's reflection service on?)")
    }
