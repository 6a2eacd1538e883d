"""Output processors (files, fluent, log, syslog): where a finished execution's output goes besides its record."""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import socket
import struct
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec

from cronbus.common.errors import ValidationError
from cronbus.common.executor_config import parse_bool
from cronbus.common.settings import DEFAULT_SYSLOG_ADDRESS

log = logging.getLogger(__name__)

# They run in this order, alphabetical, each on the execution's original output (they are not chained, so the
# order only decides the order of the notes in the record).
ORDER: Final = ("files", "fluent", "log", "syslog")
SYSLOG_TAG: Final = "cronbus"
SYSLOG_LINE_LIMIT: Final = 8_000  # bytes per syslog message: datagram sockets refuse larger ones
_UNSAFE = re.compile(r"[^\w.-]")


@dataclass(frozen=True)
class ProcessorContext:
    """The execution whose output is processed, and the executor's processor settings."""

    job_name: str
    execution_id: str
    node: str
    status: str
    processor_dir: str
    syslog_address: str = DEFAULT_SYSLOG_ADDRESS
    fluent_host: str = "127.0.0.1"  # the fluent processor's defaults; a job's host, port and tag win
    fluent_port: int = 24224
    fluent_tag: str = "cronbus"
    fluent_timeout_s: float = 5.0  # to connect, to send, and to wait for an ack, each


@dataclass
class Processed:
    """What the record keeps: the output (or notes saying where it went) and the processors that failed."""

    output: str
    failed: list[str] = field(default_factory=list)


def forwards_output(processors: Mapping[str, Mapping[str, str]]) -> bool:
    """False when a processor keeps the output to itself (forward false, Dkron's default): then the output
    leaves this host only through the processors, neither in the record nor streamed live."""
    return all(_forward(processors[name]) for name in ORDER if name in processors)


def process_output(
    processors: Mapping[str, Mapping[str, str]],
    output: str,
    ctx: ProcessorContext,
) -> Processed:
    """Runs the job's processors on the output. Blocking (files, sockets): call it in a thread.

    Never raises for a processor's failure: it is logged, listed in `failed`, and noted in the output.
    """
    notes: list[str] = []
    errors: list[str] = []
    failed: list[str] = []
    for name in sorted(set(processors) - set(ORDER)):
        errors.append(f"[cronbus] unknown output processor {name!r} ignored (known: {', '.join(ORDER)})")
    keep = forwards_output(processors)
    for name in ORDER:
        if name not in processors:
            continue
        config = processors[name]
        try:
            where = _PROCESSORS[name](config, output, ctx)
        except (OSError, ValueError, ValidationError) as exc:
            failed.append(name)
            log.warning("output processor failed processor=%s job=%s exec=%s: %s", name, ctx.job_name,
                        ctx.execution_id, exc)  # fmt: skip
            errors.append(f"[cronbus] output processor {name} failed: {exc}")
            continue
        if not _forward(config):
            notes.append(f"[output sent to {name} processor{': ' + where if where else ''}]")
    text = output if keep else "\n".join(notes)
    if errors:
        separator = "" if not text or text.endswith("\n") else "\n"
        text = text + separator + "\n".join(errors) + "\n"
    return Processed(text, failed)


def _forward(config: Mapping[str, str]) -> bool:
    try:
        return parse_bool("forward", str(config.get("forward", "")))
    except ValidationError:
        return False  # as Dkron: anything but a boolean means "do not forward"


def _safe(name: str) -> str:
    """A path component from a job name or execution id: no separators, no leading dot."""
    return _UNSAFE.sub("_", name).lstrip(".") or "_"


def _files(config: Mapping[str, str], output: str, ctx: ProcessorContext) -> str:
    """One file per execution: <log_dir>/<job>/<execution id>.log (log_dir: the job's, else --processor-dir)."""
    base = Path(config.get("log_dir") or ctx.processor_dir).expanduser()
    folder = base / _safe(ctx.job_name)
    folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    path = folder / f"{_safe(ctx.execution_id)}.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with open(fd, "w", encoding="utf-8", errors="replace") as file:
        file.write(output)
    return str(path)


