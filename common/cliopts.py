"""Click options every service shares, so each name and environment variable is spelled once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from cronbus.common.bus import KeyRing
from cronbus.common.errors import SettingsError
from cronbus.common.history import check_history_store
from cronbus.common.logging import setup_logging
from cronbus.common.messages import BusRole
from cronbus.common.settings import BusSettings, ConsulSettings, StatsdSettings, default_node_name, split_host_port
from cronbus.common.statsd import parse_dog_tags

F = TypeVar("F", bound=Callable[..., Any])


def service_options(func: F) -> F:
    for option in reversed(
        [
            click.option("--consul", "consul_addr", default="127.0.0.1:8500", show_default=True,
                         envvar="CRONBUS_CONSUL", help="Consul agent HTTP address (host:port)."),
            click.option("--consul-token", default="", envvar="CRONBUS_CONSUL_TOKEN",
                         help="Consul ACL token for every Consul call."),
            click.option("--node-name", default=default_node_name, envvar="CRONBUS_NODE_NAME",
                         help="Name of this process in the cluster (default: host name)."),
            click.option("--log-level", default="info", show_default=True, envvar="CRONBUS_LOG_LEVEL",
                         type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)),
            click.option("--log-format", default="text", show_default=True, envvar="CRONBUS_LOG_FORMAT",
                         type=click.Choice(["text", "json"])),
            click.option("--curve-keys", default="", envvar="CRONBUS_CURVE_KEYS", metavar="DIR",
                         help="Bus keys per role: the folder `cronbus keygen DIR` wrote. Encrypts the bus and admits "
                              "each role's keys only where that role may talk; DIR/public/ is re-read on SIGHUP."),
            click.option("--curve-key", default="", envvar="CRONBUS_CURVE_KEY", metavar="FILE",
                         help="This process's key pair (default: DIR/<role>.key_secret of --curve-keys)."),
        ]
    ):  # fmt: skip
        func = option(func)
    return func


# Options several services share, spelled once.
heartbeat_interval_option = click.option(
    "--heartbeat-interval", default=1.0, type=click.FloatRange(0.05, 60), show_default=True,
    envvar="CRONBUS_HEARTBEAT_INTERVAL", help="Bus heartbeat interval in seconds.",
)  # fmt: skip
heartbeat_liveness_option = click.option(
    "--heartbeat-liveness", default=3, type=click.IntRange(1, 100), show_default=True,
    envvar="CRONBUS_HEARTBEAT_LIVENESS", help="Missed heartbeats before a peer is declared dead.",
)  # fmt: skip
history_store_option = click.option(
    "--history-store", default="consul", show_default=True, envvar="CRONBUS_HISTORY_STORE",
    help="Where execution records are kept: consul, or a PostgreSQL DSN (postgresql://user:password@host/db).",
)  # fmt: skip
metrics_port_option = click.option(
    "--metrics-port", default=0, type=click.IntRange(0, 65535), envvar="CRONBUS_METRICS_PORT",
    help="Serve Prometheus metrics on this port (0: off).",
)  # fmt: skip


def statsd_options(func: F) -> F:
    """Dkron's StatsD flags, on every service that has metrics."""
    for option in reversed(
        [
            click.option("--statsd-addr", default="", envvar="CRONBUS_STATSD_ADDR",
                         help="Send the metrics to this StatsD server (host:port, UDP)."),
            click.option("--dog-statsd-addr", default="", envvar="CRONBUS_DOG_STATSD_ADDR",
                         help="Send the metrics, labels as tags, to this DogStatsD agent (host:port, UDP)."),
            click.option("--dog-statsd-tags", multiple=True, envvar="CRONBUS_DOG_STATSD_TAGS",
                         help="A key:value tag added to every DogStatsD metric (repeatable; space-separated in "
                              "the variable)."),
            click.option("--statsd-interval", default=10.0, type=click.FloatRange(0.05, 3600), show_default=True,
                         envvar="CRONBUS_STATSD_INTERVAL", help="Seconds between two sends of the metrics."),
        ]
    ):  # fmt: skip
        func = option(func)
    return func


otel_option = click.option(
    "--otel-endpoint", default="", envvar="CRONBUS_OTEL_ENDPOINT",
    help="Send traces (one per run, across gateway, leader and executor) to this OTLP/HTTP receiver, e.g. "
         "http://127.0.0.1:4318 (Dkron's flag; Dkron speaks OTLP/gRPC).",
)  # fmt: skip


def statsd_settings(
    statsd_addr: str, dog_statsd_addr: str, dog_statsd_tags: tuple[str, ...], statsd_interval: float
) -> StatsdSettings:
    """Checks the StatsD flags now, at the edge, naming the flag."""
    for value, flag in ((statsd_addr, "--statsd-addr"), (dog_statsd_addr, "--dog-statsd-addr")):
        if not value:
            continue
        try:
            host, port = split_host_port(value, setting=flag, default_port=8125)
        except SettingsError as exc:
            raise click.BadParameter(str(exc), param_hint=flag) from exc
        if not host or not port:
            raise click.BadParameter(f"{flag} {value!r}: expected host:port", param_hint=flag)
    try:
        tags = parse_dog_tags(dog_statsd_tags)
    except SettingsError as exc:
        raise click.BadParameter(str(exc), param_hint="--dog-statsd-tags") from exc
    return StatsdSettings(addr=statsd_addr, dog_addr=dog_statsd_addr, dog_tags=tags, interval_s=statsd_interval)


def history_store_setting(value: str) -> str:
    """Checks --history-store now, at the edge (its form only: the server is contacted on first use)."""
    try:
        return check_history_store(value)
    except SettingsError as exc:
        raise click.BadParameter(str(exc), param_hint="--history-store") from exc


def consul_settings(consul_addr: str, consul_token: str) -> ConsulSettings:
    settings = ConsulSettings(addr=consul_addr, token=consul_token)
    try:
        settings.host_port  # noqa: B018 - validates now, at the edge, naming the setting
    except SettingsError as exc:
        raise click.BadParameter(str(exc)) from exc
    return settings


def bus_settings(
    role: BusRole,
    curve_keys: str,
    curve_key: str,
    heartbeat_interval_s: float = 1.0,
    heartbeat_liveness: int = 3,
) -> BusSettings:
    """The bus settings of a process of `role`; its keys are read now, so a bad one fails at start, named."""
    if curve_key and not curve_keys:
        raise click.BadParameter(
            "--curve-key needs --curve-keys DIR: the bus has keys per role now, and one cluster key held by every "
            'process is no longer taken (docs/production.md, "Moving from one cluster key")',
            param_hint="--curve-key",
        )
    if curve_keys:
        try:
            KeyRing.load(role, curve_keys, curve_key)
        except SettingsError as exc:
            raise click.BadParameter(str(exc), param_hint="--curve-keys/--curve-key") from exc
    return BusSettings(
        heartbeat_interval_s=heartbeat_interval_s,
        heartbeat_liveness=heartbeat_liveness,
        curve_keys_dir=curve_keys,
        curve_key_file=curve_key,
    )


def start_logging(log_level: str, log_format: str, process: str) -> None:
    setup_logging(log_level, log_format, process)
