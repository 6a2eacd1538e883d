"""The grpc executor: one call to a method found through the server's reflection service, as Dkron's grpc plugin
(docs/executors.md)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from cronbus.common.executor_config import GRPC_CODES, GrpcConfig, parse_grpc_config
from cronbus.services.executor.executors.base import (
    ClientExecutor,
    RunRequest,
    RunResult,
    fail,
    register,
)

if TYPE_CHECKING:
    from google.protobuf.descriptor_pool import DescriptorPool

    from cronbus.services.executor.output import OutputBuffer

logger = logging.getLogger(__name__)

REFLECTION_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
DEADLINE_MARGIN_S = 1.0  # the call's deadline is past the run's timeout, so the run ends as "timeout", not failed


class _CallError(Exception):
    """Something before the call itself failed (reflection, the request); the message says what, in words."""


def _code_text(code: int) -> str:
    return f"{GRPC_CODES[code]} ({code})" if 0 <= code < len(GRPC_CODES) else str(code)


@register
class GrpcExecutor(ClientExecutor[GrpcConfig]):
    """Calls `url`'s method (plaintext, as Dkron) with `body` as its JSON request and `headers` as metadata.

    The method's types come from the server's reflection service (grpc.reflection.v1alpha, which gRPC servers
    serve). The output is the response as JSON (one document per message for a server-streaming method; Dkron's
    output is always empty); the run succeeds when the call ends with `expectCode` (default 0, OK). Methods that
    stream requests are refused: a job has one request body.
    """

    name = "grpc"
    modules = ("grpc", "grpc_reflection.v1alpha.reflection_pb2")
    packages = "grpcio, grpcio-reflection and protobuf"

    @staticmethod
    def validate_config(config: dict[str, str]) -> None:
        parse_grpc_config(config)

    def parse(self, config: dict[str, str]) -> GrpcConfig:
        return parse_grpc_config(config)

    def timeout_s(self, config: GrpcConfig) -> float:
        return config.timeout_s

    async def call(self, config: GrpcConfig, timeout_s: float, request: RunRequest, output: OutputBuffer) -> RunResult:
        return await _call(config, timeout_s, request, output)


async def _call(config: GrpcConfig, timeout_s: float, request: RunRequest, output: OutputBuffer) -> RunResult:
    import grpc  # noqa: PLC0415 - lazy, and found by run() already
    from google.protobuf import json_format, message_factory  # noqa: PLC0415

    deadline_s = timeout_s + DEADLINE_MARGIN_S
    path = f"/{config.service}/{config.method}"
    async with grpc.aio.insecure_channel(config.target) as channel:
        try:
            pool = await _reflect(channel, config, deadline_s)
            try:
                method = pool.FindServiceByName(config.service).methods_by_name[config.method]
            except KeyError:
                raise _CallError(f"the server's service {config.service} has no method {config.method}") from None
            if method.client_streaming:
                raise _CallError(f"{path} streams requests: a job sends one request, so it cannot call it")
            request_type = message_factory.GetMessageClass(method.input_type)
            response_type = message_factory.GetMessageClass(method.output_type)
            try:
                message = json_format.Parse(config.body, request_type())
            except json_format.ParseError as exc:
                raise _CallError(f"body: not a {method.input_type.full_name} request: {exc}") from None
        except _CallError as exc:
            return fail(output, str(exc))
        logger.debug("calling job=%s exec=%s %s%s", request.job_name, request.execution_id, config.target, path)
        code, details = 0, ""
        try:
            if method.server_streaming:
                stream = channel.unary_stream(
                    path, request_serializer=_serialize, response_deserializer=response_type.FromString
                )(message, metadata=config.metadata, timeout=deadline_s)
                async for response in stream:
                    output.write((json_format.MessageToJson(response, indent=2) + "\n").encode())
            else:
                call = channel.unary_unary(
                    path, request_serializer=_serialize, response_deserializer=response_type.FromString
                )
                response = await call(message, metadata=config.metadata, timeout=deadline_s)
                output.write((json_format.MessageToJson(response, indent=2) + "\n").encode())
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code().value[0], exc.details() or ""
    if code != config.expect_code:
        said = f": {details}" if details else ""
        return fail(output, f"server returned {_code_text(code)}{said}, expected {_code_text(config.expect_code)}")
    if code != 0:  # the expected error: say what it was, as there is no response to show
        output.write(f"server returned {_code_text(code)}{': ' + details if details else ''}\n".encode())
    return RunResult("success", None)


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def _pool_of(files: dict[str, Any], service: str) -> DescriptorPool:
    """A pool of the descriptors (FileDescriptorProto by file name), each added after what it depends on."""
    from google.protobuf import descriptor_pool  # noqa: PLC0415

    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:  # dependencies first, as the pool requires
        if name in added or name not in files:
            return
        added.add(name)
        for dep in files[name].dependency:
            add(dep)
        pool.Add(files[name])

    try:
        for name in files:
            add(name)
    except (TypeError, KeyError) as exc:  # a dependency it did not send, or descriptors that contradict
        raise _CallError(f"the server's descriptors of {service} do not load: {exc}") from None
    return pool


async def _reflect(channel: Any, config: GrpcConfig, deadline_s: float) -> DescriptorPool:
    """The descriptors of `config.service` and of every file it depends on, asked of the server's reflection
    service; raises _CallError when the server does not know the service.

    Each question is a call of its own, one request and one answer on the reflection method (a bidirectional
    stream on the server's side). On one open stream, a server without reflection ends the call while the client
    is still writing, and grpcio then reports its own INTERNAL error in place of the server's UNIMPLEMENTED; a
    call that sends its request and half-closes in one batch always gets the server's status."""
    import grpc  # noqa: PLC0415
    from google.protobuf import descriptor_pb2  # noqa: PLC0415
    from google.protobuf.message import DecodeError  # noqa: PLC0415
    from grpc_reflection.v1alpha.reflection_pb2 import (  # noqa: PLC0415
        ServerReflectionRequest as Request,
    )
    from grpc_reflection.v1alpha.reflection_pb2 import (  # noqa: PLC0415
        ServerReflectionResponse as Response,
    )

    info = channel.unary_unary(
        REFLECTION_METHOD, request_serializer=_serialize, response_deserializer=Response.FromString
    )
    ends_at = time.monotonic() + deadline_s
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    async def ask(request: Request, what: str) -> None:
        try:
            answer = await info(request, metadata=config.metadata, timeout=max(0.0, ends_at - time.monotonic()))
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
            hint = " (is the server's reflection service on?)" if code == grpc.StatusCode.UNIMPLEMENTED else ""
            raise _CallError(f"reflection on {config.target} failed: {code.name}: {details}{hint}") from None
        if answer.HasField("error_response"):
            error = answer.error_response
            said = f"{_code_text(error.error_code)} {error.error_message}"
            raise _CallError(f"the server's reflection service does not know {what}: {said}")
        for serialized in answer.file_descriptor_response.file_descriptor_proto:
            try:
                file = descriptor_pb2.FileDescriptorProto.FromString(serialized)
            except DecodeError as exc:
                raise _CallError(f"the server's reflection service sent a bad descriptor for {what}: {exc}") from None
            files.setdefault(file.name, file)

    await ask(Request(file_containing_symbol=config.service), config.service)
    missing = [dep for file in files.values() for dep in file.dependency if dep not in files]
    while missing:
        name = missing.pop()
        if name not in files:
            await ask(Request(file_by_filename=name), f"the file {name}")
            missing += [dep for dep in files[name].dependency if dep not in files] if name in files else []
    return _pool_of(files, config.service)
