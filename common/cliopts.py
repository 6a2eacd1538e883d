"""Click options every service shares, so each name and environment variable is spelled once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from cronbus.common.bus import CurveKeys
from cronbus.common.errors import SettingsError
from cronbus.common.logging import setup_logging
from cronbus.common.settings import BusSettings, ConsulSettings, default_node_name

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
            click.option("--curve-key", default="", envvar="CRONBUS_CURVE_KEY",
                         help="Cluster CURVE key pair file (`cronbus keygen`): encrypts and authenticates the bus."),
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
metrics_port_option = click.option(
    "--metrics-port", default=0, type=click.IntRange(0, 65535), envvar="CRONBUS_METRICS_PORT",
    help="Serve Prometheus metrics on this port (0: off).",
)  # fmt: skip


def consul_settings(consul_addr: str, consul_token: str) -> ConsulSettings:
    settings = ConsulSettings(addr=consul_addr, token=consul_token)
    try:
        settings.host_port  # noqa: B018 - validates now, at the edge, naming the setting
    except SettingsError as exc:
        raise click.BadParameter(str(exc)) from exc
    return settings


def bus_settings(curve_key: str, heartbeat_interval_s: float = 1.0, heartbeat_liveness: int = 3) -> BusSettings:
    if curve_key:
        try:
            CurveKeys.load(curve_key)  # fails now, at start, naming the setting
        except SettingsError as exc:
            raise click.BadParameter(str(exc), param_hint="--curve-key") from exc
    return BusSettings(
        heartbeat_interval_s=heartbeat_interval_s, heartbeat_liveness=heartbeat_liveness, curve_key_file=curve_key
    )


def start_logging(log_level: str, log_format: str, process: str) -> None:
    setup_logging(log_level, log_format, process)
