"""OpenTelemetry traces: one trace per run, across gateway, leader and executor (docs/metrics.md, "Traces").

A process without `--otel-endpoint` gets `NO_TRACING`, which records nothing and imports nothing. With one, spans
go to an OTLP/HTTP receiver in batches from a thread of the SDK, so tracing never waits on the receiver. The
trace context travels on the bus as W3C Trace Context headers (`traceparent`, `tracestate`) in a message's
`trace` field.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

Carrier = dict[str, str]  # W3C Trace Context headers: what a bus message carries
Attributes = Mapping[str, str | int | float | bool]


class Span:
    """A span being recorded: attributes and an error can be added until it ends."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set(self, key: str, value: str | int | float | bool) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)

    def end(self) -> None:
        """Ends a span from start() (a span from span() ends with its block)."""
        if self._span is not None:
            self._span.end()

    def fail(self, description: str) -> None:
        """Marks the span as failed (an OpenTelemetry ERROR status) with why."""
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - only with tracing on

            self._span.set_status(Status(StatusCode.ERROR, description))

    def carrier(self) -> Carrier:
        """This span's context, to carry to the next process (empty without tracing)."""
        if self._span is None:
            return {}
        from opentelemetry import trace  # noqa: PLC0415
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: PLC0415

        carrier: Carrier = {}
        TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier


class Tracing:
    """One process's tracer. `span()` opens a span, a child of the carried context when there is one."""

    def __init__(self, provider: TracerProvider | None = None, service: str = "") -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("cronbus", schema_url=None) if provider is not None else None
        self.service = service

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextlib.contextmanager
    def span(
        self, name: str, *, parent: Mapping[str, str] | None = None, attributes: Attributes | None = None
    ) -> Iterator[Span]:
        if self._tracer is None:
            yield _NO_SPAN
            return
        with self._tracer.start_as_current_span(
            name, context=_context(parent), attributes=dict(attributes or {})
        ) as span:
            yield Span(span)

    def start(
        self, name: str, *, parent: Mapping[str, str] | None = None, attributes: Attributes | None = None
    ) -> Span:
        """A span that is not this task's current one, ended by its end(): for work that interleaves (the leader's
        launches of one batch)."""
        if self._tracer is None:
            return _NO_SPAN
        return Span(self._tracer.start_span(name, context=_context(parent), attributes=dict(attributes or {})))

    def close(self) -> None:
        """Sends what is still buffered (bounded by the SDK's export timeout) and stops the exporter's thread."""
        if self._provider is not None:
            self._provider.shutdown()


NO_TRACING = Tracing()
_NO_SPAN = Span()


def _context(parent: Mapping[str, str] | None) -> Any:
    """The OpenTelemetry context a carrier names (None: a new trace)."""
    if not parent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: PLC0415

    return TraceContextTextMapPropagator().extract(dict(parent))


def tracing(service: str, endpoint: str, *, exporter: SpanExporter | None = None) -> Tracing:
    """The process's tracer: spans of `service` sent to the OTLP/HTTP receiver at `endpoint` (e.g.
    `http://127.0.0.1:4318`; `/v1/traces` is added), or to `exporter` (tests); NO_TRACING when both are unset.
    Raises SettingsError when the tracing extra is not installed."""
    if not endpoint and exporter is None:
        return NO_TRACING
    from cronbus.common.errors import SettingsError  # noqa: PLC0415

    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor  # noqa: PLC0415
    except ImportError as exc:
        raise SettingsError(
            f"--otel-endpoint needs OpenTelemetry, which is not installed ({exc}): install cronbus[tracing]"
        ) from exc
    provider = TracerProvider(resource=Resource.create({"service.name": f"cronbus-{service}"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        url = endpoint.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"--otel-endpoint {endpoint!r}: give an OTLP/HTTP URL, such as http://127.0.0.1:4318")
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces", timeout=5)))
        log.info("traces go to %s/v1/traces", url)
    return Tracing(provider, service)
