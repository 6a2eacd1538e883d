"""`executor_config` per executor, parsed into typed settings: the executors run them, the gateway checks them."""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httpx

from cronbus.common.errors import ValidationError
from cronbus.common.schedule import parse_duration

EXECUTORS: Final = ("grpc", "http", "nats", "noop", "rabbitmq", "shell")
# Dkron executors cronbus does not provide, and why (docs/executors.md): a job naming one is refused with this
# reason, which differs from the one for a name that is no executor at all.
UNAVAILABLE_EXECUTORS: Final = {
    "kafka": "no Kafka broker installs from the package registries cronbus is built and tested against, so "
    "cronbus ships no Kafka executor it could not test; publish from a shell job instead (e.g. with kcat)",
    "gcppubsub": "Google's Pub/Sub emulator installs only from Google's own package servers, so cronbus ships no "
    "Pub/Sub executor it could not test; publish from a shell job instead (e.g. gcloud pubsub topics publish)",
}
HTTP_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
DEFAULT_HTTP_TIMEOUT_S: Final = 30.0

_TRUE: Final = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE: Final = frozenset({"", "0", "f", "F", "false", "FALSE", "False"})
_MEM_LIMIT: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_MEM_UNITS: Final = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SU: Final = re.compile(r"([^:\s]+)(?::([^:\s]+))?")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: a method or a header name
_ENV_KEY: Final = re.compile(r"[^=\s]+")


def validate_executor_config(executor: str, config: dict[str, str]) -> None:
    """Raises ValidationError when `executor` is unknown or `config` is invalid for it.

    Checks syntax only, nothing host-specific (whether a user or file exists is the executor's business).
    The message names the key and what is wrong, e.g. ``command: required``. Keys an executor does not
    know are ignored, as Dkron does.
    """
    parse = _PARSERS.get(executor)
    if parse is None:
        raise ValidationError(unknown_executor(executor))
    for key, value in config.items():
        if not isinstance(value, str):
            raise ValidationError(f"{key}: must be a string, got {type(value).__name__}")
    parse(config)


def unknown_executor(executor: str) -> str:
    """Why `executor` cannot run here: a Dkron executor cronbus does not provide, or no executor at all."""
    reason = UNAVAILABLE_EXECUTORS.get(executor)
    if reason is not None:
        return f"executor '{executor}' is not available in cronbus: {reason}"
    return f"unknown executor '{executor}' (known: {', '.join(EXECUTORS)})"


def parse_bool(key: str, value: str) -> bool:
    """Parses a boolean the way Go's strconv.ParseBool does (Dkron configs use it); empty is False."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValidationError(f"{key}: '{value}' is not a boolean (use true or false)")


def parse_duration_s(key: str, value: str) -> float:
    """Parses a positive Go duration ("1m30s", "500ms") or plain seconds ("30", "2.5") into seconds.

    Sub-microsecond parts are dropped (as by parse_duration), so "500ns" is not positive.
    """
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            # A sign is refused although Go takes "+1m": the executors never accepted one.
            seconds = math.nan if text[:1] in ("+", "-") else parse_duration(text).total_seconds()
        except ValidationError:
            seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValidationError(f"{key}: '{value}' is not a positive duration (e.g. 30s, 1m30s or 30)")
    return seconds


# ---- shell ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShellConfig:
    """A shell `executor_config`, parsed and checked."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    timeout_s: float | None
    mem_limit: str  # as written, for messages
    mem_limit_bytes: int | None
    payload: bytes | None
    su_user: str | None
    su_group: str | None


def shell_argv(command: str, system: str = os.name) -> list[str]:
    """How `shell=true` runs a command: `/bin/sh -c`, or `cmd /C` on Windows ("nt"), as Dkron does."""
    return ["cmd", "/C", command] if system == "nt" else ["/bin/sh", "-c", command]


