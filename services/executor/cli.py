"""`cronbus executor`: settings from flags, environment and config file, then the service."""

from __future__ import annotations

import sys

import click

from cronbus.common.cliopts import (
    bus_settings,
    consul_settings,
    heartbeat_interval_option,
    heartbeat_liveness_option,
    metrics_port_option,
    otel_option,
    service_options,
    start_logging,
    statsd_options,
    statsd_settings,
)
from cronbus.common.errors import SettingsError, ValidationError
from cronbus.common.lifecycle import run_service
from cronbus.common.settings import DEFAULT_SYSLOG_ADDRESS, ExecutorSettings, parse_tags
from cronbus.services.executor.processors import syslog_target
from cronbus.services.executor.service import ExecutorService


@click.command("executor")
@service_options
@click.option(
    "--tag",
    "tags",
    multiple=True,
    envvar="CRONBUS_TAGS",
    help="Tag key=value this executor offers to jobs (repeatable).",
)
@click.option(
    "--capacity",
    default=16,
    type=click.IntRange(1, 10_000),
    show_default=True,
    envvar="CRONBUS_CAPACITY",
    help="Maximum parallel executions.",
)
@click.option(
    "--data-dir",
    default="",
    envvar="CRONBUS_DATA_DIR",
    help="Where undelivered results and run ids are kept (default: ~/.local/state/cronbus/<node>).",
)
@click.option(
    "--drain-timeout",
    default=30.0,
    type=click.FloatRange(0),
    show_default=True,
    envvar="CRONBUS_DRAIN_TIMEOUT",
    help="Seconds running executions may finish at shutdown.",
)
@click.option(
    "--kill-grace",
    default=10.0,
    type=click.FloatRange(0),
    show_default=True,
    envvar="CRONBUS_KILL_GRACE",
    help="Seconds between SIGTERM and SIGKILL.",
)
@click.option(
    "--datacenter",
    default="dc1",
    show_default=True,
    envvar="CRONBUS_DATACENTER",
    help="Value of the built-in dc tag.",
)
@click.option(
    "--region",
    default="global",
    show_default=True,
    envvar="CRONBUS_REGION",
    help="Value of the built-in region tag (Dkron's).",
)
@heartbeat_interval_option
@heartbeat_liveness_option
@metrics_port_option
@statsd_options
@otel_option
@click.option("--metrics-bind", default="127.0.0.1", show_default=True, envvar="CRONBUS_METRICS_BIND",
              help="Address the metrics endpoint listens on.")  # fmt: skip
@click.option("--processor-dir", default="/var/log/cronbus", show_default=True, envvar="CRONBUS_PROCESSOR_DIR",
              help="Where the files output processor writes <job>/<execution id>.log (job log_dir wins).")  # fmt: skip
@click.option("--syslog-address", default=DEFAULT_SYSLOG_ADDRESS, show_default=True, envvar="CRONBUS_SYSLOG_ADDRESS",
              help="The syslog output processor's target: a socket path or host:port (UDP).")  # fmt: skip
@click.option("--fluent-host", default="127.0.0.1", show_default=True, envvar=["CRONBUS_FLUENT_HOST", "FLUENTBIT_HOST"],
              help="The fluent output processor's Fluentd/Fluent Bit forward input (a job's host wins).")  # fmt: skip
@click.option("--fluent-port", default=24224, type=click.IntRange(1, 65535), show_default=True,
              envvar=["CRONBUS_FLUENT_PORT", "FLUENTBIT_PORT"], help="Its TCP port (a job's port wins).")  # fmt: skip
@click.option("--fluent-tag", default="cronbus", show_default=True, envvar=["CRONBUS_FLUENT_TAG", "FLUENTBIT_TAG"],
              help="The tag of its events (a job's tag wins).")  # fmt: skip
def executor_command(
    consul_addr: str,
    consul_token: str,
    node_name: str,
    log_level: str,
    log_format: str,
    curve_keys: str,
    curve_key: str,
    tags: tuple[str, ...],
    capacity: int,
    data_dir: str,
    drain_timeout: float,
    kill_grace: float,
    datacenter: str,
    region: str,
    heartbeat_interval: float,
    heartbeat_liveness: int,
    metrics_port: int,
    statsd_addr: str,
    dog_statsd_addr: str,
    dog_statsd_tags: tuple[str, ...],
    statsd_interval: float,
    otel_endpoint: str,
    metrics_bind: str,
    processor_dir: str,
    syslog_address: str,
    fluent_host: str,
    fluent_port: int,
    fluent_tag: str,
) -> None:
    """Run an executor: runs the jobs dispatched to this host's tags."""
    start_logging(log_level, log_format, f"executor[{node_name}]")
    try:
        parsed = parse_tags(tags)
    except SettingsError as exc:
        raise click.BadParameter(str(exc), param_hint="--tag") from exc
    try:
        syslog_target(syslog_address)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--syslog-address") from exc
    settings = ExecutorSettings(
        node_name=node_name,
        tags=parsed,
        consul=consul_settings(consul_addr, consul_token),
        bus=bus_settings("executor", curve_keys, curve_key, heartbeat_interval, heartbeat_liveness),
        capacity=capacity,
        data_dir=data_dir,
        drain_timeout_s=drain_timeout,
        kill_grace_s=kill_grace,
        datacenter=datacenter,
        region=region,
        metrics_port=metrics_port,
        metrics_host=metrics_bind,
        statsd=statsd_settings(statsd_addr, dog_statsd_addr, dog_statsd_tags, statsd_interval),
        otel_endpoint=otel_endpoint,
        processor_dir=processor_dir,
        syslog_address=syslog_address,
        fluent_host=fluent_host,
        fluent_port=fluent_port,
        fluent_tag=fluent_tag,
    )
    sys.exit(run_service("executor", ExecutorService(settings).run))
