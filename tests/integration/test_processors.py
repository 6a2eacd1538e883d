"""Output processors (files, fluent, log, syslog) on real files and sockets, and a real executor that runs one."""

from __future__ import annotations

import dataclasses
import logging
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cronbus.common.consul.agent import DevAgent, free_port
from cronbus.common.consul.store import Store
from cronbus.services.executor.processors import ORDER, ProcessorContext, forwards_output, process_output
from tests.helpers import Cluster, async_wait_until, wait_until
from tests.integration.scheduling import client, executions, finished, put_job

OUTPUT = "line one\nline two with a secret\n"


def context(tmp_path: Path, **fields: str) -> ProcessorContext:
    values: dict[str, Any] = {
        "job_name": "backup",
        "execution_id": "backup.20250101T000000.000000Z.1",
        "node": "e1",
        "status": "success",
        "processor_dir": str(tmp_path / "out"),
        "syslog_address": str(tmp_path / "no-syslog-here"),
    }
    return ProcessorContext(**(values | fields))


@pytest.fixture
def syslog_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket standing in for /dev/log."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "log.sock"))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_files_writes_one_file_per_execution_and_keeps_only_a_note(tmp_path: Path) -> None:
    processed = process_output({"files": {"forward": "false"}}, OUTPUT, context(tmp_path))
    path = tmp_path / "out" / "backup" / "backup.20250101T000000.000000Z.1.log"
    assert path.read_text() == OUTPUT
    assert processed.output == f"[output sent to files processor: {path}]"
    assert processed.failed == []
    assert path.stat().st_mode & 0o777 == 0o640


def test_forward_true_keeps_the_output_and_a_job_log_dir_wins(tmp_path: Path) -> None:
    processors = {"files": {"forward": "true", "log_dir": str(tmp_path / "job-dir")}}
    processed = process_output(processors, OUTPUT, context(tmp_path))
    assert processed.output == OUTPUT
    assert (tmp_path / "job-dir" / "backup" / "backup.20250101T000000.000000Z.1.log").read_text() == OUTPUT
    assert not (tmp_path / "out").exists()


def test_forward_defaults_to_false_as_in_dkron(tmp_path: Path) -> None:
    assert not forwards_output({"log": {}})
    assert not forwards_output({"log": {"forward": "yes please"}})  # not a boolean: not forwarded
    assert forwards_output({"log": {"forward": "true"}, "files": {"forward": "1"}})
    assert not forwards_output({"log": {"forward": "true"}, "files": {"forward": "false"}})
    assert forwards_output({})
    assert process_output({"log": {}}, OUTPUT, context(tmp_path)).output == "[output sent to log processor]"


