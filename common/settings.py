"""Typed settings of each service, resolved once at the CLI edge (flag > CRONBUS_* env > config file > default)."""

from __future__ import annotations

import socket
import sys

import msgspec

from cronbus.common.errors import SettingsError


def default_syslog_address(platform: str = sys.platform) -> str:
    """Where the system's syslog listens: /dev/log on Linux, /var/run/syslog on macOS, UDP 514 on this host
    elsewhere (Windows has no local syslog socket; docs/portability.md)."""
    if platform.startswith("linux"):
        return "/dev/log"
    if platform == "darwin":
        return "/var/run/syslog"
    return "127.0.0.1:514"


DEFAULT_SYSLOG_ADDRESS = default_syslog_address()


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
    # Bus keys per role (docs/production.md, "Bus keys per role"): the folder `cronbus keygen` wrote (its public/
    # allow-lists are read again on SIGHUP); empty: the bus is neither encrypted nor authenticated.
    curve_keys_dir: str = ""
    curve_key_file: str = ""  # this process's key pair; empty: <curve_keys_dir>/<role>.key_secret


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


class StatsdSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where a service sends its metrics over UDP besides Prometheus (Dkron's --statsd-addr, --dog-statsd-addr and
    --dog-statsd-tags). Empty addresses send nothing."""

    addr: str = ""  # host:port of a StatsD server
    dog_addr: str = ""  # host:port of a DogStatsD agent (the Datadog agent)
    dog_tags: tuple[str, ...] = ()  # key:value tags added to every DogStatsD metric
    interval_s: float = 10.0


def redact_dsn(value: str) -> str:
    """A DSN (or 'consul') without its password, for logs, errors and a settings repr."""
    scheme, sep, rest = value.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return value
    credentials, host = rest.split("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else value


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
    history_store: str = "consul"  # or a postgresql:// DSN (docs/storage.md, "History store"); may hold a password
    history_max_age_s: float = 0.0  # finished records older than this are deleted (0: kept until history_limit)
    history_settle_s: float = 600.0  # with PostgreSQL: how long after its end a record moves there from Consul
    metrics_port: int = 0  # 0: no metrics endpoint
    job_metrics: int = 0  # per-job counters for at most this many jobs (0: none)
    statsd: StatsdSettings = StatsdSettings()
    otel_endpoint: str = ""  # OTLP/HTTP receiver of traces ("" : none)
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
    region: str = "global"
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    statsd: StatsdSettings = StatsdSettings()
    otel_endpoint: str = ""
    processor_dir: str = "/var/log/cronbus"  # where the `files` output processor writes
    syslog_address: str = DEFAULT_SYSLOG_ADDRESS  # the `syslog` processor's target: a socket path or host:port (UDP)
    fluent_host: str = "127.0.0.1"  # the `fluent` processor's forward input, unless a job names its own
    fluent_port: int = 24224
    fluent_tag: str = "cronbus"


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True):
    node_name: str
    consul: ConsulSettings = ConsulSettings()
    bus: BusSettings = BusSettings()
    host: str = "127.0.0.1"
    port: int = 8080
    tokens: dict[str, str] = {}  # token -> role (read | operator | admin)
    insecure: bool = False
    tls_cert_file: str = ""  # PEM certificate (chain) the API and UI are served with over HTTPS; empty: plain HTTP
    tls_key_file: str = ""  # its private key
    request_timeout_s: float = 5.0
    statsd: StatsdSettings = StatsdSettings()
    otel_endpoint: str = ""
    history_store: str = "consul"  # where the executions API reads (docs/storage.md, "History store")
