"""The executor's Prometheus metrics (documented in docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Callable

from cronbus.common.metrics import Registry

# Runs last from milliseconds (noop, http) to hours (batch jobs).
DURATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0)


class ExecutorMetrics:
    def __init__(self, *, running: Callable[[], float], capacity: int, undelivered: Callable[[], float]) -> None:
        self.registry = Registry()
        r = self.registry
        self.started = r.counter("cronbus_executor_runs_started_total", "Executions started here, by executor type.")
        self.finished = r.counter("cronbus_executor_runs_finished_total", "Executions finished here, by status.")
        self.duration = r.histogram(
            "cronbus_executor_run_duration_seconds", "Run time of executions, by status.", DURATION_BUCKETS_S
        )
        self.refused = r.counter("cronbus_executor_dispatches_refused_total", "Dispatches refused, by reason.")
        self.processor_errors = r.counter(
            "cronbus_executor_processor_errors_total", "Output processors that failed, by processor."
        )
        r.gauge("cronbus_executor_running", "Executions running now.", running)
        r.gauge("cronbus_executor_capacity", "Executions this executor may run at once.", lambda: float(capacity))
        r.gauge("cronbus_executor_results_unacked", "Finished results not yet acknowledged by the leader.", undelivered)
