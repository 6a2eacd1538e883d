"""The scheduler's Prometheus metrics (documented in docs/metrics.md)."""

from __future__ import annotations

from cronbus.common.metrics import Registry

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


OTHER_JOBS = "_other"  # the job_name of the per-job series past the limit


class JobCounters:
    """Dkron 4.1's per-job counters (dkron_job_executions_succeeded_total / _failed_total, label job_name) for
    the first `limit` jobs that finish a run (0: none, the default). Runs of the jobs past the limit count under
    job_name="_other": 100 000 jobs make at most limit + 1 series, not 100 000."""

    def __init__(self, registry: Registry, limit: int) -> None:
        self.limit = limit
        self._named: set[str] = set()
        self.succeeded = registry.counter(
            "dkron_job_executions_succeeded_total",
            "Executions that succeeded, per job (--job-metrics).",
            labels=["job_name"],
        )
        self.failed = registry.counter(
            "dkron_job_executions_failed_total", "Executions that failed, per job (--job-metrics).", labels=["job_name"]
        )

    def finished(self, job_name: str, success: bool) -> None:
        if not self.limit:
            return
        if job_name not in self._named and len(self._named) < self.limit:
            self._named.add(job_name)
        name = job_name if job_name in self._named else OTHER_JOBS
        (self.succeeded if success else self.failed).inc(job_name=name)


class SchedulerMetrics:
    def __init__(self, job_metrics: int = 0) -> None:
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
        self.per_job = JobCounters(r, job_metrics)
