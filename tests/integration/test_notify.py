"""Notifications from a real Notifier to a real SMTP server (aiosmtpd) and a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import click
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from click.testing import CliRunner

from cronbus.common.consul.agent import free_port
from cronbus.common.models import Execution, Job
from cronbus.common.settings import NotifySettings
from cronbus.services.scheduler.notify import Notifier
from cronbus.services.scheduler.notify_cli import NOTIFY_PARAMS, notify_options, notify_settings
from tests.helpers import async_wait_until

SLOT = datetime(2025, 3, 30, 1, 30, tzinfo=UTC)
PASSWORD = "hunter2-smtp-secret"
TOKEN = "Bearer webhook-header-secret"


# ---- a local HTTP receiver -----------------------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Answers POSTs; the first `fail_first` with `fail_status`, then 200. Keeps the ones it accepted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted: list[Request] = []
        self.hits = 0
        self.fail_first = 0
        self.fail_status = 500
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.read()
        if self.hits <= self.fail_first:
            return web.Response(status=self.fail_status, text="not now")
        self.accepted.append(Request(request.path, dict(request.headers), body))
        return web.Response(text="ok")

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


# ---- a local SMTP sink -----------------------------------------------------------------------------------------


class Sink:
    """aiosmtpd handler: keeps each message; answers 451 (try later) to the first `fail_first` ones."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.logins: list[tuple[bytes, bytes]] = []
        self.fail_first = 0
        self.calls = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd
        self.calls += 1
        if self.calls <= self.fail_first:
            return "451 4.3.0 try again later"
        self.envelopes.append(envelope)
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == PASSWORD.encode())

    def message(self, index: int) -> Message:
        content = self.envelopes[index].original_content
        assert content is not None
        return message_from_bytes(content)


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    port = free_port()
    controller = Controller(
        sink, hostname="127.0.0.1", port=port, authenticator=sink.authenticate, auth_require_tls=False
    )
    controller.start()
    yield sink, port
    controller.stop()


# ---- helpers -----------------------------------------------------------------------------------------------------


def make_job(**fields: Any) -> Job:
    fields.setdefault("owner_email", "owner@example.com")
    return Job(name="backup", id="backup", schedule="@daily", executor="shell", **fields)


def make_record(status: str = "failed", attempt: int = 1, exec_id: str = "", **fields: Any) -> Execution:
    values: dict[str, Any] = {
        "id": exec_id or f"backup.20250330T013000.000000Z.{attempt}",
        "job_name": "backup",
        "status": status,
        "success": status == "success",
        "attempt": attempt,
        "node_name": "e1",
        "scheduled_at": SLOT,
        "started_at": SLOT + timedelta(seconds=1),
        "finished_at": SLOT + timedelta(seconds=3),
        "exit_code": 0 if status == "success" else 3,
        "output": "done\n",
    }
    return Execution(**(values | fields))


async def eventually(condition: Callable[[], object], what: str, timeout_s: float = 10.0) -> None:
    async def check() -> bool:
        return bool(condition())

    await async_wait_until(check, timeout_s=timeout_s, what=what)


@asynccontextmanager
async def running(notifier: Notifier) -> AsyncIterator[Notifier]:
    stop = asyncio.Event()
    task = asyncio.create_task(notifier.run(stop))
    try:
        yield notifier
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def settings(**fields: Any) -> NotifySettings:
    fields.setdefault("retry_backoff_s", 0.05)
    fields.setdefault("timeout_s", 3.0)
    return NotifySettings(**fields)


# ---- webhooks ----------------------------------------------------------------------------------------------------


async def test_webhook_gets_a_json_document_with_escaped_values() -> None:
    async with Receiver() as receiver:
        notifier = Notifier(
            settings(webhook_urls=(f"{receiver.url}/hook",), webhook_headers={"Authorization": TOKEN}),
            node_name="s1",
        )
        output = 'said "hi"\n\tand left \\ {braces} ${job}\n'
        async with running(notifier):
            notifier.finished(make_job(), make_record("failed", output=output, reason="exit code 3"))
            await eventually(lambda: receiver.accepted, "the webhook")
        request = receiver.accepted[0]
        assert request.path == "/hook"
        assert request.headers["Authorization"] == TOKEN
        assert request.headers["Content-Type"] == "application/json"
        body = json.loads(request.body)
        assert body["job"] == "backup" and body["status"] == "failed" and body["success"] is False
        assert body["output"] == output  # quotes, newlines, backslashes and a literal ${job} survive
        assert body["execution"] == "backup.20250330T013000.000000Z.1" and body["attempt"] == 1
        assert body["node"] == "e1" and body["exit_code"] == "3" and body["reason"] == "exit code 3"
        assert body["scheduled_at"] == "2025-03-30T01:30:00Z" and body["finished_at"] == "2025-03-30T01:30:03Z"
        assert notifier.counts() == {("webhook", "sent"): 1}


