"""The scheduler's Prometheus metrics (documented in docs/metrics.md)."""

from __future__ import annotations

from cronbus.common.metrics import Registry

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SchedulerMetrics:
    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.lag = r.histogram(
            "cronbus_dispatch_lag_seconds",
            "Scheduled instant to the start of the run on its executor, per scheduled run.",
            LAG_BUCKETS,
        )
        self.fires = r.counter("cronbus_fires_total", "Scheduled slots that came due.")
        self.dispatched = r.counter("cronbus_dispatched_total", "Dispatch messages published (resends included).")
        self.missed = r.counter("cronbus_missed_total", "Slots recorded as missed.")
        self.skipped = r.counter("cronbus_skipped_total", "Slots recorded as skipped (concurrency forbid).")
        self.deduplicated = r.counter(
            "cronbus_deduplicated_total", "Launches found already recorded (replayed after a leader change)."
        )
        self.retries = r.counter("cronbus_retries_total", "Retries scheduled after a failed attempt.")
        self.finished = r.counter("cronbus_executions_finished_total", "Executions finished, by status.")
        self.leader = r.gauge("cronbus_leader", "1 while this scheduler is the leader.")
        self.term = r.gauge("cronbus_leader_term", "Leadership term of this scheduler (0 when standby).")
        self.jobs = r.gauge("cronbus_jobs_loaded", "Job definitions loaded.")
        self.active = r.gauge("cronbus_executions_active", "Pending or running executions tracked by the leader.")
