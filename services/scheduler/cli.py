"""`cronbus scheduler`: settings from flags, environment and config file, then the service."""

from __future__ import annotations

import sys
from typing import Any

import click

from cronbus.common.cliopts import (
    bus_settings,
    consul_settings,
    heartbeat_interval_option,
    heartbeat_liveness_option,
    metrics_port_option,
    service_options,
    start_logging,
)
from cronbus.common.lifecycle import run_service
from cronbus.common.settings import SchedulerSettings
from cronbus.services.scheduler.notify_cli import notify_options, notify_settings
from cronbus.services.scheduler.service import SchedulerService


@click.command("scheduler")
@service_options
@notify_options
@click.option(
    "--bind",
    "bind_host",
    default="127.0.0.1",
    show_default=True,
    envvar="CRONBUS_BIND",
    help="Address the bus sockets bind to.",
)
@click.option(
    "--advertise",
    "advertise_host",
    default="",
    envvar="CRONBUS_ADVERTISE",
    help="Address executors and gateways connect to (default: --bind).",
)
@click.option(
    "--router-port",
    default=0,
    type=click.IntRange(0, 65535),
    envvar="CRONBUS_ROUTER_PORT",
    help="ROUTER port (acks, results, control); 0 picks a free one.",
)
@click.option(
    "--pub-port",
    default=0,
    type=click.IntRange(0, 65535),
    envvar="CRONBUS_PUB_PORT",
    help="PUB port (dispatches to executors' tag topics); 0 picks a free one.",
)
@click.option(
    "--lock-ttl",
    "lock_ttl_s",
    default=2.0,
    type=click.FloatRange(0.5, 60),
    show_default=True,
    envvar="CRONBUS_LOCK_TTL",
    help="Seconds without a heartbeat before this leader is replaced.",
)
@heartbeat_interval_option
@heartbeat_liveness_option
@click.option(
    "--history-limit",
    default=100,
    type=click.IntRange(1, 100_000),
    show_default=True,
    envvar="CRONBUS_HISTORY_LIMIT",
    help="Executions kept per job.",
)
@metrics_port_option
def scheduler_command(
    consul_addr: str,
    consul_token: str,
    node_name: str,
    log_level: str,
    log_format: str,
    curve_key: str,
    bind_host: str,
    advertise_host: str,
    router_port: int,
    pub_port: int,
    lock_ttl_s: float,
    heartbeat_interval: float,
    heartbeat_liveness: int,
    history_limit: int,
    metrics_port: int,
    **notify: Any,
) -> None:
    """Run a scheduler: leader (through a Consul lock) or hot standby."""
    start_logging(log_level, log_format, f"scheduler[{node_name}]")
    settings = SchedulerSettings(
        node_name=node_name,
        consul=consul_settings(consul_addr, consul_token),
        bus=bus_settings(curve_key, heartbeat_interval, heartbeat_liveness),
        bind_host=bind_host,
        advertise_host=advertise_host,
        router_port=router_port,
        pub_port=pub_port,
        lock_ttl_s=lock_ttl_s,
        history_limit=history_limit,
        metrics_port=metrics_port,
        notify=notify_settings(**notify),
    )
    sys.exit(run_service("scheduler", SchedulerService(settings).run))