async def test_the_failure_that_disables_a_job_says_so_in_its_notification() -> None:
    async with Receiver() as receiver:
        notifier = Notifier(settings(webhook_urls=(receiver.url,)))
        why = "disabled after 3 failed runs in a row (the last: backup.x, failed)"
        async with running(notifier):
            notifier.finished(make_job(), make_record("failed", reason="exit code 3"), disabled=why)
            await eventually(lambda: receiver.accepted, "the webhook")
        body = json.loads(receiver.accepted[0].body)
        assert body["reason"] == f"exit code 3; the job is now {why}"


async def test_a_failing_receiver_is_retried_with_backoff_until_it_accepts() -> None:
    async with Receiver() as receiver:
        receiver.fail_first = 2
        notifier = Notifier(settings(webhook_urls=(receiver.url,), retry_backoff_s=0.2))
        async with running(notifier):
            began = time.monotonic()
            notifier.finished(make_job(), make_record("failed"))
            await eventually(lambda: receiver.accepted, "the third attempt")
            took = time.monotonic() - began
        assert receiver.hits == 3 and len(receiver.accepted) == 1
        assert took >= 0.9 * (0.2 + 0.4)  # two backoffs: 0.2 s, then doubled (with ±10 % jitter)
        assert notifier.counts() == {("webhook", "retried"): 2, ("webhook", "sent"): 1}


async def test_client_errors_are_not_retried_and_retries_end_after_max_attempts() -> None:
    async with Receiver() as bad_request, Receiver() as down:
        bad_request.fail_first, bad_request.fail_status = 100, 400
        down.fail_first, down.fail_status = 100, 503
        notifier = Notifier(settings(webhook_urls=(bad_request.url, down.url), max_attempts=3))
        async with running(notifier):
            notifier.finished(make_job(), make_record("failed"))
            await eventually(lambda: notifier.counts().get(("webhook", "failed")) == 2, "give-ups")
        assert bad_request.hits == 1  # a 400 will not get better
        assert down.hits == 3
        assert notifier.counts() == {("webhook", "failed"): 2, ("webhook", "retried"): 2}


async def test_a_job_webhook_url_gets_the_payload_without_the_global_headers() -> None:
    async with Receiver() as global_hook, Receiver() as job_hook:
        notifier = Notifier(settings(webhook_urls=(global_hook.url,), webhook_headers={"Authorization": TOKEN}))
        job = make_job(metadata={"webhook_url": f"{job_hook.url}/team"})
        async with running(notifier):
            notifier.finished(job, make_record("failed"))
            await eventually(lambda: global_hook.accepted and job_hook.accepted, "both webhooks")
        assert "Authorization" not in job_hook.accepted[0].headers  # the global credentials stay with their URL
        assert global_hook.accepted[0].headers["Authorization"] == TOKEN
        assert json.loads(job_hook.accepted[0].body)["job"] == "backup"


async def test_pre_run_webhook_is_sent_once_per_execution_with_a_dkron_style_template() -> None:
    async with Receiver() as receiver:
        notifier = Notifier(
            settings(
                pre_webhook_url=receiver.url,
                pre_webhook_payload='{"text": "{{.JobName}} started on ${node}", "status": "${status}"}',
            )
        )
        record = make_record("running", finished_at=datetime(1, 1, 1, tzinfo=UTC))
        async with running(notifier):
            notifier.starting(make_job(), record)
            notifier.starting(make_job(), record)  # ExecutionStarted resent before its ack
            notifier.starting(make_job(), make_record("running", attempt=2))
            await eventually(lambda: len(receiver.accepted) == 2, "two pre-run webhooks")
        bodies = [json.loads(r.body) for r in receiver.accepted]
        assert bodies[0] == {"text": "backup started on e1", "status": "running"}
        assert notifier.counts() == {("pre_webhook", "sent"): 2}


# ---- when: global notify_on, a job's metadata, retries --------------------------------------------------------


