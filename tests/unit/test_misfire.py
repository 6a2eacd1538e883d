"""plan_catchup (docs/semantics.md §4): which missed slots run, which are recorded missed and why, with bounded work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from cronbus.common import schedule
from cronbus.common.errors import ValidationError
from cronbus.common.schedule import Catchup, parse_schedule, plan_catchup


@dataclass(frozen=True)
class Job:
    name: str = "job"
    schedule: str = "0 0 * * * *"
    timezone: str = ""
    created_at: datetime | None = None
    starts_at: datetime | None = None
    expires_at: datetime | None = None
    misfire_policy: str = "run_once"
    catchup_window: str = "1h"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


HOURS = [utc(f"2026-01-01T{h:02d}:00") for h in range(24)]
OLD_1H = "older than catchup_window 1h0m0s"


def test_nothing_is_missed_without_a_last_slot() -> None:
    assert plan_catchup(Job(), None, utc("2026-01-01T14:30")) == Catchup([], [])
    assert plan_catchup(Job(), utc("2026-01-01T14:30"), utc("2026-01-01T14:30")) == Catchup([], [])
    assert plan_catchup(Job(), utc("2026-01-01T14:00"), utc("2026-01-01T14:59:59")) == Catchup([], [])


def test_run_once_runs_the_latest_slot_in_the_window() -> None:
    plan = plan_catchup(Job(), HOURS[10], utc("2026-01-01T14:30"))
    assert plan.run == [HOURS[14]]
    assert plan.missed == [(HOURS[11], OLD_1H), (HOURS[12], OLD_1H), (HOURS[13], OLD_1H)]


def test_run_once_coalesces_the_others_in_the_window() -> None:
    plan = plan_catchup(Job(catchup_window="3h"), HOURS[10], utc("2026-01-01T14:30"))
    assert plan.run == [HOURS[14]]
    coalesced = "coalesced into the run of 2026-01-01T14:00:00+00:00"
    assert plan.missed == [
        (HOURS[11], "older than catchup_window 3h0m0s"),
        (HOURS[12], coalesced),
        (HOURS[13], coalesced),
    ]


def test_window_bounds_are_inclusive_and_last_slot_exclusive() -> None:
    # now - window == 13:00 exactly: the 13:00 slot is inside; the slot at `now` counts; last_slot does not.
    plan = plan_catchup(Job(misfire_policy="run_all"), HOURS[12], HOURS[14])
    assert plan.run == [HOURS[13], HOURS[14]]
    assert plan.missed == []


def test_run_all_runs_every_slot_in_the_window_in_order() -> None:
    plan = plan_catchup(Job(misfire_policy="run_all", catchup_window="3h"), HOURS[10], utc("2026-01-01T14:30"))
    assert plan.run == [HOURS[12], HOURS[13], HOURS[14]]
    assert plan.missed == [(HOURS[11], "older than catchup_window 3h0m0s")]


def test_skip_runs_nothing() -> None:
    plan = plan_catchup(Job(misfire_policy="skip", catchup_window="3h"), HOURS[10], utc("2026-01-01T14:30"))
    assert plan.run == []
    assert plan.missed == [
        (HOURS[11], "older than catchup_window 3h0m0s"),
        (HOURS[12], "misfire_policy skip"),
        (HOURS[13], "misfire_policy skip"),
        (HOURS[14], "misfire_policy skip"),
    ]


def test_nothing_in_the_window() -> None:
    plan = plan_catchup(Job(schedule="@daily"), utc("2025-12-29T00:00"), utc("2026-01-01T12:00"))
    assert plan.run == []
    assert [reason for _, reason in plan.missed] == [OLD_1H] * 3


def test_defaults_apply_to_empty_policy_and_window() -> None:
    plan = plan_catchup(Job(misfire_policy="", catchup_window=""), HOURS[10], utc("2026-01-01T14:30"))
    assert plan == plan_catchup(Job(), HOURS[10], utc("2026-01-01T14:30"))


def test_bad_policy_or_window_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="unknown misfire_policy 'sometimes'"):
        plan_catchup(Job(misfire_policy="sometimes"), HOURS[10], HOURS[12])
    with pytest.raises(ValidationError, match="invalid catchup_window: invalid duration '1 hour'"):
        plan_catchup(Job(catchup_window="1 hour"), HOURS[10], HOURS[12])


def test_starts_and_expires_bound_catchup() -> None:
    job = Job(misfire_policy="run_all", catchup_window="24h", starts_at=HOURS[12], expires_at=HOURS[13])
    assert plan_catchup(job, HOURS[10], utc("2026-01-01T16:00")) == Catchup([HOURS[12], HOURS[13]], [])


def test_manual_and_empty_schedules_miss_nothing() -> None:
    assert plan_catchup(Job(schedule="@manually"), HOURS[1], HOURS[20]) == Catchup([], [])
    assert plan_catchup(Job(schedule=""), HOURS[1], HOURS[20]) == Catchup([], [])


def test_run_all_runs_at_most_1000() -> None:
    now = utc("2026-01-01T12:00")
    plan = plan_catchup(Job(schedule="* * * * * *", misfire_policy="run_all"), now - timedelta(minutes=30), now)
    assert len(plan.run) == 1000
    assert plan.run[0] == now - timedelta(seconds=999)
    assert plan.run[-1] == now
    assert len(plan.missed) == 800
    assert plan.missed[-1] == (now - timedelta(seconds=1000), "more than 1000 missed slots")
    assert plan.missed[0][0] == now - timedelta(seconds=1799)


def test_catchup_in_the_zone_across_dst() -> None:
    # Berlin fall back: 02:30 local fires once (00:30Z); an outage over the night misses exactly that slot.
    job = Job(schedule="0 30 2 * * *", timezone="Europe/Berlin", catchup_window="2h")
    plan = plan_catchup(job, utc("2026-10-24T00:30"), utc("2026-10-25T06:00"))
    assert plan == Catchup([], [(utc("2026-10-25T00:30"), "older than catchup_window 2h0m0s")])


S = TypeVar("S", bound=schedule.Schedule)


class CountingCalls:
    """Counts next_after calls on the periodic Schedule kinds, to pin the bound on enumeration work."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        monkeypatch.setattr(schedule.CronSchedule, "next_after", self._counted(schedule.CronSchedule.next_after))
        monkeypatch.setattr(schedule.EverySchedule, "next_after", self._counted(schedule.EverySchedule.next_after))

    def _counted(self, original: Callable[[S, datetime], datetime | None]) -> Callable[[S, datetime], datetime | None]:
        def counted(sched: S, after: datetime) -> datetime | None:
            self.calls += 1
            return original(sched, after)

        return counted


