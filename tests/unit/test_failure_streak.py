"""A job's failed runs in a row, and the reason it is disabled at `disable_after_failures` (docs/semantics.md §6)."""

from __future__ import annotations

from datetime import UTC, datetime

from cronbus.common.models import Execution, ExecutionStatus, JobStatus, RunStatus
from cronbus.services.scheduler.results import FailureStreak, _final_status

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _record(n: int, status: ExecutionStatus) -> Execution:
    return Execution(id=f"job.{n}", job_name="job", status=status, success=status == "success", finished_at=T0)


def _after(statuses: list[ExecutionStatus], disable_after: int, retry: str | None = None) -> tuple[JobStatus, str]:
    """Each run on one executor: its run's status is its record's."""
    status, streak = JobStatus(), FailureStreak()
    for n, outcome in enumerate(statuses):
        run: RunStatus = "success" if outcome == "success" else "failed"
        change = _final_status(_record(n, outcome), retry, run, disable_after=disable_after, streak=streak)
        status = change(status)
    return status, streak.disabled


def test_failures_in_a_row_count_and_a_success_resets_them() -> None:
    status, disabled = _after(["failed", "timeout", "success", "failed"], 0)
    assert (status.failed_in_a_row, status.disabled_reason, disabled) == (1, "", "")


def test_the_nth_failure_in_a_row_says_why_the_job_is_disabled_and_starts_the_count_again() -> None:
    status, disabled = _after(["failed", "failed", "timeout"], 3)
    assert disabled == "disabled after 3 failed runs in a row (the last: job.2, timeout)"
    assert (status.failed_in_a_row, status.disabled_reason) == (0, disabled)
    status, disabled = _after(["failed", "failed", "timeout", "failed"], 3)
    assert (status.failed_in_a_row, status.disabled_reason, disabled) == (1, "", "")


def test_kills_missed_and_skipped_slots_and_attempts_with_a_retry_to_come_leave_the_count() -> None:
    status, disabled = _after(["failed", "killed", "missed", "skipped", "failed"], 3)
    assert (status.failed_in_a_row, disabled) == (2, "")
    status, disabled = _after(["failed"] * 5, 2, retry="job.retry")
    assert (status.failed_in_a_row, status.error_count, disabled) == (0, 5, "")


def test_a_change_applied_again_after_a_conflict_says_only_what_it_wrote() -> None:
    streak = FailureStreak()
    change = _final_status(_record(9, "failed"), None, "failed", disable_after=2, streak=streak)
    change(JobStatus(failed_in_a_row=1))
    assert streak.disabled
    change(JobStatus(failed_in_a_row=0))  # re-read after a check-and-set conflict: a success came meanwhile
    assert streak.disabled == ""


def test_a_run_on_several_executors_counts_once_when_its_last_part_ends() -> None:
    """Three executors' parts of one run: the first two end while the run is open; the third ends it. A run that
    did not succeed everywhere is a failed run."""
    streak = FailureStreak()
    status = JobStatus()
    parts: list[tuple[ExecutionStatus, bool, RunStatus]] = [
        ("failed", True, "failed"), ("failed", True, "failed"), ("success", False, "partially_failed"),
    ]  # fmt: skip
    for lane, (outcome, run_open, run) in enumerate(parts):
        record = Execution(id=f"job.1.e{lane}", job_name="job", status=outcome, success=outcome == "success")
        status = _final_status(record, None, run, run_open=run_open, disable_after=2, streak=streak)(status)
    assert (status.failed_in_a_row, status.error_count, status.success_count, streak.disabled) == (1, 2, 1, "")


def test_a_run_of_a_job_disabled_already_leaves_the_count_and_the_reason() -> None:
    """A manual run of a job the cluster disabled: it neither counts nor says the job is disabled (again)."""
    streak = FailureStreak()
    before = JobStatus(failed_in_a_row=0, disabled_reason="disabled after 2 failed runs in a row (the last: x)")
    after = _final_status(_record(1, "failed"), None, "failed", job_disabled=True, disable_after=1, streak=streak)(
        before
    )
    assert (after.failed_in_a_row, after.disabled_reason, after.error_count, streak.disabled) == (
        0, before.disabled_reason, 1, ""
    )  # fmt: skip