def test_notify_on_the_global_setting_and_the_job_metadata_override() -> None:
    notifier = Notifier(settings(webhook_urls=("http://127.0.0.1:9/",), notify_on="failure"))
    notifier.finished(make_job(), make_record("success", exec_id="ok"))
    notifier.finished(make_job(), make_record("skipped", exec_id="skipped"))
    assert notifier.queued() == 0
    notifier.finished(make_job(), make_record("timeout", exec_id="timeout"))
    notifier.finished(make_job(), make_record("missed", exec_id="missed"))
    assert notifier.queued() == 2
    notifier.finished(make_job(metadata={"notify_on": "never"}), make_record("failed", exec_id="never"))
    notifier.finished(make_job(metadata={"notify_on": "success"}), make_record("failed", exec_id="s-failed"))
    assert notifier.queued() == 2
    notifier.finished(make_job(metadata={"notify_on": "success"}), make_record("success", exec_id="s-ok"))
    notifier.finished(make_job(metadata={"notify_on": "always"}), make_record("skipped", exec_id="a-skip"))
    assert notifier.queued() == 3  # a skipped slot (concurrency forbid) never notifies
    notifier.finished(make_job(metadata={"notify_on": "bogus"}), make_record("failed", exec_id="bogus"))
    assert notifier.queued() == 4  # a bad metadata value falls back to the global setting
    notifier.finished(make_job(), make_record("failed", exec_id="bogus"))
    assert notifier.queued() == 4  # the same execution notifies once


def test_a_failed_attempt_that_will_be_retried_does_not_notify() -> None:
    notifier = Notifier(settings(webhook_urls=("http://127.0.0.1:9/",), notify_on="always"))
    job = make_job(retries=2)
    notifier.finished(job, make_record("failed", attempt=1))
    notifier.finished(job, make_record("timeout", attempt=2))
    assert notifier.queued() == 0
    notifier.finished(job, make_record("failed", attempt=3))  # the last attempt
    notifier.finished(job, make_record("killed", attempt=1, exec_id="killed"))  # a kill is not retried
    assert notifier.queued() == 2


def test_queueing_never_blocks_and_a_full_queue_drops() -> None:
    notifier = Notifier(settings(webhook_urls=("http://127.0.0.1:9/",), queue_size=2))
    began = time.monotonic()
    for i in range(50):
        notifier.finished(make_job(), make_record("failed", exec_id=f"e{i}"))
    assert time.monotonic() - began < 0.5
    assert notifier.queued() == 2
    assert notifier.counts() == {("webhook", "dropped"): 48}


async def test_an_unreachable_receiver_does_not_hold_up_other_notifications() -> None:
    async with Receiver() as receiver:
        dead = f"http://127.0.0.1:{free_port()}/"
        notifier = Notifier(settings(webhook_urls=(dead,), retry_backoff_s=5.0, max_attempts=10))
        job = make_job(metadata={"webhook_url": receiver.url})
        async with running(notifier):
            for i in range(10):
                notifier.finished(job, make_record("failed", exec_id=f"e{i}"))
            # Retries wait on timers, not in workers: the live receiver gets every one at once.
            await eventually(lambda: len(receiver.accepted) == 10, "ten webhooks", timeout_s=4)


# ---- email ------------------------------------------------------------------------------------------------------


async def test_email_goes_to_the_owner_and_the_configured_addresses(
    smtp: tuple[Sink, int], caplog: pytest.LogCaptureFixture
) -> None:
    sink, port = smtp
    caplog.set_level(logging.DEBUG)
    notifier = Notifier(
        settings(
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_user="cronbus",
            smtp_password=PASSWORD,
            mail_from="cron@example.com",
            mail_to=("ops@example.com",),
        )
    )
    job = make_job(owner_email="Owner <owner@example.com>; second@example.com")
    async with running(notifier):
        notifier.finished(job, make_record("timeout", output="partial output\n", reason="timed out after 5s"))
        await eventually(lambda: bool(sink.envelopes), "the email")
    envelope = sink.envelopes[0]
    assert sorted(envelope.rcpt_tos) == ["ops@example.com", "owner@example.com", "second@example.com"]
    assert envelope.mail_from == "cron@example.com"
    assert sink.logins == [(b"cronbus", PASSWORD.encode())]
    message = sink.message(0)
    assert message["Subject"] == "[cronbus] backup: timeout on e1"
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert b"partial output" in body and b"timed out after 5s" in body
    assert PASSWORD not in caplog.text
    assert notifier.counts() == {("email", "sent"): 1}


