"""StatsD and DogStatsD: a service's metrics Registry sent over UDP at an interval (docs/metrics.md, StatsD)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from cronbus.common.errors import SettingsError
from cronbus.common.metrics import Counter, Gauge, Histogram, LabelKey, Registry
from cronbus.common.settings import StatsdSettings, split_host_port

log = logging.getLogger(__name__)

DATAGRAM_BYTES: Final = 1432  # lines per datagram up to this: fits one Ethernet frame over IPv4 or IPv6
_UNSAFE_NAME: Final = re.compile(r"[^A-Za-z0-9_.-]")
_UNSAFE_TAG: Final = re.compile(r"[,|#\s]")  # DogStatsD separators, and no line breaks
_NUMBER: Final = "{:.15g}"

MetricType = Literal["c", "g"]


@dataclass(frozen=True)
class Sample:
    """One value to send: a counter's increase since the last flush ("c") or a gauge's value now ("g")."""

    name: str
    labels: LabelKey
    value: float
    type: MetricType


class Deltas:
    """Turns a Registry's totals into what StatsD wants: counters as their increase since the previous call,
    histograms as the increase of their `_count` and `_sum` (counters too), gauges as they are."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._sent: dict[tuple[str, LabelKey], float] = {}

    def samples(self) -> list[Sample]:
        out: list[Sample] = []
        for metric in self._registry.metrics:
            if isinstance(metric, Counter):
                out += self._increases(metric.name, metric.samples())
            elif isinstance(metric, Gauge):
                out += [Sample(metric.name, key, value, "g") for key, value in metric.samples()]
            elif isinstance(metric, Histogram):
                totals = metric.totals()
                out += self._increases(f"{metric.name}_count", [(key, float(count)) for key, count, _ in totals])
                out += self._increases(f"{metric.name}_sum", [(key, total) for key, _, total in totals])
        return out

    def _increases(self, name: str, totals: Iterable[tuple[LabelKey, float]]) -> list[Sample]:
        out = []
        for key, total in totals:
            before = self._sent.get((name, key), 0.0)
            self._sent[(name, key)] = total
            # A counter that went down was reset (it never is in one process): its whole value is new.
            increase = total - before if total >= before else total
            if increase:
                out.append(Sample(name, key, increase, "c"))
        return out


def statsd_line(sample: Sample) -> str:
    """Plain StatsD has no tags: each label becomes two segments of the name, `.key.value`, in key order."""
    parts = [sample.name, *(part for key, value in sample.labels for part in (key, value))]
    name = ".".join(_UNSAFE_NAME.sub("_", part) for part in parts)
    return f"{name}:{_NUMBER.format(sample.value)}|{sample.type}"


def dogstatsd_line(sample: Sample, tags: Iterable[str]) -> str:
    """DogStatsD: the name as is, the labels as `key:value` tags, then the configured tags."""
    all_tags = [f"{_UNSAFE_TAG.sub('_', k)}:{_UNSAFE_TAG.sub('_', v)}" for k, v in sample.labels] + list(tags)
    suffix = f"|#{','.join(all_tags)}" if all_tags else ""
    return f"{_UNSAFE_NAME.sub('_', sample.name)}:{_NUMBER.format(sample.value)}|{sample.type}{suffix}"


def datagrams(lines: Iterable[str], limit: int = DATAGRAM_BYTES) -> list[bytes]:
    """Lines joined by newlines into datagrams of at most `limit` bytes (a longer line goes alone)."""
    out: list[bytes] = []
    current = b""
    for line in lines:
        data = line.encode()
        if current and len(current) + 1 + len(data) > limit:
            out.append(current)
            current = b""
        current = current + b"\n" + data if current else data
    if current:
        out.append(current)
    return out


def parse_dog_tags(values: Iterable[str]) -> tuple[str, ...]:
    """--dog-statsd-tags: each `key:value` (or a bare tag), without DogStatsD's separators in it."""
    tags = []
    for value in values:
        tag = value.strip()
        if not tag or _UNSAFE_TAG.search(tag):
            raise SettingsError(f"--dog-statsd-tags {value!r}: expected key:value without ',', '|', '#' or spaces")
        tags.append(tag)
    return tuple(tags)


def _udp_socket(address: str, setting: str) -> socket.socket:
    host, port = split_host_port(address, setting=setting, default_port=8125)
    try:
        family, kind, proto, _, target = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    except OSError as exc:
        raise SettingsError(f"{setting} {address!r}: {exc}") from None
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    sock.connect(target)  # UDP: only fixes the destination (resolved once, at start)
    return sock


class StatsdSender:
    """Sends a Registry to a StatsD server, a DogStatsD agent, or both, every `interval_s` and once more at stop.

    Sending is fire-and-forget, as StatsD is: a datagram the network or the receiver drops is lost, and an error
    (nobody listening: ICMP port unreachable) is logged once, not raised.
    """

    def __init__(self, registry: Registry, settings: StatsdSettings) -> None:
        self._deltas = Deltas(registry)
        self._settings = settings
        self._statsd = _udp_socket(settings.addr, "--statsd-addr") if settings.addr else None
        self._dog = _udp_socket(settings.dog_addr, "--dog-statsd-addr") if settings.dog_addr else None
        self._warned = False

    def flush(self) -> None:
        samples = self._deltas.samples()
        if self._statsd is not None:
            self._send(self._statsd, [statsd_line(s) for s in samples])
        if self._dog is not None:
            self._send(self._dog, [dogstatsd_line(s, self._settings.dog_tags) for s in samples])

    def _send(self, sock: socket.socket, lines: list[str]) -> None:
        for datagram in datagrams(lines):
            try:
                sock.send(datagram)
            except OSError as exc:  # refused, or the buffer is full: StatsD is best effort
                if not self._warned:
                    log.warning("statsd send failed to=%s: %s (further failures are not logged)",
                                sock.getpeername(), exc)  # fmt: skip
                    self._warned = True
                return

    async def run(self, stop: asyncio.Event) -> None:
        """Flushes every interval until `stop`, then once more (the last increases), and closes the sockets."""
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._settings.interval_s)
                self.flush()
        finally:
            self.close()

    def close(self) -> None:
        for sock in (self._statsd, self._dog):
            if sock is not None:
                sock.close()


def statsd_sender(registry: Registry, settings: StatsdSettings) -> StatsdSender | None:
    """A sender when StatsD or DogStatsD is set up, else None."""
    return StatsdSender(registry, settings) if settings.addr or settings.dog_addr else None