def test_log_writes_the_output_with_the_execution_context(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cronbus.services.executor.processors")
    process_output({"log": {"forward": "true"}}, OUTPUT, context(tmp_path))
    (record,) = [r for r in caplog.records if "execution output" in r.getMessage()]
    message = record.getMessage()
    assert message.startswith("execution output job=backup exec=backup.20250101T000000.000000Z.1 node=e1")
    assert message.endswith("\nline one\nline two with a secret")


def test_syslog_sends_each_line_tagged_cronbus(tmp_path: Path, syslog_socket: socket.socket) -> None:
    ctx = context(tmp_path, syslog_address=str(tmp_path / "log.sock"), status="failed")
    processed = process_output({"syslog": {"forward": "false"}}, OUTPUT, ctx)
    assert processed.output == "[output sent to syslog processor]"
    messages = [syslog_socket.recv(65536).decode() for _ in range(2)]
    # <PRI>: facility user (1) * 8 + warning (4), as a failed run's lines are warnings.
    assert messages[0] == "<12>cronbus: job=backup exec=backup.20250101T000000.000000Z.1 line one\x00"
    assert messages[1].endswith("exec=backup.20250101T000000.000000Z.1 line two with a secret\x00")


def test_syslog_over_udp(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        port = receiver.getsockname()[1]
        ctx = context(tmp_path, syslog_address=f"127.0.0.1:{port}")
        process_output({"syslog": {"forward": "true"}}, "hello\n", ctx)
        assert receiver.recv(65536).decode().startswith("<14>cronbus: job=backup exec=")  # user.info


def test_a_failing_processor_is_noted_and_never_raises(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file where the folder should be")
    processors = {"files": {"forward": "true"}, "syslog": {"forward": "true"}, "elastic": {}}
    processed = process_output(processors, OUTPUT, context(tmp_path))
    assert processed.failed == ["files", "syslog"]
    lines = processed.output.splitlines()
    assert "\n".join(lines[:2]) + "\n" == OUTPUT  # forwarded output first, then the notes
    assert lines[2] == "[cronbus] unknown output processor 'elastic' ignored (known: files, fluent, log, syslog)"
    assert lines[3].startswith("[cronbus] output processor files failed: ")
    assert lines[4].startswith("[cronbus] output processor syslog failed: ")


def test_processors_run_in_alphabetical_order_and_each_gets_the_original_output(
    tmp_path: Path, syslog_socket: socket.socket
) -> None:
    assert list(ORDER) == sorted(ORDER)
    ctx = context(tmp_path, syslog_address=str(tmp_path / "log.sock"))
    processors = {"syslog": {"forward": "false"}, "log": {"forward": "false"}, "files": {"forward": "false"}}
    processed = process_output(processors, OUTPUT, ctx)
    assert [line.split()[3] for line in processed.output.splitlines()] == ["files", "log", "syslog"]
    assert ORDER == ("files", "fluent", "log", "syslog")
    assert (tmp_path / "out" / "backup" / "backup.20250101T000000.000000Z.1.log").read_text() == OUTPUT
    assert "line one" in syslog_socket.recv(65536).decode()


def test_names_cannot_escape_the_processor_dir(tmp_path: Path) -> None:
    ctx = context(tmp_path, job_name="../../etc", execution_id="../passwd")
    process_output({"files": {}}, OUTPUT, ctx)
    written = [p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*.log")]
    assert [str(p) for p in written] == ["_.._etc/_passwd.log"]


async def test_an_executor_runs_the_files_processor_and_serves_metrics(
    cluster: Cluster, fresh_consul: DevAgent, tmp_path: Path
) -> None:
    store = Store(client(fresh_consul))
    metrics_port = free_port()
    out = tmp_path / "processed"
    cluster.scheduler(name="s1")
    cluster.executor("--processor-dir", str(out), "--metrics-port", str(metrics_port), name="e1")

    async def leader() -> bool:
        return await store.get_leader() is not None

    await async_wait_until(leader, timeout_s=15, what="a leader")
    await put_job(store, name="secret", schedule="@every 1s", executor="shell",
                  executor_config={"command": "echo top-secret-output", "shell": "true"},
                  processors={"files": {"forward": "false"}})  # fmt: skip

    async def a_run() -> bool:
        return any(r.success for r in finished(await executions(store, "secret")))

    await async_wait_until(a_run, timeout_s=20, what="a successful run")
    record = next(r for r in finished(await executions(store, "secret")) if r.success)
    path = out / "secret" / f"{record.id}.log"
    assert record.output == f"[output sent to files processor: {path}]"
    assert "top-secret-output" not in record.output
    assert path.read_text() == "top-secret-output\n"

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
        return text if 'cronbus_executor_runs_finished_total{status="success"}' in text else ""

    text = wait_until(scrape, timeout_s=10, what="executor metrics")
    assert 'cronbus_executor_runs_started_total{executor="shell"}' in text
    assert "cronbus_executor_running " in text and "cronbus_executor_capacity 16" in text
    assert 'cronbus_executor_run_duration_seconds_count{status="success"}' in text
    await store.consul.close()


# ---- fluent: a real TCP receiver that decodes the Forward protocol -------------------------------------------------


class ForwardReceiver:
    """A TCP listener on loopback that reads Forward protocol events (msgpack [tag, time, record, option?]) from
    each connection, as a Fluentd/Fluent Bit forward input does, and acks those that ask when `acks` is set."""

    def __init__(self, acks: bool = True) -> None:
        self.acks = acks
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.events: list[list[Any]] = []
        self.received = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                self._read(conn)

    def _read(self, conn: socket.socket) -> None:
        data = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                return
            if not chunk:
                return
            data += chunk
            try:
                event = msgspec.msgpack.decode(data)
            except msgspec.DecodeError:
                continue  # the frame is not complete yet
            data = b""
            self.events.append(event)
            self.received.set()
            if len(event) > 3 and "chunk" in event[3] and self.acks:
                conn.sendall(msgspec.msgpack.encode({"ack": event[3]["chunk"]}))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def receiver() -> Iterator[ForwardReceiver]:
    listening = ForwardReceiver()
    yield listening
    listening.close()


def fluent_context(tmp_path: Path, port: int, **fields: Any) -> ProcessorContext:
    return dataclasses.replace(context(tmp_path), fluent_port=port, fluent_timeout_s=1.0, **fields)


def test_fluent_sends_one_forward_message_and_keeps_a_note(tmp_path: Path, receiver: ForwardReceiver) -> None:
    before = time.time()
    processed = process_output({"fluent": {}}, OUTPUT, fluent_context(tmp_path, receiver.port))
    assert processed.failed == []
    assert processed.output == f"[output sent to fluent processor: 127.0.0.1:{receiver.port} tag cronbus]"
    assert receiver.received.wait(5)
    ((tag, event_time, record),) = receiver.events  # Message mode, no option: nothing asked back
    assert tag == "cronbus"
    assert isinstance(event_time, msgspec.msgpack.Ext) and event_time.code == 0  # EventTime: seconds, nanoseconds
    seconds, nanoseconds = struct.unpack(">II", event_time.data)
    assert before - 1 <= seconds + nanoseconds / 1e9 <= time.time() + 1
    assert record == {
        "host": "e1",
        "job_name": "backup",
        "message": OUTPUT,
        "execution_id": "backup.20250101T000000.000000Z.1",
        "status": "success",
    }


def test_fluent_job_settings_win_and_an_ack_can_be_required(tmp_path: Path, receiver: ForwardReceiver) -> None:
    ctx = fluent_context(tmp_path, free_port(), fluent_host="192.0.2.1", fluent_tag="default")  # not used
    config = {"host": "127.0.0.1", "port": str(receiver.port), "tag": "jobs.backup", "ack": "true", "forward": "true"}
    processed = process_output({"fluent": config}, OUTPUT, ctx)
    assert processed.failed == [] and processed.output == OUTPUT
    ((tag, _, record, option),) = receiver.events
    assert tag == "jobs.backup" and record["message"] == OUTPUT
    assert set(option) == {"chunk"}


def test_fluent_without_the_ack_it_asked_for_fails_in_bounded_time(tmp_path: Path) -> None:
    silent = ForwardReceiver(acks=False)
    try:
        began = time.monotonic()
        processed = process_output({"fluent": {"ack": "true"}}, OUTPUT, fluent_context(tmp_path, silent.port))
        assert time.monotonic() - began < 5
        assert silent.received.is_set()  # it got the event, and never answered
    finally:
        silent.close()
    assert processed.failed == ["fluent"]
    assert processed.output.endswith("[cronbus] output processor fluent failed: timed out\n")


def test_fluent_failures_are_noted(tmp_path: Path) -> None:
    down = free_port()
    processed = process_output({"fluent": {}}, OUTPUT, fluent_context(tmp_path, down))
    assert processed.failed == ["fluent"]
    assert "[cronbus] output processor fluent failed: [Errno 111] Connection refused" in processed.output
    processed = process_output({"fluent": {"port": "forward"}}, OUTPUT, fluent_context(tmp_path, down))
    assert processed.output.endswith("[cronbus] output processor fluent failed: port: 'forward' is not a TCP port\n")


@pytest.fixture
async def store(fresh_consul: DevAgent) -> AsyncIterator[Store]:
    """A store on the test's own agent, closed whatever the test's outcome."""
    opened = Store(client(fresh_consul))
    yield opened
    await opened.consul.close()


async def test_an_executor_sends_runs_to_fluent_from_dkrons_environment_variables(
    cluster: Cluster, store: Store, receiver: ForwardReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dkron's fluent plugin is set up by FLUENTBIT_HOST/PORT/TAG; a cronbus executor reads them too."""
    monkeypatch.setenv("FLUENTBIT_HOST", "127.0.0.1")
    monkeypatch.setenv("FLUENTBIT_PORT", str(receiver.port))
    monkeypatch.setenv("FLUENTBIT_TAG", "dkron.jobs")
    cluster.scheduler(name="s1")
    cluster.executor(name="e1")

    async def leader() -> bool:
        return await store.get_leader() is not None

    await async_wait_until(leader, timeout_s=15, what="a leader")
    await put_job(store, name="shipped", schedule="@every 1s", executor="shell",
                  executor_config={"command": "echo to-fluent", "shell": "true"},
                  processors={"fluent": {"forward": "true"}})  # fmt: skip

    async def a_run() -> bool:
        return any(r.success for r in finished(await executions(store, "shipped")))

    await async_wait_until(a_run, timeout_s=20, what="a successful run")
    record = next(r for r in finished(await executions(store, "shipped")) if r.success)
    assert record.output == "to-fluent\n"  # forward true: the record keeps the output
    assert receiver.received.wait(5)
    tag, _, event = receiver.events[0]
    assert (tag, event["host"], event["job_name"], event["message"]) == ("dkron.jobs", "e1", "shipped", "to-fluent\n")