def _log(config: Mapping[str, str], output: str, ctx: ProcessorContext) -> str:
    """The output into this executor's own log, one record with the execution's context."""
    log.info(
        "execution output job=%s exec=%s node=%s status=%s bytes=%d\n%s",
        ctx.job_name,
        ctx.execution_id,
        ctx.node,
        ctx.status,
        len(output.encode()),
        output.rstrip("\n"),
    )
    return ""


class _SysLog(logging.handlers.SysLogHandler):
    """A SysLogHandler that raises what it fails on, instead of printing it to stderr and carrying on."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        error = sys.exc_info()[1]
        if error is not None:
            raise error


def syslog_target(address: str) -> str | tuple[str, int]:
    """A socket path (starts with '/') or host:port (UDP)."""
    if address.startswith("/"):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValidationError(f"syslog address {address!r}: expected a socket path or host:port")
    return host, int(port)


def _syslog(config: Mapping[str, str], output: str, ctx: ProcessorContext) -> str:
    """Each line of output as one syslog message, tagged cronbus, with the job and execution in it."""
    # No socktype: a socket path is tried as a datagram socket, then as a stream; host:port is UDP.
    handler = _SysLog(address=syslog_target(ctx.syslog_address))
    handler.ident = f"{SYSLOG_TAG}: "
    try:
        level = logging.INFO if ctx.status == "success" else logging.WARNING
        for line in output.splitlines() or [""]:
            text = f"job={ctx.job_name} exec={ctx.execution_id} {line}"
            text = text.encode()[:SYSLOG_LINE_LIMIT].decode(errors="ignore")
            handler.emit(
                logging.makeLogRecord({"msg": text, "levelno": level, "levelname": logging.getLevelName(level)})
            )
    finally:
        handler.close()
    return ""


def _fluent(config: Mapping[str, str], output: str, ctx: ProcessorContext) -> str:
    """The execution as one event to a Fluentd or Fluent Bit `forward` input (Forward protocol v1, Message mode:
    [tag, time, record]), over TCP. The record is Dkron's (host, job_name, message) plus execution_id and status.
    With `ack` true the event asks for an acknowledgement (the `chunk` option) and fails without one in time."""
    host = config.get("host") or ctx.fluent_host
    port_text = config.get("port") or str(ctx.fluent_port)
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValidationError(f"port: '{port_text}' is not a TCP port")
    port = int(port_text)
    tag = config.get("tag") or ctx.fluent_tag
    ack = parse_bool("ack", config.get("ack", ""))
    record = {"host": ctx.node, "job_name": ctx.job_name, "message": output,
              "execution_id": ctx.execution_id, "status": ctx.status}  # fmt: skip
    now_ns = time.time_ns()
    event_time = msgspec.msgpack.Ext(0, struct.pack(">II", now_ns // 10**9, now_ns % 10**9))  # EventTime
    event: list[object] = [tag, event_time, record]
    chunk = uuid.uuid4().hex
    if ack:
        event.append({"chunk": chunk})
    with socket.create_connection((host, port), timeout=ctx.fluent_timeout_s) as sock:
        sock.sendall(msgspec.msgpack.encode(event))
        if ack:
            _await_fluent_ack(sock, chunk)
    return f"{host}:{port} tag {tag}"


def _await_fluent_ack(sock: socket.socket, chunk: str) -> None:
    """Reads the input's answer, a map {"ack": chunk}; raises OSError when none comes (socket timeout)."""
    received = b""
    while True:
        data = sock.recv(4096)
        if not data:
            raise OSError("the forward input closed the connection without acknowledging the event")
        received += data
        try:
            answer = msgspec.msgpack.decode(received)
        except msgspec.DecodeError:
            continue  # not all of it yet
        if not isinstance(answer, dict) or answer.get("ack") != chunk:
            raise OSError(f"the forward input answered {answer!r}, not an ack of chunk {chunk}")
        return


_PROCESSORS: Final[dict[str, Callable[[Mapping[str, str], str, ProcessorContext], str]]] = {
    "files": _files,
    "fluent": _fluent,
    "log": _log,
    "syslog": _syslog,
}