def parse_shell_config(config: dict[str, str]) -> ShellConfig:
    """Parses a shell `executor_config`; raises ValidationError naming the first bad key."""
    command = config.get("command", "").strip()
    if not command:
        raise ValidationError("command: required")
    if parse_bool("shell", config.get("shell", "")):
        argv = shell_argv(command)
    else:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise ValidationError(f"command: cannot split {command!r}: {exc}") from None
    timeout = config.get("timeout", "")
    timeout_s = parse_duration_s("timeout", timeout) if timeout.strip() else None
    mem_limit = config.get("mem_limit", "").strip()
    mem_limit_bytes = _parse_mem_limit(mem_limit) if mem_limit else None
    payload = config.get("payload", "")
    try:
        payload_bytes = base64.b64decode(payload, validate=True) if payload else None
    except binascii.Error as exc:
        raise ValidationError(f"payload: not valid base64 ({exc})") from None
    env = _parse_env(config.get("env", ""))
    su = config.get("su", "").strip()
    su_match = _SU.fullmatch(su)
    if su and su_match is None:
        raise ValidationError(f"su: '{su}' is not user or user:group")
    return ShellConfig(
        argv=argv,
        env=env,
        cwd=config.get("cwd") or None,
        timeout_s=timeout_s,
        mem_limit=mem_limit,
        mem_limit_bytes=mem_limit_bytes,
        payload=payload_bytes,
        su_user=su_match[1] if su_match else None,
        su_group=su_match[2] if su_match else None,
    )


def _parse_mem_limit(value: str) -> int:
    match = _MEM_LIMIT.fullmatch(value)
    limit = int(float(match[1]) * _MEM_UNITS[match[2].lower()]) if match else 0
    if limit <= 0:
        raise ValidationError(f"mem_limit: '{value}' is not a positive size (e.g. 512M, 1G or bytes)")
    return limit


