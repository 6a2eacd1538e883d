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
    history_store_option,
    history_store_setting,
    metrics_port_option,
    otel_option,
    service_options,
    start_logging,
    statsd_options,
    statsd_settings,
)
from cronbus.common.errors import ValidationError
from cronbus.common.lifecycle import run_service
from cronbus.common.schedule import parse_duration
from cronbus.common.settings import SchedulerSettings
from cronbus.services.scheduler.notify_cli import notify_options, notify_settings
from cronbus.services.scheduler.service import SchedulerService


def max_age_s(value: str, *, setting: str = "--history-max-age") -> float:
    """A duration setting in seconds, checked at start (never negative)."""
    try:
        age = parse_duration(value).total_seconds()
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint=setting) from exc
    if age < 0:
        raise click.BadParameter(f"{value!r}: must not be negative", param_hint=setting)
    return age


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
@click.option(
    "--history-max-age",
    default="0",
    show_default=True,
    envvar="CRONBUS_HISTORY_MAX_AGE",
    help="Finished executions older than this (a duration: 720h, 90m) are deleted, in either history store."
    " 0: kept until --history-limit.",
)
@click.option(
    "--history-settle",
    default="10m",
    show_default=True,
    envvar="CRONBUS_HISTORY_SETTLE",
    help="With a PostgreSQL --history-store: how long after its end a record moves there from Consul (a duration).",
)
@history_store_option
@metrics_port_option
@click.option(
    "--job-metrics",
    default=0,
    type=click.IntRange(0, 1_000_000),
    show_default=True,
    envvar="CRONBUS_JOB_METRICS",
    help="Dkron's per-job counters (dkron_job_executions_*_total) for at most this many jobs; others count as"
    " job_name=_other. 0: none.",
)
@statsd_options
@otel_option
def scheduler_command(
    consul_addr: str,
    consul_token: str,
    node_name: str,
    log_level: str,
    log_format: str,
    curve_keys: str,
    curve_key: str,
    bind_host: str,
    advertise_host: str,
    router_port: int,
    pub_port: int,
    lock_ttl_s: float,
    heartbeat_interval: float,
    heartbeat_liveness: int,
    history_limit: int,
    history_max_age: str,
    history_settle: str,
    history_store: str,
    metrics_port: int,
    job_metrics: int,
    statsd_addr: str,
    dog_statsd_addr: str,
    dog_statsd_tags: tuple[str, ...],
    statsd_interval: float,
    otel_endpoint: str,
    **notify: Any,
) -> None:
    """Run a scheduler: leader (through a Consul lock) or hot standby."""
    start_logging(log_level, log_format, f"scheduler[{node_name}]")
    settings = SchedulerSettings(
        node_name=node_name,
        consul=consul_settings(consul_addr, consul_token),
        bus=bus_settings("scheduler", curve_keys, curve_key, heartbeat_interval, heartbeat_liveness),
        bind_host=bind_host,
        advertise_host=advertise_host,
        router_port=router_port,
        pub_port=pub_port,
        lock_ttl_s=lock_ttl_s,
        history_limit=history_limit,
        history_store=history_store_setting(history_store),
        history_max_age_s=max_age_s(history_max_age),
        history_settle_s=max_age_s(history_settle, setting="--history-settle"),
        metrics_port=metrics_port,
        job_metrics=job_metrics,
        statsd=statsd_settings(statsd_addr, dog_statsd_addr, dog_statsd_tags, statsd_interval),
        otel_endpoint=otel_endpoint,
        notify=notify_settings(**notify),
    )
    sys.exit(run_service("scheduler", SchedulerService(settings).run))
