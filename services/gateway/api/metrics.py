"""Request counters and a latency histogram per route, rendered in the Prometheus text format by hand."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Final

BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[str, str]  # (method, route template)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Histogram:
    __slots__ = ("buckets", "count", "sum_s")

    def __init__(self) -> None:
        self.buckets = [0] * len(BUCKETS_S)
        self.count = 0
        self.sum_s = 0.0

    def observe(self, value_s: float) -> None:
        self.count += 1
        self.sum_s += value_s
        for i, bound in enumerate(BUCKETS_S):
            if value_s <= bound:
                self.buckets[i] += 1


class Metrics:
    """In-memory metrics of one gateway process. Routes are templates (/v1/jobs/{job}), never raw paths,
    so the number of series stays bounded whatever clients request."""

    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: defaultdict[Labels, _Histogram] = defaultdict(_Histogram)
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def observe(self, method: str, route: str, status: int, duration_s: float) -> None:
        self.requests[(method, route, status)] += 1
        self.latency[(method, route)].observe(duration_s)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A value read when the metrics are rendered."""
        self.gauges[name] = (help_text, read)

    def render(self) -> str:
        lines = [
            "# HELP cronbus_gateway_requests_total HTTP requests answered, by method, route and status.",
            "# TYPE cronbus_gateway_requests_total counter",
        ]
        for (method, route, status), count in sorted(self.requests.items()):
            lines.append(
                f'cronbus_gateway_requests_total{{method="{_escape(method)}",route="{_escape(route)}",'
                f'status="{status}"}} {count}'
            )
        lines += [
            "# HELP cronbus_gateway_request_duration_seconds Time to answer HTTP requests, by method and route.",
            "# TYPE cronbus_gateway_request_duration_seconds histogram",
        ]
        for (method, route), hist in sorted(self.latency.items()):
            labels = f'method="{_escape(method)}",route="{_escape(route)}"'
            for bound, count in zip(BUCKETS_S, hist.buckets, strict=True):
                lines.append(f'cronbus_gateway_request_duration_seconds_bucket{{{labels},le="{bound}"}} {count}')
            lines.append(f'cronbus_gateway_request_duration_seconds_bucket{{{labels},le="+Inf"}} {hist.count}')
            lines.append(f"cronbus_gateway_request_duration_seconds_sum{{{labels}}} {hist.sum_s:.6f}")
            lines.append(f"cronbus_gateway_request_duration_seconds_count{{{labels}}} {hist.count}")
        for name, (help_text, read) in sorted(self.gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {read():g}"]
        return "\n".join(lines) + "\n"
