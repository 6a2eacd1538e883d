"""Request counters and a latency histogram per route, on a common.metrics Registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from cronbus.common.metrics import Histogram, Registry

BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """In-memory metrics of one gateway process. Routes are templates (/v1/jobs/{job}), never raw paths,
    so the number of series stays bounded whatever clients request."""

    def __init__(self) -> None:
        self.registry = Registry()
        self._requests = self.registry.counter(
            "cronbus_gateway_requests_total",
            "HTTP requests answered, by method, route and status.",
            labels=("method", "route", "status"),
        )
        self._latency = self.registry.add(
            Histogram(
                "cronbus_gateway_request_duration_seconds",
                "Time to answer HTTP requests, by method and route.",
                BUCKETS_S,
                bound_text=str,  # le="1.0": the spelling the gateway's series have always had
            )
        )

    def observe(self, method: str, route: str, status: int, duration_s: float) -> None:
        self._requests.inc(method=method, route=route, status=str(status))
        self._latency.observe(duration_s, method=method, route=route)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A value read when the metrics are rendered."""
        self.registry.gauge(name, help_text, read)

    def render(self) -> str:
        return self.registry.render()