async def test_a_temporary_smtp_refusal_is_retried(smtp: tuple[Sink, int]) -> None:
    sink, port = smtp
    sink.fail_first = 1
    notifier = Notifier(settings(smtp_host="127.0.0.1", smtp_port=port))
    async with running(notifier):
        notifier.finished(make_job(), make_record("failed"))
        await eventually(lambda: bool(sink.envelopes), "the email after a 451")
    assert sink.calls == 2
    assert notifier.counts() == {("email", "retried"): 1, ("email", "sent"): 1}


def test_no_email_without_an_smtp_host_or_a_recipient() -> None:
    no_host = Notifier(settings(mail_to=()))
    no_host.finished(make_job(owner_email="owner@example.com"), make_record("failed"))
    no_recipient = Notifier(settings(smtp_host="127.0.0.1"))
    no_recipient.finished(make_job(owner_email=""), make_record("failed"))
    assert no_host.queued() == 0 and no_recipient.queued() == 0


# ---- secrets ------------------------------------------------------------------------------------------------------


async def test_secrets_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_path = "services/T000/B000/XXXXsecretXXXX"
    url = f"http://127.0.0.1:{free_port()}/{secret_path}"
    configured = settings(webhook_urls=(url,), webhook_headers={"Authorization": TOKEN}, max_attempts=2,
                          smtp_password=PASSWORD)  # fmt: skip
    notifier = Notifier(configured)
    async with running(notifier):
        notifier.finished(make_job(), make_record("failed"))
        await eventually(lambda: ("webhook", "failed") in notifier.counts(), "the give-up")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("cronbus"))
    assert "notification given up" in logged and "127.0.0.1" in logged
    for secret in (secret_path, TOKEN, PASSWORD):
        assert secret not in logged
        assert secret not in repr(configured)


# ---- the scheduler's options ---------------------------------------------------------------------------------------


def _command(captured: dict[str, Any]) -> click.Command:
    @click.command()
    @notify_options
    def command(**params: Any) -> None:
        captured.update(params)
        captured["settings"] = notify_settings(**params)

    return command


def test_notify_options_build_settings(tmp_path: Path) -> None:
    captured: dict[str, Any] = {}
    template = tmp_path / "slack.json"
    template.write_text('{"text": "${job} ${status}"}')
    result = CliRunner().invoke(
        _command(captured),
        ["--smtp-host", "mail.example.com", "--smtp-port", "587", "--smtp-starttls", "--smtp-user", "cronbus",
         "--mail-to", "ops@example.com", "--webhook-url", "https://hooks.example.com/a",
         "--webhook-url", "https://hooks.example.com/b", "--webhook-payload", f"@{template}",
         "--notify-on", "failure", "--pre-webhook-url", "https://hooks.example.com/pre"],
        env={"CRONBUS_SMTP_PASSWORD": PASSWORD,
             "CRONBUS_WEBHOOK_HEADERS": "Authorization: Bearer abc def\nX-Team: platform"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert set(captured) - {"settings"} == set(NOTIFY_PARAMS)
    built: NotifySettings = captured["settings"]
    assert built.smtp_host == "mail.example.com" and built.smtp_port == 587 and built.smtp_starttls
    assert built.smtp_password == PASSWORD
    assert built.mail_to == ("ops@example.com",)
    assert built.webhook_urls == ("https://hooks.example.com/a", "https://hooks.example.com/b")
    assert built.webhook_headers == {"Authorization": "Bearer abc def", "X-Team": "platform"}
    assert built.webhook_payload == '{"text": "${job} ${status}"}'
    assert built.notify_on == "failure" and built.pre_webhook_url == "https://hooks.example.com/pre"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--webhook-payload", '{"text": "${nope}"}'], "unknown variable(s) nope"),
        (["--webhook-payload", '{"text": ${job}'], "not valid JSON"),
        (["--webhook-url", "ftp://example.com/"], "http:// or https://"),
        (["--webhook-header", "no colon here"], "Name: value"),
        (["--mail-to", "ops@example.com"], "--mail-to needs --smtp-host"),
        (["--smtp-host", "m", "--smtp-ssl", "--smtp-starttls"], "choose one of"),
        (["--notify-on", "sometimes"], "sometimes"),
    ],
)
def test_bad_notify_options_fail_at_start_naming_the_option(args: list[str], complaint: str) -> None:
    result = CliRunner().invoke(_command({}), args)
    assert result.exit_code == 2
    assert complaint in result.output
