"""The broker executors import their client only to run a job: without it a run fails, saying what to install."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from cronbus.services.executor.executors.base import RunRequest, get_executor
from cronbus.services.executor.output import OutputBuffer

CASES = [
    ("nats", "nats", {"url": "nats://127.0.0.1:4222", "subject": "jobs.x"}, "nats-py"),
    ("rabbitmq", "aio_pika", {"url": "amqp://127.0.0.1/", "queue.name": "q"}, "aio-pika"),
    ("grpc", "grpc", {"url": "127.0.0.1:9000/demo.S/M"}, "grpcio, grpcio-reflection and protobuf"),
]


@pytest.mark.parametrize(("executor", "module", "config", "package"), CASES)
async def test_a_missing_client_fails_the_run_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, executor: str, module: str, config: dict[str, str], package: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # injected fault: `import module` raises ImportError
    request = RunRequest("x-1", "x", datetime(2026, 1, 1, tzinfo=UTC), 1, executor, config)
    output = OutputBuffer()
    result = await get_executor(executor).run(request, output, asyncio.Event())
    assert result.status == "failed"
    assert result.reason.startswith(f"the {executor} executor needs the Python package {package}, which is not "
                                    "installed on this executor")  # fmt: skip
    assert result.reason.endswith("install cronbus with its executors extra: pip install 'cronbus[executors]'")
    assert output.text() == f"[cronbus] {result.reason}\n"


def test_the_executor_modules_do_not_import_their_clients() -> None:
    """So an executor without the extra starts: loading the registry, which has the broker executors, loads no
    client library."""
    clients = ("nats", "aio_pika", "aiormq", "grpc", "google.protobuf")
    code = (
        "import sys; from cronbus.services.executor.service import EXECUTORS; "
        f"print(sorted(EXECUTORS), [m for m in {clients!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "['grpc', 'http', 'nats', 'noop', 'rabbitmq', 'shell'] []"
