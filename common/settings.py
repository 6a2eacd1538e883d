"""Typed settings of each service, resolved once at the CLI edge (flag > CRONBUS_* env > config file > default)."""

from __future__ import annotations

import socket

import msgspec

from cronbus.common.errors import SettingsError


def default_node_name() -> str:
    return socket.gethostname()


def parse_tags(values: tuple[str, ...] | list[str], *, setting: str = "--tag") -> dict[str, str]:
    """'key=value' strings into a dict; a bad entry raises SettingsError naming the setting."""
    tags: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise SettingsError(f"{setting} {value!r}: expected key=value")
        tags[key.strip()] = val.strip()
    return tags


def split_host_port(value: str, *, setting: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    try:
        number = int(port)
    except ValueError:
        raise SettingsError(f"{setting} {value!r}: port must be a number") from None
    if not 0 <= number <= 65535:
        raise SettingsError(f"{setting} {value!r}: port out of range")
    return host or "127.0.0.1", number


class ConsulSettings(msgspec.Struct, frozen=True, kw_only=True):
    addr: str = "127.0.0.1:8500"
    token: str = ""

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.addr, setting="--consul", default_port=8500)


class BusSettings(msgspec.Struct, frozen=True, kw_only=True):
    heartbeat_interval_s: float = 1.0
    heartbeat_liveness: int = 3  # missed heartbeats before a peer is dead
    ack_timeout_s: float = 1.0  # resend an unacknowledged message after this long
    curve_key_file: str = ""  # the cluster's CURVE key pair; empty: the bus is not encrypted


NOTIFY_WHEN = ("success", "failure", "always", "never")


def redact_url(url: str) -> str:
    """scheme://host[:port]/… of a URL: the path and query of a webhook URL often hold its secret."""
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]  # user:password@ goes too
    return f"{scheme}{sep}{host}/…" if sep else "…"


class NotifySettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where the scheduler sends execution notifications (email, webhooks). Empty hosts/URLs send nothing.

    Holds secrets (SMTP password, webhook URLs, header values): its repr redacts them, so logging it is safe.
    """

    smtp_host: str = ""  # empty: no email
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False  # upgrade a plain connection with STARTTLS (port 587)
    smtp_ssl: bool = False  # TLS from the first byte (port 465)
    mail_from: str = "cronbus@localhost"
    mail_to: tuple[str, ...] = ()  # always mailed, besides each job's owner_email
    mail_subject_prefix: str = "[cronbus] "
    mail_payload: str = ""  # body template; empty: a plain-text report
    webhook_urls: tuple[str, ...] = ()
    webhook_headers: dict[str, str] = {}
    webhook_payload: str = ""  # template; empty: the default JSON document
    notify_on: str = "always"  # success | failure | always | never; a job's metadata["notify_on"] overrides it
    pre_webhook_url: str = ""  # called once when an execution starts
    pre_webhook_headers: dict[str, str] = {}
    pre_webhook_payload: str = ""
    queue_size: int = 1000  # notifications waiting for delivery; beyond it new ones are dropped (and counted)
    max_attempts: int = 5
    retry_backoff_s: float = 2.0  # first retry delay, doubled per attempt, capped at a minute
    timeout_s: float = 10.0  # per SMTP session or HTTP request

    def __repr__(self) -> str:
        return (
            f"NotifySettings(smtp={self.smtp_host}:{self.smtp_port} user={self.smtp_user!r} "
            f"password={'***' if self.smtp_password else ''!r} mail_to={list(self.mail_to)} "
            f"webhooks={[redact_url(u) for u in self.webhook_urls]} "
            f"pre_webhook={redact_url(self.pre_webhook_url) if self.pre_webhook_url else ''!r} "
            f"notify_on={self.notify_on})"
        )

    __str__ = __repr__


class SchedulerSettings(msgspec.Struct, frozen=True, kw_only=True):
    node_name: str
    consul: ConsulSettings = ConsulSettings()
    bus: BusSettings = BusSettings()
    bind_host: str = "127.0.0.1"
    advertise_host: str = ""  # what executors connect to; bind_host when empty
    router_port: int = 0  # 0: a free port
    pub_port: int = 0
    lock_ttl_s: float = 2.0  # health-check TTL the leader session hangs on: failover time after SIGKILL
    history_limit: int = 100
    metrics_port: int = 0  # 0: no metrics endpoint
    notify: NotifySettings = NotifySettings()


class ExecutorSettings(msgspec.Struct, frozen=True, kw_only=True):
    node_name: str
    tags: dict[str, str] = {}
    consul: ConsulSettings = ConsulSettings()
    bus: BusSettings = BusSettings()
    capacity: int = 16
    data_dir: str = ""
    drain_timeout_s: float = 30.0
    kill_grace_s: float = 10.0
    datacenter: str = "dc1"
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    processor_dir: str = "/var/log/cronbus"  # where the `files` output processor writes
    syslog_address: str = "/dev/log"  # the `syslog` processor's target: a socket path or host:port (UDP)


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True):
    node_name: str
    consul: ConsulSettings = ConsulSettings()
    bus: BusSettings = BusSettings()
    host: str = "127.0.0.1"
    port: int = 8080
    tokens: dict[str, str] = {}  # token -> role (read | operator | admin)
    insecure: bool = False
    request_timeout_s: float = 5.0
