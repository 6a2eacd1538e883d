"""Prometheus metrics: counters, gauges and histograms in the text exposition format, and a tiny server."""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

log = logging.getLogger(__name__)

LabelKey = tuple[tuple[str, str], ...]
M = TypeVar("M", bound="_Metric")
DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(key: LabelKey, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in key]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    """A sample value, exactly: "%g" keeps six digits, so a counter past a million or a long sum would drift."""
    value = float(value)  # a read callback may hand back an int
    return str(int(value)) if value.is_integer() else repr(value)


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A counter; one declared with `labels` has no sample until its first inc (an unlabelled 0 would be
    a series of its own)."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, *, labels: Iterable[str] = ()) -> None:
        super().__init__(name, help_text)
        self.labels = tuple(labels)
        self.values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def lines(self) -> list[str]:
        samples = [f"{self.name}{_labels(k)} {_number(v)}" for k, v in sorted(self.values.items())]
        return samples or ([] if self.labels else [f"{self.name} 0"])

    def samples(self) -> list[tuple[LabelKey, float]]:
        """The total of each series so far (an unlabelled counter has one from the start)."""
        return sorted(self.values.items()) or ([] if self.labels else [((), 0.0)])


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float] | None = None) -> None:
        super().__init__(name, help_text)
        self.values: dict[LabelKey, float] = {}
        self._read = read

    def set(self, value: float, **labels: str) -> None:
        self.values[tuple(sorted(labels.items()))] = value

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(k)} {_number(v)}" for k, v in self.samples()]

    def samples(self) -> list[tuple[LabelKey, float]]:
        """The value of each series now (read from the callback of a gauge made with one)."""
        if self._read is not None:
            return [((), float(self._read()))]
        return sorted(self.values.items()) or [((), 0.0)]


class Histogram(_Metric):
    """A histogram. `bound_text` spells a bucket bound in `le` ("1" by default, "1.0" with str): the spelling
    is part of a series' identity, so a histogram keeps the one it was first published with."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        *,
        bound_text: Callable[[float], str] = _number,
    ) -> None:
        super().__init__(name, help_text)
        self.buckets = tuple(sorted(buckets))
        self._bound_text = bound_text
        self.series: dict[LabelKey, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        counts, sums = self.series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        sums[0] += value

    def totals(self) -> list[tuple[LabelKey, int, float]]:
        """The count and the sum of the observations of each series so far."""
        return [(key, sum(counts), sums[0]) for key, (counts, sums) in sorted(self.series.items())]

    def lines(self) -> list[str]:
        out: list[str] = []
        for key, (counts, sums) in sorted(self.series.items()):
            running = 0
            for bound, count in zip(self.buckets, counts, strict=False):
                running += count
                le = f'le="{self._bound_text(bound)}"'
                out.append(f"{self.name}_bucket{_labels(key, le)} {running}")
            running += counts[-1]
            inf = 'le="+Inf"'
            out.append(f"{self.name}_bucket{_labels(key, inf)} {running}")
            out.append(f"{self.name}_sum{_labels(key)} {_number(sums[0])}")
            out.append(f"{self.name}_count{_labels(key)} {running}")
        return out


class Registry:
    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def counter(self, name: str, help_text: str, *, labels: Iterable[str] = ()) -> Counter:
        return self.add(Counter(name, help_text, labels=labels))

    def gauge(self, name: str, help_text: str, read: Callable[[], float] | None = None) -> Gauge:
        return self.add(Gauge(name, help_text, read))

    def histogram(self, name: str, help_text: str, buckets: Iterable[float] = DEFAULT_BUCKETS) -> Histogram:
        return self.add(Histogram(name, help_text, buckets))

    def add(self, metric: M) -> M:
        """Registers a metric; for one built with options the shortcuts above do not take."""
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.metrics:
            lines.extend(metric.header())
            lines.extend(metric.lines())
        return "\n".join(lines) + "\n"


async def serve_metrics(registry: Registry, host: str, port: int, stop: asyncio.Event) -> None:
    """Answers every HTTP request with the registry's text (GET /metrics is all Prometheus asks)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            body = registry.render().encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    log.info("metrics on http://%s:%d/metrics", host, port)
    async with server:
        await stop.wait()
