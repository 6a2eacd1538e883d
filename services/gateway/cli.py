"""`cronbus gateway`: settings from flags, environment and config file, then the service."""

from __future__ import annotations

import ipaddress
import ssl
import sys

import click

from cronbus.common.cliopts import (
    bus_settings,
    consul_settings,
    heartbeat_interval_option,
    history_store_option,
    history_store_setting,
    otel_option,
    service_options,
    start_logging,
    statsd_options,
    statsd_settings,
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


def check_tls(cert: str, key: str) -> None:
    """Both or neither; loaded now, so a wrong file, or a key that is not the certificate's, fails at start."""
    if bool(cert) != bool(key):
        given, missing = ("--tls-cert", "--tls-key") if cert else ("--tls-key", "--tls-cert")
        raise click.BadParameter(f"{given} needs {missing} too", param_hint=missing)
    if not cert:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise click.BadParameter(f"cannot load {cert} with {key}: {exc}", param_hint="--tls-cert/--tls-key") from exc


def refuse_unsafe_exposure(host: str, *, tokens: bool, tls: bool, insecure: bool) -> None:
    """Off loopback, a gateway needs API tokens, and TLS to carry them, unless told --insecure."""
    if insecure or is_loopback(host):
        return
    if not tokens:
        raise click.UsageError(
            f"refusing to serve on {host} without API tokens: anyone reaching it could run commands on "
            "your executors. Configure --token TOKEN:ROLE, or pass --insecure to accept that."
        )
    if not tls:
        raise click.UsageError(
            f"refusing to serve API tokens over plain HTTP on {host}: they would travel in clear, for anyone on the "
            "path to read and use. Give --tls-cert FILE and --tls-key FILE (or terminate TLS in front of a gateway "
            "bound to 127.0.0.1), or pass --insecure to accept that."
        )


@click.command("gateway")
@service_options
@click.option(
    "--bind",
    "host",
    default="127.0.0.1",
    show_default=True,
    envvar="CRONBUS_BIND",
    help="HTTP listen address. A non-loopback address needs --token and --tls-cert/--tls-key (or --insecure).",
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
    "--tls-cert",
    default="",
    envvar="CRONBUS_TLS_CERT",
    metavar="FILE",
    help="Serve the API and UI over HTTPS with this PEM certificate (its chain after it).",
)
@click.option(
    "--tls-key",
    default="",
    envvar="CRONBUS_TLS_KEY",
    metavar="FILE",
    help="The PEM private key of --tls-cert (unencrypted; readable by the gateway alone).",
)
@click.option(
    "--insecure",
    is_flag=True,
    envvar="CRONBUS_INSECURE",
    help="Allow a non-loopback address without API tokens (anyone who can reach it is admin), or with tokens over "
    "plain HTTP (anyone on the path can read them).",
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
@history_store_option
@statsd_options
@otel_option
def gateway_command(
    consul_addr: str,
    consul_token: str,
    node_name: str,
    log_level: str,
    log_format: str,
    curve_keys: str,
    curve_key: str,
    host: str,
    port: int,
    tokens: tuple[str, ...],
    tls_cert: str,
    tls_key: str,
    insecure: bool,
    request_timeout: float,
    heartbeat_interval: float,
    history_store: str,
    statsd_addr: str,
    dog_statsd_addr: str,
    dog_statsd_tags: tuple[str, ...],
    statsd_interval: float,
    otel_endpoint: str,
) -> None:
    """Run a gateway: the Dkron v1 HTTP API and the web UI."""
    start_logging(log_level, log_format, f"gateway[{node_name}]")
    parsed = parse_tokens(tokens)
    check_tls(tls_cert, tls_key)
    refuse_unsafe_exposure(host, tokens=bool(parsed), tls=bool(tls_cert), insecure=insecure)
    settings = GatewaySettings(
        node_name=node_name,
        consul=consul_settings(consul_addr, consul_token),
        bus=bus_settings("gateway", curve_keys, curve_key, heartbeat_interval),
        host=host,
        port=port,
        tokens=parsed,
        insecure=insecure,
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
        request_timeout_s=request_timeout,
        statsd=statsd_settings(statsd_addr, dog_statsd_addr, dog_statsd_tags, statsd_interval),
        otel_endpoint=otel_endpoint,
        history_store=history_store_setting(history_store),
    )
    sys.exit(run_service("gateway", GatewayService(settings).run))
