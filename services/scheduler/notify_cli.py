"""The scheduler's notification options (`notify_options`) and their resolution into NotifySettings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from cronbus.common.errors import SettingsError
from cronbus.common.settings import NOTIFY_WHEN, NotifySettings
from cronbus.services.scheduler.notify import PayloadTemplate

F = TypeVar("F", bound=Callable[..., Any])

# The keyword arguments `notify_options` adds to a command, in order: what `notify_settings` takes.
NOTIFY_PARAMS: Final = (
    "smtp_host", "smtp_port", "smtp_user", "smtp_password", "smtp_starttls", "smtp_ssl", "mail_from", "mail_to",
    "mail_subject_prefix", "mail_payload", "webhook_url", "webhook_header", "webhook_payload", "notify_on",
    "pre_webhook_url", "pre_webhook_header", "pre_webhook_payload", "notify_queue_size", "notify_max_attempts",
    "notify_retry_backoff", "notify_timeout",
)  # fmt: skip


class _Lines(click.ParamType[str]):
    """A string; from a CRONBUS_* variable, one value per line (a header's value may contain spaces)."""

    name = "TEXT"
    envvar_list_splitter = "\n"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value)


class _Commas(click.ParamType[str]):
    """A string; from a CRONBUS_* variable, values separated by commas."""

    name = "TEXT"
    envvar_list_splitter = ","

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value).strip()


def notify_options(func: F) -> F:
    """Adds the notification options (keyword arguments named in NOTIFY_PARAMS) to a click command."""
    for option in reversed(
        [
            click.option("--smtp-host", default="", envvar="CRONBUS_SMTP_HOST",
                         help="SMTP server for execution emails (empty: no email)."),
            click.option("--smtp-port", default=25, show_default=True, type=click.IntRange(1, 65535),
                         envvar="CRONBUS_SMTP_PORT", help="SMTP port (587 with --smtp-starttls, 465 with --smtp-ssl)."),
            click.option("--smtp-user", default="", envvar="CRONBUS_SMTP_USER", help="SMTP login user."),
            click.option("--smtp-password", default="", envvar="CRONBUS_SMTP_PASSWORD", show_default=False,
                         help="SMTP password; prefer the environment variable (a flag shows in `ps`)."),
            click.option("--smtp-starttls", is_flag=True, envvar="CRONBUS_SMTP_STARTTLS",
                         help="Upgrade the SMTP connection with STARTTLS."),
            click.option("--smtp-ssl", is_flag=True, envvar="CRONBUS_SMTP_SSL", help="SMTP over TLS from the start."),
            click.option("--mail-from", default="cronbus@localhost", show_default=True, envvar="CRONBUS_MAIL_FROM",
                         help="Sender address of execution emails."),
            click.option("--mail-to", multiple=True, type=_Commas(), envvar="CRONBUS_MAIL_TO",
                         help="Address mailed about every notified execution, besides the job's owner_email "
                              "(repeatable; comma-separated in the variable)."),
            click.option("--mail-subject-prefix", default="[cronbus] ", show_default=True,
                         envvar="CRONBUS_MAIL_SUBJECT_PREFIX", help="Start of every email subject."),
            click.option("--mail-payload", default="", envvar="CRONBUS_MAIL_PAYLOAD",
                         help="Email body template (${job}, ${status}, ${output}, ...; @FILE reads a file)."),
            click.option("--webhook-url", "--webhook-endpoint", multiple=True, envvar="CRONBUS_WEBHOOK_URLS",
                         help="URL POSTed to when an execution finishes (repeatable; space-separated in the "
                              "variable)."),
            click.option("--webhook-header", "--webhook-headers", multiple=True, type=_Lines(),
                         envvar="CRONBUS_WEBHOOK_HEADERS",
                         help="'Name: value' header of the webhook requests (repeatable; one per line in the "
                              "variable)."),
            click.option("--webhook-payload", default="", envvar="CRONBUS_WEBHOOK_PAYLOAD",
                         help="Webhook body template; JSON templates get JSON-escaped values (@FILE reads a "
                              "file; default: a JSON document with every field)."),
            click.option("--notify-on", default="always", show_default=True, type=click.Choice(NOTIFY_WHEN),
                         envvar="CRONBUS_NOTIFY_ON",
                         help="Which finished executions notify; a job's metadata notify_on overrides it."),
            click.option("--pre-webhook-url", "--pre-webhook-endpoint", default="", envvar="CRONBUS_PRE_WEBHOOK_URL",
                         help="URL POSTed to when an execution starts."),
            click.option("--pre-webhook-header", "--pre-webhook-headers", multiple=True, type=_Lines(),
                         envvar="CRONBUS_PRE_WEBHOOK_HEADERS", help="'Name: value' header of the pre-run webhook."),
            click.option("--pre-webhook-payload", default="", envvar="CRONBUS_PRE_WEBHOOK_PAYLOAD",
                         help="Pre-run webhook body template (@FILE reads a file)."),
            click.option("--notify-queue-size", default=1000, show_default=True, type=click.IntRange(1, 1_000_000),
                         envvar="CRONBUS_NOTIFY_QUEUE_SIZE",
                         help="Notifications that may wait for delivery; more are dropped (and counted)."),
            click.option("--notify-max-attempts", default=5, show_default=True, type=click.IntRange(1, 100),
                         envvar="CRONBUS_NOTIFY_MAX_ATTEMPTS", help="Delivery attempts per notification."),
            click.option("--notify-retry-backoff", default=2.0, show_default=True, type=click.FloatRange(0.01, 600),
                         envvar="CRONBUS_NOTIFY_RETRY_BACKOFF",
                         help="Seconds before the first retry; doubled per attempt, at most 60."),
            click.option("--notify-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 300),
                         envvar="CRONBUS_NOTIFY_TIMEOUT", help="Seconds per SMTP session or webhook request."),
        ]
    ):  # fmt: skip
        func = option(func)
    return func


