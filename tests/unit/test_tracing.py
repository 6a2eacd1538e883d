"""common/tracing.py with the OpenTelemetry SDK's in-memory exporter: a carried context makes one trace."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from cronbus.common.errors import SettingsError
from cronbus.common.tracing import NO_TRACING, tracing


def test_a_carried_context_continues_the_trace_in_another_process() -> None:
    gateway_spans, executor_spans = InMemorySpanExporter(), InMemorySpanExporter()
    gateway = tracing("gateway", "", exporter=gateway_spans)
    executor = tracing("executor", "", exporter=executor_spans)
    with gateway.span("cronbus.run_job", attributes={"cronbus.job": "backup"}) as span:
        carrier = span.carrier()
    assert set(carrier) >= {"traceparent"}
    with executor.span("cronbus.run", parent=carrier) as span:
        span.set("cronbus.status", "failed")
        span.fail("exit code 1")
    (parent,) = gateway_spans.get_finished_spans()
    (child,) = executor_spans.get_finished_spans()
    assert parent.context is not None and child.context is not None and child.parent is not None
    assert child.context.trace_id == parent.context.trace_id
    assert child.parent.span_id == parent.context.span_id
    assert parent.attributes == {"cronbus.job": "backup"}
    assert child.resource.attributes["service.name"] == "cronbus-executor"
    assert child.status.status_code is StatusCode.ERROR and child.status.description == "exit code 1"
    gateway.close()
    executor.close()


def test_without_an_endpoint_nothing_is_recorded_or_carried() -> None:
    assert tracing("scheduler", "") is NO_TRACING
    with NO_TRACING.span("cronbus.launch", parent={"traceparent": "garbage"}) as span:
        span.set("cronbus.job", "x")
        span.fail("nothing")
        assert span.carrier() == {}


def test_an_endpoint_that_is_no_http_url_is_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="OTLP/HTTP URL"):
        tracing("scheduler", "localhost:4317")
