"""Execution notifications (email, webhooks, a pre-run webhook), delivered by a worker off the scheduling path."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import re
import smtplib
import ssl
import string
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from typing import Final, Literal

import httpx

from cronbus.common.errors import CronbusError, SettingsError
from cronbus.common.metrics import Registry
from cronbus.common.models import ZERO_TIME, Execution, Job, utc
from cronbus.common.settings import NOTIFY_WHEN, NotifySettings, redact_url

log = logging.getLogger(__name__)

Channel = Literal["email", "webhook", "pre_webhook"]

WORKERS: Final = 4  # deliveries in flight at once: one slow endpoint must not hold up the others
OUTPUT_LIMIT: Final = 65_536  # characters of output in a notification (chat webhooks reject huge bodies)
MAX_BACKOFF_S: Final = 60.0
DRAIN_S: Final = 5.0  # at shutdown, how long queued notifications may still be delivered
DEDUPE_KEPT: Final = 10_000  # (channel, execution) pairs remembered, so a resent result notifies once

# The template variables; `${name}` or `$name` (string.Template). Dkron's Go-template names map onto them.
VARIABLES: Final = (
    "job", "execution", "status", "success", "output", "node", "scheduled_at", "started_at", "finished_at",
    "attempt", "exit_code", "reason", "group", "owner", "owner_email", "reporting_node",
)  # fmt: skip
DKRON_NAMES: Final = {
    "JobName": "job",
    "Success": "success",
    "Output": "output",
    "NodeName": "node",
    "StartTime": "started_at",
    "FinishedAt": "finished_at",
    "ReportingNode": "reporting_node",
    "Report": "report",
}
DEFAULT_WEBHOOK_PAYLOAD: Final = (
    '{"job": "${job}", "execution": "${execution}", "status": "${status}", "success": ${success}, '
    '"node": "${node}", "attempt": ${attempt}, "scheduled_at": "${scheduled_at}", "started_at": "${started_at}", '
    '"finished_at": "${finished_at}", "exit_code": "${exit_code}", "reason": "${reason}", "output": "${output}"}'
)
DEFAULT_MAIL_PAYLOAD: Final = (
    "Job:          ${job}\n"
    "Execution:    ${execution} (attempt ${attempt})\n"
    "Status:       ${status} ${reason}\n"
    "Node:         ${node}\n"
    "Scheduled at: ${scheduled_at}\n"
    "Started at:   ${started_at}\n"
    "Finished at:  ${finished_at}\n"
    "Exit code:    ${exit_code}\n"
    "\n${output}\n"
)
NUMERIC_SAMPLE: Final = {"success": "true", "attempt": "1", "group": "1"}  # never empty, never quoted text
_GO_FIELD = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


class DeliveryError(CronbusError):
    """A notification could not be delivered; `retry` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class PayloadTemplate:
    """A payload template: `${job}`-style variables (Dkron's `{{.JobName}}` also accepted).

    When the template is JSON (it starts with `{` or `[`), substituted values are JSON-escaped, so
    `"${output}"` stays a valid JSON string whatever the output holds.
    """

    def __init__(self, text: str, *, setting: str) -> None:
        converted = _GO_FIELD.sub(lambda m: "${" + DKRON_NAMES.get(m[1], m[1]) + "}", text)
        self.template = string.Template(converted)
        self.is_json = converted.lstrip().startswith(("{", "["))
        if not self.template.is_valid():
            raise SettingsError(f"{setting}: invalid template (a lone '$'? write '$$' for a dollar sign)")
        unknown = sorted(set(self.template.get_identifiers()) - {*VARIABLES, "report"})
        if unknown:
            raise SettingsError(f"{setting}: unknown variable(s) {', '.join(unknown)}; known: {', '.join(VARIABLES)}")
        if self.is_json:
            # Text with every character JSON must escape; the numbers and the boolean may stand unquoted.
            sample = {v: 'a "quoted"\nline\\' for v in (*VARIABLES, "report")} | NUMERIC_SAMPLE
            try:
                json.loads(self.render(sample))
            except ValueError as exc:
                raise SettingsError(f"{setting}: the template looks like JSON but is not valid JSON: {exc}") from None

    def render(self, values: Mapping[str, str]) -> str:
        if self.is_json:
            values = {k: json.dumps(v, ensure_ascii=False)[1:-1] for k, v in values.items()}
        return self.template.substitute(values)


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One notification to one destination; `attempt` counts deliveries tried."""

    channel: Channel
    target: str  # the URL, or the recipients joined by ", "
    body: str
    job: str
    execution: str
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    subject: str = ""
    attempt: int = 1

    @property
    def shown_target(self) -> str:
        """The target as logs may show it (never a webhook URL's secret path)."""
        return self.target if self.channel == "email" else redact_url(self.target)


class Notifier:
    """Sends a notification when an execution finishes (email and webhooks) and when one starts (pre-run
    webhook). `finished` and `starting` only queue: they never block, never raise, and a full queue drops
    the notification (counted). `run` delivers, with retries and backoff; a notification that keeps failing is
    given up after `max_attempts`. Delivery is at least once per process: a resent result within one
    scheduler notifies once, a result replayed to a new leader may notify again.

    Per job, `metadata["notify_on"]` (success | failure | always | never) overrides the global `notify_on`, and
    `metadata["webhook_url"]` adds a webhook for that job alone (sent the global payload, none of the global
    headers: they may hold credentials for another endpoint).
    """

    def __init__(self, settings: NotifySettings, *, registry: Registry | None = None, node_name: str = "") -> None:
        self.settings = settings
        self.node_name = node_name
        if settings.notify_on not in NOTIFY_WHEN:
            raise SettingsError(f"--notify-on {settings.notify_on!r}: expected one of {', '.join(NOTIFY_WHEN)}")
        self.webhook_payload = PayloadTemplate(
            settings.webhook_payload or DEFAULT_WEBHOOK_PAYLOAD, setting="--webhook-payload"
        )
        self.pre_webhook_payload = PayloadTemplate(
            settings.pre_webhook_payload or DEFAULT_WEBHOOK_PAYLOAD, setting="--pre-webhook-payload"
        )
        self.mail_payload = PayloadTemplate(settings.mail_payload or DEFAULT_MAIL_PAYLOAD, setting="--mail-payload")
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(max(1, settings.queue_size))
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._timers: set[asyncio.TimerHandle] = set()
        self._http: httpx.AsyncClient | None = None
        secrets = (settings.smtp_password, *settings.webhook_urls, settings.pre_webhook_url,
                   *settings.webhook_headers.values(), *settings.pre_webhook_headers.values())  # fmt: skip
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)  # a URL before its parts
        registry = registry or Registry()
        self._outcomes = registry.counter(
            "cronbus_notifications_total", "Notifications by channel and outcome (sent, retried, failed, dropped)."
        )
        registry.gauge("cronbus_notifications_queued", "Notifications waiting for delivery.", self._queue.qsize)

    # ---- called by the dispatcher: queue only ----------------------------------------------------------

    def finished(self, job: Job, record: Execution, *, disabled: str = "") -> None:
        """Queues the notifications for a finished execution, as the job's and the global settings want;
        `disabled`: why this failure disabled the job (said in the reason and the mail's subject)."""
        try:
            self._queue_finished(job, record, disabled)
        except Exception:  # the caller is the scheduling path: a notification bug must never break it
            log.exception("notification not queued job=%s exec=%s", job.name, record.id)

    def starting(self, job: Job, record: Execution) -> None:
        """Queues the pre-run webhook of an execution that started (once per execution)."""
        try:
            url = self.settings.pre_webhook_url
            if not url or self._when(job) == "never" or self._already(("started", record.id)):
                return
            headers = self._content_type(self.pre_webhook_payload, self.settings.pre_webhook_headers)
            body = self.pre_webhook_payload.render(self._values(job, record, "running"))
            self._put(Delivery("pre_webhook", url, body, job.name, record.id, headers))
        except Exception:  # the caller is the scheduling path: a notification bug must never break it
            log.exception("pre-run notification not queued job=%s exec=%s", job.name, record.id)

    def queued(self) -> int:
        """Notifications waiting for a worker (retries waiting for their backoff not included)."""
        return self._queue.qsize()

    def counts(self) -> dict[tuple[str, str], int]:
        """(channel, outcome) -> how many, since start."""
        return {(dict(k)["channel"], dict(k)["outcome"]): int(v) for k, v in self._outcomes.values.items()}

    def _queue_finished(self, job: Job, record: Execution, disabled: str) -> None:
        job_url = (job.metadata or {}).get("webhook_url", "").strip()
        recipients = self._recipients(job) if self.settings.smtp_host else []
        if not (self.settings.webhook_urls or job_url or recipients):
            return  # nothing configured for this job: the common case costs nothing more
        if not self._wanted(job, record) or self._already(("finished", record.id)):
            return
        values = self._values(job, record, record.status)
        if disabled:
            values["reason"] = "; ".join(filter(None, [record.reason, f"the job is now {disabled}"]))
        webhooks = [(url, self.settings.webhook_headers) for url in self.settings.webhook_urls]
        if job_url.startswith(("http://", "https://")):
            webhooks.append((job_url, {}))
        elif job_url:
            log.warning("ignored metadata webhook_url job=%s: not an http(s) URL", job.name)
        if webhooks:
            body = self.webhook_payload.render(values)
            for url, headers in webhooks:
                self._put(
                    Delivery(
                        "webhook", url, body, job.name, record.id, self._content_type(self.webhook_payload, headers)
                    )
                )
        if recipients:
            verdict = "succeeded" if record.status == "success" else record.status
            subject = f"{self.settings.mail_subject_prefix}{job.name}: {verdict} on {record.node_name or '-'}"
            subject += " (job disabled)" if disabled else ""
            body = self.mail_payload.render(values)
            self._put(Delivery("email", ", ".join(recipients), body, job.name, record.id, subject=subject))

    def _when(self, job: Job) -> str:
        wanted = (job.metadata or {}).get("notify_on", "").strip().lower()
        if wanted and wanted not in NOTIFY_WHEN:
            log.warning("ignored metadata notify_on=%r job=%s: expected one of %s", wanted, job.name, NOTIFY_WHEN)
            wanted = ""
        return wanted or self.settings.notify_on

    def _wanted(self, job: Job, record: Execution) -> bool:
        when = self._when(job)
        if when == "never" or record.status == "skipped":
            return False  # skipped is concurrency forbid doing its job, not a run
        if not record.success and record.status != "killed" and record.attempt <= job.retries:
            return False  # a retry follows: one notification per run, for its last attempt
        if when == "always":
            return True
        if when == "success":
            return record.status == "success"
        return record.status != "success"

    def _recipients(self, job: Job) -> list[str]:
        given = [job.owner_email.replace(";", ","), *self.settings.mail_to]
        found: list[str] = []
        for _, address in getaddresses(given):
            if "@" in address and address not in found:
                found.append(address)
        return found

    def _values(self, job: Job, record: Execution, status: str) -> dict[str, str]:
        output = record.output[-OUTPUT_LIMIT:]
        values = {
            "job": job.name,
            "execution": record.id,
            "status": status,
            "success": "true" if record.success else "false",
            "output": output,
            "node": record.node_name,
            "scheduled_at": _when_text(record.scheduled_at),
            "started_at": _when_text(record.started_at),
            "finished_at": _when_text(record.finished_at),
            "attempt": str(record.attempt),
            "exit_code": "" if record.exit_code is None else str(record.exit_code),
            "reason": record.reason,
            "group": str(record.group),
            "owner": job.owner,
            "owner_email": job.owner_email,
            "reporting_node": self.node_name,
        }
        values["report"] = "".join(f"{k}: {values[k]}\n" for k in VARIABLES if k != "output") + f"output:\n{output}"
        return values

    @staticmethod
    def _content_type(template: PayloadTemplate, headers: Mapping[str, str]) -> dict[str, str]:
        if any(name.lower() == "content-type" for name in headers):
            return dict(headers)
        kind = "application/json" if template.is_json else "text/plain; charset=utf-8"
        return {**headers, "Content-Type": kind}

    def _already(self, key: tuple[str, str]) -> bool:
        if key in self._seen:
            return True
        self._seen[key] = None
        if len(self._seen) > DEDUPE_KEPT:
            self._seen.popitem(last=False)
        return False

    def _put(self, delivery: Delivery) -> None:
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            self._count(delivery, "dropped")
            log.warning(
                "notification dropped, queue full channel=%s job=%s exec=%s",
                delivery.channel,
                delivery.job,
                delivery.execution,
            )

    def _count(self, delivery: Delivery, outcome: str) -> None:
        self._outcomes.inc(channel=delivery.channel, outcome=outcome)

    # ---- the delivery worker -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Delivers queued notifications until `stop`; then keeps delivering for up to DRAIN_S."""
        async with httpx.AsyncClient(timeout=self.settings.timeout_s, follow_redirects=False) as http:
            self._http = http
            try:
                async with asyncio.TaskGroup() as tg:
                    workers = [tg.create_task(self._work()) for _ in range(WORKERS)]
                    await stop.wait()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._queue.join(), DRAIN_S)
                    for worker in workers:
                        worker.cancel()
            finally:
                self._http = None
                for timer in self._timers:
                    timer.cancel()
                left = self._queue.qsize() + len(self._timers)
                if left:
                    log.warning("notifications not delivered at shutdown count=%d", left)

    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self._deliver(delivery)
            except Exception:  # task boundary: one broken notification must not stop the worker
                log.exception("notification failed channel=%s job=%s", delivery.channel, delivery.job)
            finally:
                self._queue.task_done()

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            if delivery.channel == "email":
                await asyncio.to_thread(self._send_mail, delivery)
            else:
                await self._post(delivery)
        except DeliveryError as exc:
            why = self._redact(str(exc))
            if not exc.retry or delivery.attempt >= self.settings.max_attempts:
                self._count(delivery, "failed")
                log.warning(
                    "notification given up channel=%s target=%s job=%s exec=%s attempts=%d: %s",
                    delivery.channel, delivery.shown_target, delivery.job, delivery.execution, delivery.attempt, why,
                )  # fmt: skip
                return
            self._count(delivery, "retried")
            delay_s = min(self.settings.retry_backoff_s * 2 ** (delivery.attempt - 1), MAX_BACKOFF_S)
            delay_s *= random.uniform(0.9, 1.1)
            log.info(
                "notification failed, retry in %.1fs channel=%s target=%s job=%s exec=%s attempt=%d: %s",
                delay_s, delivery.channel, delivery.shown_target, delivery.job, delivery.execution, delivery.attempt,
                why,
            )  # fmt: skip
            self._retry_later(dataclasses.replace(delivery, attempt=delivery.attempt + 1), delay_s)
            return
        self._count(delivery, "sent")
        log.debug(
            "notification sent channel=%s target=%s job=%s exec=%s",
            delivery.channel,
            delivery.shown_target,
            delivery.job,
            delivery.execution,
        )

    def _retry_later(self, delivery: Delivery, delay_s: float) -> None:
        """A retry waits on a timer, not in a worker, so a dead endpoint never occupies the workers."""
        loop = asyncio.get_running_loop()

        def requeue() -> None:
            self._timers.discard(handle)
            self._put(delivery)

        handle = loop.call_later(delay_s, requeue)
        self._timers.add(handle)

    async def _post(self, delivery: Delivery) -> None:
        assert self._http is not None  # set by run(), the only caller's caller
        try:
            response = await self._http.post(delivery.target, content=delivery.body.encode(), headers=delivery.headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", retry=True) from None
        if response.is_success:
            return
        # Timeouts, throttling and server errors may pass; any other client error will not.
        retry = response.status_code in (408, 425, 429) or response.status_code >= 500
        raise DeliveryError(f"HTTP {response.status_code}", retry=retry)

    def _send_mail(self, delivery: Delivery) -> None:
        """Blocking (smtplib): runs in a thread."""
        s = self.settings
        message = EmailMessage()
        try:
            message["Subject"] = delivery.subject
            message["From"] = s.mail_from
            message["To"] = delivery.target
        except ValueError as exc:  # a header with a line break in it
            raise DeliveryError(f"invalid mail header: {exc}", retry=False) from None
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(domain="cronbus")
        message.set_content(delivery.body)
        context = ssl.create_default_context()
        try:
            if s.smtp_ssl:
                connection: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.smtp_host, s.smtp_port, timeout=s.timeout_s, context=context
                )
            else:
                connection = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout_s)
            with connection:
                if s.smtp_starttls:
                    connection.starttls(context=context)
                if s.smtp_user:
                    connection.login(s.smtp_user, s.smtp_password)
                refused = connection.send_message(message, s.mail_from, delivery.target.split(", "))
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"every recipient refused ({len(exc.recipients)})", retry=False) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"SMTP authentication failed ({exc.smtp_code})", retry=False) from None
        except smtplib.SMTPResponseException as exc:
            # 4xx is the server saying "later"; 5xx is final.
            raise DeliveryError(f"SMTP {exc.smtp_code}", retry=exc.smtp_code < 500) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", retry=True) from None
        if refused:
            log.warning(
                "mail recipients refused job=%s exec=%s count=%d", delivery.job, delivery.execution, len(refused)
            )

    def _redact(self, text: str) -> str:
        """Error texts may quote a URL or a header: secrets never reach the log."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _when_text(instant: datetime) -> str:
    if instant == ZERO_TIME:
        return ""
    return utc(instant).isoformat().replace("+00:00", "Z")