def notify_settings(
    *,
    smtp_host: str = "",
    smtp_port: int = 25,
    smtp_user: str = "",
    smtp_password: str = "",
    smtp_starttls: bool = False,
    smtp_ssl: bool = False,
    mail_from: str = "cronbus@localhost",
    mail_to: tuple[str, ...] = (),
    mail_subject_prefix: str = "[cronbus] ",
    mail_payload: str = "",
    webhook_url: tuple[str, ...] = (),
    webhook_header: tuple[str, ...] = (),
    webhook_payload: str = "",
    notify_on: str = "always",
    pre_webhook_url: str = "",
    pre_webhook_header: tuple[str, ...] = (),
    pre_webhook_payload: str = "",
    notify_queue_size: int = 1000,
    notify_max_attempts: int = 5,
    notify_retry_backoff: float = 2.0,
    notify_timeout: float = 10.0,
) -> NotifySettings:
    """Checks the notification options and builds NotifySettings; a bad value raises click.BadParameter naming
    its option (so the scheduler fails at start, not at the first notification)."""
    if smtp_ssl and smtp_starttls:
        raise click.BadParameter("choose one of --smtp-ssl and --smtp-starttls", param_hint="--smtp-ssl")
    recipients = tuple(a for a in mail_to if a)
    for address in recipients:
        if "@" not in address:
            raise click.BadParameter(f"{address!r} is not an email address", param_hint="--mail-to")
    if recipients and not smtp_host:
        raise click.BadParameter("--mail-to needs --smtp-host", param_hint="--mail-to")
    urls = tuple(u for u in webhook_url if u)
    for url, hint in [*((u, "--webhook-url") for u in urls), (pre_webhook_url, "--pre-webhook-url")]:
        if url and not url.startswith(("http://", "https://")):
            raise click.BadParameter("expected an http:// or https:// URL", param_hint=hint)
    payloads = {
        "--mail-payload": _read_template(mail_payload, "--mail-payload"),
        "--webhook-payload": _read_template(webhook_payload, "--webhook-payload"),
        "--pre-webhook-payload": _read_template(pre_webhook_payload, "--pre-webhook-payload"),
    }
    for hint, text in payloads.items():
        if text:
            try:
                PayloadTemplate(text, setting=hint)
            except SettingsError as exc:
                raise click.BadParameter(str(exc), param_hint=hint) from None
    return NotifySettings(
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        smtp_user=smtp_user,
        smtp_password=smtp_password,
        smtp_starttls=smtp_starttls,
        smtp_ssl=smtp_ssl,
        mail_from=mail_from,
        mail_to=recipients,
        mail_subject_prefix=mail_subject_prefix,
        mail_payload=payloads["--mail-payload"],
        webhook_urls=urls,
        webhook_headers=parse_headers(webhook_header, "--webhook-header"),
        webhook_payload=payloads["--webhook-payload"],
        notify_on=notify_on,
        pre_webhook_url=pre_webhook_url,
        pre_webhook_headers=parse_headers(pre_webhook_header, "--pre-webhook-header"),
        pre_webhook_payload=payloads["--pre-webhook-payload"],
        queue_size=notify_queue_size,
        max_attempts=notify_max_attempts,
        retry_backoff_s=notify_retry_backoff,
        timeout_s=notify_timeout,
    )


def parse_headers(values: tuple[str, ...], option: str) -> dict[str, str]:
    """'Name: value' entries into a dict (Dkron's --webhook-headers format)."""
    headers: dict[str, str] = {}
    for value in (v for v in values if v.strip()):
        name, sep, text = value.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            raise click.BadParameter("expected 'Name: value'", param_hint=option)  # the value may be a secret
        headers[name.strip()] = text.strip()
    return headers


def _read_template(value: str, option: str) -> str:
    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).expanduser().read_text()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value[1:]}: {exc.strerror}", param_hint=option) from None