def _parse_env(value: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, env_value = item.partition("=")
        if not sep or not _ENV_KEY.fullmatch(key.strip()):
            raise ValidationError(f"env: '{item}' is not KEY=value (the list is K=v,K2=v2)")
        env[key.strip()] = env_value
    return env


# ---- http -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpConfig:
    """An http `executor_config`, parsed and checked."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: str
    timeout_s: float
    expect_codes: frozenset[int]  # empty: any 2xx
    expect_body: re.Pattern[str] | None
    no_verify_peer: bool
    certificate_file: str | None
    certificate_key_file: str | None
    root_cas_file: str | None


def parse_http_config(config: dict[str, str]) -> HttpConfig:
    """Parses an http `executor_config`; raises ValidationError naming the first bad key."""
    method = config.get("method", "").strip()
    if not method:
        raise ValidationError("method: required")
    if not _TOKEN.fullmatch(method):
        raise ValidationError(f"method: '{method}' is not an HTTP method")
    if method.upper() not in HTTP_METHODS:
        raise ValidationError(f"method: '{method}' is not one of {', '.join(sorted(HTTP_METHODS))}")
    url = _parse_url(config.get("url", "").strip())
    headers = _parse_headers(config.get("headers", ""))
    timeout = config.get("timeout", "")
    timeout_s = parse_duration_s("timeout", timeout) if timeout.strip() else DEFAULT_HTTP_TIMEOUT_S
    expect_codes = _parse_expect_codes(config.get("expectCode", ""))
    expect_body = config.get("expectBody", "")
    try:
        pattern = re.compile(expect_body) if expect_body else None
    except re.error as exc:
        raise ValidationError(f"expectBody: invalid regular expression '{expect_body}' ({exc})") from None
    no_verify_peer = parse_bool("tlsNoVerifyPeer", config.get("tlsNoVerifyPeer", ""))
    certificate_file = config.get("tlsCertificateFile") or None
    certificate_key_file = config.get("tlsCertificateKeyFile") or None
    if (certificate_file is None) != (certificate_key_file is None):
        raise ValidationError("tlsCertificateFile and tlsCertificateKeyFile must be set together")
    return HttpConfig(
        method=method.upper(),
        url=url,
        headers=headers,
        body=config.get("body", ""),
        timeout_s=timeout_s,
        expect_codes=expect_codes,
        expect_body=pattern,
        no_verify_peer=no_verify_peer,
        certificate_file=certificate_file,
        certificate_key_file=certificate_key_file,
        root_cas_file=config.get("tlsRootCAsFile") or None,
    )


def _parse_url(url: str) -> str:
    if not url:
        raise ValidationError("url: required")
    try:
        # Both parsers: urlsplit refuses a port httpx takes ("+80", non-ASCII digits); httpx, which sends the
        # request, refuses what urlsplit takes (white space, control characters, a bad IP or IDNA host).
        urlsplit(url).port  # noqa: B018 - parsing the port is what raises on a bad one
        parsed = httpx.URL(url)
        if any(char.isspace() for char in url):  # httpx quotes it instead
            raise httpx.InvalidURL("white space")
        if parsed.port is not None and not 0 < parsed.port < 65536:  # httpx takes 0 and any number
            raise httpx.InvalidURL(f"invalid port {parsed.port}")
        host = parsed.host  # decoding an IDNA host may raise
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValidationError(f"url: '{url}' is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not host:
        raise ValidationError(f"url: '{url}' is not an http:// or https:// URL with a host")
    return url


def _parse_headers(value: str) -> list[tuple[str, str]]:
    if not value.strip():
        return []
    try:
        items = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValidationError(f'headers: not JSON ({exc}); expected ["Name: value", ...]') from None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValidationError('headers: expected a JSON array of strings ["Name: value", ...]')
    headers = []
    for item in items:
        name, sep, header_value = item.partition(":")
        # CR and LF are looked for before stripping: a value may not end in a line break either.
        if not sep or not _TOKEN.fullmatch(name.strip()) or "\r" in header_value or "\n" in header_value:
            raise ValidationError(f"headers: '{item}' is not \"Name: value\"")
        headers.append((name.strip(), header_value.strip()))
    return headers


def _parse_expect_codes(value: str) -> frozenset[int]:
    codes = set()
    for item in value.split(","):
        if not item.strip():
            continue
        try:
            code = int(item)
        except ValueError:
            code = 0
        if not 100 <= code <= 599:
            raise ValidationError(f"expectCode: '{item.strip()}' is not an HTTP status code (e.g. 200,201)")
        codes.add(code)
    return frozenset(codes)


# ---- nats -------------------------------------------------------------------------------------------------------

NATS_SCHEMES: Final = ("nats", "tls", "ws", "wss")
DEFAULT_PUBLISH_TIMEOUT_S: Final = 30.0  # nats and rabbitmq: connect, publish and confirm, unless the job says less


@dataclass(frozen=True)
class NatsConfig:
    """A nats `executor_config`, parsed and checked (Dkron's keys: url, subject, message, userName, password)."""

    servers: list[str]
    subject: str
    message: bytes
    user: str
    password: str
    debug: bool


def parse_nats_config(config: dict[str, str]) -> NatsConfig:
    """Parses a nats `executor_config`; raises ValidationError naming the first bad key."""
    url = config.get("url", "").strip()
    if not url:
        raise ValidationError("url: required (e.g. nats://127.0.0.1:4222)")
    servers = [_nats_server(item.strip()) for item in url.split(",") if item.strip()]
    subject = config.get("subject", "")
    if not subject.strip():
        raise ValidationError("subject: required")
    tokens = subject.split(".")
    if any(char.isspace() for char in subject) or not all(tokens) or any(t in ("*", ">") for t in tokens):
        raise ValidationError(f"subject: '{subject}' is not a subject to publish to (tokens joined by '.', no "
                              "white space, no wildcards)")  # fmt: skip
    return NatsConfig(
        servers=servers,
        subject=subject,
        message=config.get("message", "").encode(),
        user=config.get("userName", ""),
        password=config.get("password", ""),
        # Dkron turns debug on for any non-empty value.
        debug=bool(config.get("debug", "")) and config.get("debug", "") not in _FALSE,
    )


def _nats_server(url: str) -> str:
    """A server address as the NATS clients take it: scheme://host:port, or host:port (nats:// then)."""
    full = url if "://" in url else f"nats://{url}"
    try:
        parts = urlsplit(full)
        parts.port  # noqa: B018 - parsing the port is what raises on a bad one
    except ValueError as exc:
        raise ValidationError(f"url: '{url}' is not a NATS server address ({exc})") from None
    if parts.scheme not in NATS_SCHEMES or not parts.hostname or any(char.isspace() for char in url):
        raise ValidationError(f"url: '{url}' is not a NATS server address (e.g. nats://host:4222, tls://host:4443)")
    return full


# ---- rabbitmq ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RabbitmqConfig:
    """A rabbitmq `executor_config`, parsed and checked (Dkron's keys)."""

    url: str
    exchange: str
    queue: str  # also the routing key, as in Dkron
    create_queue: bool
    durable: bool
    auto_delete: bool
    exclusive: bool
    body: bytes
    content_type: str
    delivery_mode: int  # 0..255 as Dkron takes it; 2 is persistent
    message_id: str


def _amqp_url(url: str) -> str:
    if not url:
        raise ValidationError("url: required (e.g. amqp://user:password@127.0.0.1:5672/vhost)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what raises on a bad one
    except ValueError as exc:
        raise ValidationError(f"url: '{url}' is not an AMQP URL ({exc})") from None
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname or any(char.isspace() for char in url):
        raise ValidationError(f"url: '{url}' is not an amqp:// or amqps:// URL with a host")
    return url


def _rabbitmq_body(config: dict[str, str]) -> bytes:
    encoded = config.get("message.base64Body", "")
    if not encoded:
        return config.get("message.body", "").encode()
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValidationError(f"message.base64Body: not valid base64 ({exc})") from None


def parse_rabbitmq_config(config: dict[str, str]) -> RabbitmqConfig:
    """Parses a rabbitmq `executor_config`; raises ValidationError naming the first bad key."""
    url = _amqp_url(config.get("url", "").strip())
    queue = config.get("queue.name", "")
    if not queue.strip():
        raise ValidationError("queue.name: required (it is also the routing key)")
    if len(queue.encode()) > 255:
        raise ValidationError("queue.name: longer than 255 bytes")
    exchange = config.get("exchange", "")
    if len(exchange.encode()) > 255:
        raise ValidationError("exchange: longer than 255 bytes")
    if config.get("message.body") and config.get("message.base64Body"):
        raise ValidationError("message.body and message.base64Body: set only one of them")
    body = _rabbitmq_body(config)
    mode = config.get("message.delivery_mode", "").strip() or "0"
    if not mode.isascii() or not mode.isdigit() or int(mode) > 255:
        raise ValidationError(f"message.delivery_mode: '{mode}' is not a number from 0 to 255 (2: persistent)")
    return RabbitmqConfig(
        url=url,
        exchange=exchange,
        queue=queue,
        create_queue=parse_bool("queue.create", config.get("queue.create", "")),
        durable=parse_bool("queue.durable", config.get("queue.durable", "")),
        auto_delete=parse_bool("queue.auto_delete", config.get("queue.auto_delete", "")),
        exclusive=parse_bool("queue.exclusive", config.get("queue.exclusive", "")),
        body=body,
        content_type=config.get("message.content_type", "") or "text/plain",
        delivery_mode=int(mode),
        message_id=config.get("message.messageId", ""),
    )


# ---- grpc -------------------------------------------------------------------------------------------------------

DEFAULT_GRPC_TIMEOUT_S: Final = 30.0
# The gRPC status codes by number (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
GRPC_CODES: Final = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip
_GRPC_TARGET: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):(\d{1,5})")
_PROTO_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class GrpcConfig:
    """A grpc `executor_config`, parsed and checked (Dkron's keys: url, body, headers, timeout, expectCode)."""

    target: str  # host:port
    service: str  # package.Service
    method: str
    body: str  # a JSON object
    metadata: list[tuple[str, str | bytes]]
    timeout_s: float
    expect_code: int


def parse_grpc_config(config: dict[str, str]) -> GrpcConfig:
    """Parses a grpc `executor_config`; raises ValidationError naming the first bad key."""
    url = config.get("url", "").strip()
    if not url:
        raise ValidationError("url: required (host:port/package.Service/Method)")
    target, _, path = url.partition("/")
    target_match = _GRPC_TARGET.fullmatch(target)
    # As grpcurl (Dkron's client): Service/Method, or the method joined to the service by a dot.
    service, sep, method = path.rpartition("/") if "/" in path else path.rpartition(".")
    if (
        target_match is None
        or not 0 < int(target_match[2]) < 65536
        or not sep
        or not _PROTO_NAME.fullmatch(service)
        or not _PROTO_NAME.fullmatch(method)
        or "." in method
    ):
        raise ValidationError(f"url: '{url}' is not host:port/package.Service/Method")
    body = config.get("body", "")
    if body.strip():
        try:
            request = json.loads(body)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"body: not JSON ({exc})") from None
        if not isinstance(request, dict):
            raise ValidationError("body: expected a JSON object (the request message)")
    timeout = config.get("timeout", "")
    timeout_s = parse_duration_s("timeout", timeout) if timeout.strip() else DEFAULT_GRPC_TIMEOUT_S
    return GrpcConfig(
        target=target,
        service=service,
        method=method,
        body=body if body.strip() else "{}",
        metadata=_grpc_metadata(_parse_headers(config.get("headers", ""))),
        timeout_s=timeout_s,
        expect_code=_grpc_code(config.get("expectCode", "").strip()),
    )


def _grpc_metadata(headers: list[tuple[str, str]]) -> list[tuple[str, str | bytes]]:
    metadata: list[tuple[str, str | bytes]] = []
    for name, value in headers:
        key = name.lower()  # gRPC metadata keys are lower case, as grpcurl sends them
        if key.startswith("grpc-"):
            raise ValidationError(f"headers: '{name}' is reserved by gRPC")
        if key.endswith("-bin"):  # binary metadata: base64 in the config, as grpcurl takes it
            try:
                metadata.append((key, base64.b64decode(value, validate=True)))
            except binascii.Error:
                raise ValidationError(f"headers: '{name}' ends in -bin, so its value must be base64") from None
        elif not value.isascii() or not value.isprintable():
            raise ValidationError(f"headers: the value of '{name}' must be printable ASCII (or use a -bin key)")
        else:
            metadata.append((key, value))
    return metadata


def _grpc_code(value: str) -> int:
    if not value:
        return 0
    if value.isascii() and value.isdigit() and int(value) < len(GRPC_CODES):
        return int(value)
    if value.upper() in GRPC_CODES:
        return GRPC_CODES.index(value.upper())
    raise ValidationError(f"expectCode: '{value}' is not a gRPC status code (0 to 16, e.g. 0 for OK, 5 NOT_FOUND)")


def _accept_anything(config: dict[str, str]) -> None:
    """Dkron's noop takes any configuration; the executor reads `fail` when it runs."""


_PARSERS: Final[dict[str, Callable[[dict[str, str]], object]]] = {
    "grpc": parse_grpc_config,
    "http": parse_http_config,
    "nats": parse_nats_config,
    "noop": _accept_anything,
    "rabbitmq": parse_rabbitmq_config,
    "shell": parse_shell_config,
}
