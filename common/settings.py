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


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True):
    node_name: str
    consul: ConsulSettings = ConsulSettings()
    bus: BusSettings = BusSettings()
    host: str = "127.0.0.1"
    port: int = 8080
    tokens: dict[str, str] = {}  # token -> role (read | operator | admin)
    insecure: bool = False
    request_timeout_s: float = 5.0