@pytest.mark.parametrize(
    ("expr", "policy"),
    [
        ("* * * * * *", "run_once"),
        ("* * * * * *", "run_all"),
        ("* * * * * *", "skip"),
        ("@every 1s", "run_once"),
        ("* * * 1 * *", "run_once"),  # dense one day a month: the backward search has to bisect
        ("* * 0-11 * * *", "run_all"),
    ],
)
def test_huge_gaps_are_summarised_with_bounded_work(expr: str, policy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = CountingCalls(monkeypatch)
    now = utc("2026-06-01T06:00")
    last = now - timedelta(days=200)
    plan = plan_catchup(Job(schedule=expr, misfire_policy=policy), last, now)
    assert counter.calls <= 100_000
    expected_run = {"run_once": [now], "run_all": [now - timedelta(seconds=999 - i) for i in range(1000)]}
    assert plan.run == expected_run.get(policy, [])
    assert len(plan.missed) == 1001
    first, summary = plan.missed[0]
    sched = parse_schedule(expr)
    assert sched is not None
    assert first == sched.next_after(last)
    assert summary == f"older missed slots from {first.isoformat()} are not listed"
    listed = [slot for slot, _ in plan.missed[1:]]
    assert listed == sorted(listed)
    assert listed[-1] < (plan.run[0] if plan.run else now + timedelta(seconds=1))
    # The listed ones are the newest missed slots: consecutive seconds right before the runs.
    assert listed[-1] - listed[0] == timedelta(seconds=999)


def test_slot_lists_are_exact_up_to_1000_missed() -> None:
    # 1 000 slots over 1 000 s: no summary, every slot accounted for exactly once.
    now = utc("2026-01-01T12:00")
    plan = plan_catchup(Job(schedule="* * * * * *", catchup_window="10m"), now - timedelta(seconds=1000), now)
    assert plan.run == [now]
    assert [slot for slot, _ in plan.missed] == [now - timedelta(seconds=999 - i) for i in range(999)]
    reasons = [reason for _, reason in plan.missed]
    assert reasons.count("older than catchup_window 10m0s") == 399
    assert reasons.count("coalesced into the run of 2026-01-01T12:00:00+00:00") == 600


def test_dense_block_far_behind_now_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every second of the 1st of the month, asked on the 15th: the newest slots are two weeks back, and a
    # span that holds "enough but not too many" of them has to be bisected for.
    counter = CountingCalls(monkeypatch)
    now = utc("2026-06-15T12:00")
    plan = plan_catchup(Job(schedule="* * * 1 * *"), now - timedelta(days=200), now)
    assert counter.calls <= 100_000
    assert plan.run == []
    assert len(plan.missed) == 1001
    listed = [slot for slot, _ in plan.missed[1:]]
    assert listed[-1] == utc("2026-06-01T23:59:59")
    assert listed[0] == utc("2026-06-01T23:43:20")
    assert {reason for _, reason in plan.missed[1:]} == {OLD_1H}
