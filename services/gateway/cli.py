"""`cronbus gateway`: settings from flags, environment and config file, then the service."""

from __future__ import annotations

import ipaddress
import sys

import click

from cronbus.common.cliopts import (
    bus_settings,
    consul_settings,
    heartbeat_interval_option,
    service_options,
    start_logging,
)
from cronbus.common.lifecycle import run_service
from cronbus.common.settings import GatewaySettings
from cronbus.services.gateway.service import GatewayService

ROLES = ("read", "operator", "admin")


def parse_tokens(values: tuple[str, ...]) -> dict[str, str]:
    """TOKEN:ROLE entries (also comma-separated, as CRONBUS_API_TOKENS gives them) into token -> role."""
    tokens: dict[str, str] = {}
    for value in (v for item in values for v in item.split(",") if v.strip()):
        token, sep, role = value.strip().rpartition(":")
        if not sep or not token or role not in ROLES:
            raise click.BadParameter(f"expected TOKEN:ROLE with ROLE one of {', '.join(ROLES)}", param_hint="--token")
        if len(token) < 16:
            raise click.BadParameter("a token must be at least 16 characters", param_hint="--token")
        tokens[token] = role
    return tokens


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("gateway")
@service_options
@click.option(
    "--bind",
    "host",
    default="127.0.0.1",
    show_default=True,
    envvar="CRONBUS_BIND",
    help="HTTP listen address. A non-loopback address needs --token (or --insecure).",
)
@click.option(
    "--port",
    default=8080,
    type=click.IntRange(0, 65535),
    show_default=True,
    envvar="CRONBUS_PORT",
    help="HTTP port.",
)
@click.option(
    "--token",
    "tokens",
    multiple=True,
    envvar="CRONBUS_API_TOKENS",
    help="API token TOKEN:ROLE (roles: read, operator, admin); repeatable or comma-separated.",
)
@click.option(
    "--insecure",
    is_flag=True,
    envvar="CRONBUS_INSECURE",
    help="Allow a non-loopback address without API tokens (anyone who can reach it is admin).",
)
@click.option(
    "--request-timeout",
    default=5.0,
    type=click.FloatRange(0.1, 300),
    show_default=True,
    envvar="CRONBUS_REQUEST_TIMEOUT",
    help="Seconds to wait for the leader on run/kill/busy.",
)
@heartbeat_interval_option
def gateway_command(
    consul_addr: str,
    consul_token: str,
    node_name: str,
    log_level: str,
    log_format: str,
    curve_key: str,
    host: str,
    port: int,
    tokens: tuple[str, ...],
    insecure: bool,
    request_timeout: float,
    heartbeat_interval: float,
) -> None:
    """Run a gateway: the Dkron v1 HTTP API and the web UI."""
    start_logging(log_level, log_format, f"gateway[{node_name}]")
    parsed = parse_tokens(tokens)
    if not parsed and not insecure and not is_loopback(host):
        raise click.UsageError(
            f"refusing to serve on {host} without API tokens: anyone reaching it could run commands on "
            "your executors. Configure --token TOKEN:ROLE, or pass --insecure to accept that."
        )
    settings = GatewaySettings(
        node_name=node_name,
        consul=consul_settings(consul_addr, consul_token),
        bus=bus_settings(curve_key, heartbeat_interval),
        host=host,
        port=port,
        tokens=parsed,
        insecure=insecure,
        request_timeout_s=request_timeout,
    )
    sys.exit(run_service("gateway", GatewayService(settings).run))
