"""Unit tests for schedule parsing, durations and fire-time helpers (docs/semantics.md §1), at fixed instants in UTC."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from cronbus.common.errors import DurationError, ScheduleError, ValidationError
from cronbus.common.schedule import (
    AfterSchedule,
    Schedule,
    dkron_hash,
    format_duration,
    next_fires,
    parse_duration,
    parse_schedule,
    plan_catchup,
    plan_late,
    slots_between,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expr: str, after: str, n: int = 3, timezone: str = "", job_name: str = "") -> list[str]:
    sched = parse_schedule(expr, timezone, job_name=job_name)
    assert sched is not None
    out: list[str] = []
    t: datetime | None = utc(after)
    for _ in range(n):
        assert t is not None
        t = sched.next_after(t)
        assert t is not None
        out.append(t.strftime("%Y-%m-%d %H:%M:%S"))
    return out


@dataclass(frozen=True)
class Job:
    name: str = "job"
    schedule: str = "0 0 * * * *"
    timezone: str = ""
    created_at: datetime | None = None
    starts_at: datetime | None = None
    expires_at: datetime | None = None


# ------------------------------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h30m10s", timedelta(hours=1, minutes=30, seconds=10)),
        ("90s", timedelta(seconds=90)),
        ("1.5h", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("-2m", timedelta(minutes=-2)),
        ("+3s", timedelta(seconds=3)),
        ("1us", timedelta(microseconds=1)),
        ("2µs", timedelta(microseconds=2)),
        ("1500ns", timedelta(microseconds=1)),  # sub-microsecond parts are dropped
        (".5s", timedelta(milliseconds=500)),
        ("1.s", timedelta(seconds=1)),
        ("24h", timedelta(days=1)),
        ("1h1h", timedelta(hours=2)),  # Go adds repeated units
    ],
)
def test_parse_duration_reads_go_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("10", "missing unit"),
        ("1x", "unknown unit 'x'"),
        ("h", "expected a number"),
        (".s", "expected a number"),
        ("1h 30m", "unknown unit"),
        ("1d", "unknown unit 'd'"),
    ],
)
def test_parse_duration_rejects_with_reason(text: str, problem: str) -> None:
    with pytest.raises(DurationError, match=f"invalid duration '{text}': .*{problem}"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("d", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(hours=1), "1h0m0s"),
        (timedelta(hours=1, minutes=30), "1h30m0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(microseconds=1500), "1.5ms"),
        (timedelta(microseconds=7), "7µs"),
        (timedelta(days=2), "48h0m0s"),
        (timedelta(minutes=-2), "-2m0s"),
    ],
)
def test_format_duration_prints_like_go(d: timedelta, text: str) -> None:
    assert format_duration(d) == text
    assert parse_duration(text) == d


# -------------------------------------------------------------------------------------------- syntax


def test_empty_schedule_is_none_and_manually_never_fires() -> None:
    assert parse_schedule("") is None
    assert parse_schedule("   ") is None
    manual = parse_schedule("@manually")
    assert manual is not None
    assert manual.next_after(utc("2026-01-01T00:00:00")) is None


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # 6 fields, seconds first; 5 fields run at second 0.
        ("0 30 9 * * 1-5", "2026-03-06 10:00:00", ["2026-03-09 09:30:00", "2026-03-10 09:30:00"]),
        ("30 9 * * 1-5", "2026-03-06 10:00:00", ["2026-03-09 09:30:00", "2026-03-10 09:30:00"]),
        ("*/20 * * * * *", "2026-01-01 00:00:00", ["2026-01-01 00:00:20", "2026-01-01 00:00:40"]),
        ("0 5/20 * * * *", "2026-01-01 00:00:00", ["2026-01-01 00:05:00", "2026-01-01 00:25:00"]),
        ("0 10-20/5 * * * *", "2026-01-01 00:16:00", ["2026-01-01 00:20:00", "2026-01-01 01:10:00"]),
        ("0 0 6,18 * * *", "2026-01-01 07:00:00", ["2026-01-01 18:00:00", "2026-01-02 06:00:00"]),
        ("0 0 0 ? * *", "2026-01-01 00:00:00", ["2026-01-02 00:00:00", "2026-01-03 00:00:00"]),
        # names, any case
        ("0 0 12 * jan-Feb Mon", "2026-02-20 00:00:00", ["2026-02-23 12:00:00", "2027-01-04 12:00:00"]),
        ("0 0 12 * * SAT,sun", "2026-01-01 00:00:00", ["2026-01-03 12:00:00", "2026-01-04 12:00:00"]),
        # weekday 7 is Sunday, alone and in a range
        ("0 0 12 * * 7", "2026-01-01 00:00:00", ["2026-01-04 12:00:00", "2026-01-11 12:00:00"]),
        ("0 0 12 * * 6-7", "2026-01-01 00:00:00", ["2026-01-03 12:00:00", "2026-01-04 12:00:00"]),
        # Vixie: day-of-month and day-of-week both restricted, either matches (the 13th or a Friday)
        ("0 0 0 13 * FRI", "2026-02-01 00:00:00", ["2026-02-06 00:00:00", "2026-02-13 00:00:00"]),
        # only one restricted: that one alone decides
        ("0 0 0 13 * *", "2026-02-01 00:00:00", ["2026-02-13 00:00:00", "2026-03-13 00:00:00"]),
        ("0 0 0 * * FRI", "2026-02-01 00:00:00", ["2026-02-06 00:00:00", "2026-02-13 00:00:00"]),
        ("0 0 0 */10 * *", "2026-01-01 00:00:00", ["2026-01-11 00:00:00", "2026-01-21 00:00:00"]),
        # the 31st skips shorter months
        ("0 0 0 31 * *", "2026-01-31 00:00:00", ["2026-03-31 00:00:00", "2026-05-31 00:00:00"]),
        # Feb 29 is accepted and waits for leap years, across the 2100 exception
        ("0 0 0 29 2 *", "2026-01-01 00:00:00", ["2028-02-29 00:00:00", "2032-02-29 00:00:00"]),
        ("0 0 0 29 2 *", "2096-03-01 00:00:00", ["2104-02-29 00:00:00", "2108-02-29 00:00:00"]),
        # descriptors
        ("@yearly", "2026-05-05 00:00:00", ["2027-01-01 00:00:00", "2028-01-01 00:00:00"]),
        ("@annually", "2026-05-05 00:00:00", ["2027-01-01 00:00:00", "2028-01-01 00:00:00"]),
        ("@monthly", "2026-05-05 00:00:00", ["2026-06-01 00:00:00", "2026-07-01 00:00:00"]),
        ("@weekly", "2026-05-05 00:00:00", ["2026-05-10 00:00:00", "2026-05-17 00:00:00"]),
        ("@daily", "2026-05-05 00:00:00", ["2026-05-06 00:00:00", "2026-05-07 00:00:00"]),
        ("@midnight", "2026-05-05 00:00:00", ["2026-05-06 00:00:00", "2026-05-07 00:00:00"]),
        ("@hourly", "2026-05-05 00:00:00", ["2026-05-05 01:00:00", "2026-05-05 02:00:00"]),
        ("@minutely", "2026-05-05 00:00:00", ["2026-05-05 00:01:00", "2026-05-05 00:02:00"]),
        ("@DAILY", "2026-05-05 00:00:00", ["2026-05-06 00:00:00", "2026-05-07 00:00:00"]),
        # year rollover
        ("0 0 0 1 1 *", "2026-12-31 23:59:59", ["2027-01-01 00:00:00", "2028-01-01 00:00:00"]),
    ],
)
def test_cron_fires_at(expr: str, after: str, expected: list[str]) -> None:
    assert fires(expr, after, len(expected)) == expected


def test_next_after_is_strict_and_accepts_any_zone() -> None:
    sched = parse_schedule("0 0 * * * *")
    assert sched is not None
    assert sched.next_after(utc("2026-01-01T10:00:00")) == utc("2026-01-01T11:00:00")
    assert sched.next_after(utc("2026-01-01T09:59:59.999999")) == utc("2026-01-01T10:00:00")
    tokyo = datetime(2026, 1, 1, 19, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 10:00Z
    result = sched.next_after(tokyo)
    assert result == utc("2026-01-01T11:00:00")
    assert result is not None
    assert result.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        sched.next_after(datetime(2026, 1, 1))


def test_descriptors_and_cron_are_evaluated_in_the_zone() -> None:
    # Midnight in Tokyo (+09) is 15:00Z the day before; Dkron would fire at midnight UTC.
    assert fires("@daily", "2026-05-05 00:00:00", 2, "Asia/Tokyo") == ["2026-05-05 15:00:00", "2026-05-06 15:00:00"]
    assert fires("0 30 9 * * *", "2026-05-05 00:00:00", 1, "America/New_York") == ["2026-05-05 13:30:00"]


@pytest.mark.parametrize("prefix", ["TZ", "CRON_TZ"])
def test_zone_prefix_overrides_the_timezone(prefix: str) -> None:
    sched = parse_schedule(f"{prefix}=Asia/Tokyo 0 0 6 * * *", "Europe/Berlin")
    assert sched is not None
    assert sched.timezone == "Asia/Tokyo"
    assert sched.expr == f"{prefix}=Asia/Tokyo 0 0 6 * * *"
    assert sched.next_after(utc("2026-05-05T00:00:00")) == utc("2026-05-05T21:00:00")


def test_timezone_defaults_to_utc() -> None:
    sched = parse_schedule("0 0 6 * * *")
    assert sched is not None
    assert sched.timezone == ""
    assert sched.next_after(utc("2026-05-05T00:00:00")) == utc("2026-05-05T06:00:00")


# ---------------------------------------------------------------------------------------------- hash


# Dkron's `~` for 20 names across the six positions, as Dkron v4.1.2 computes it (dkron/job.go: the sum of the
# name's code points; positions 0-1 mod 60, 2 mod 24, 3 mod 28 + 1, 4 mod 12 + 1, 5 mod 7).
DKRON_TILDE = [
    ("test_job", 858, "18 18 18 19 7 4"),
    ("backup", 630, "30 30 6 15 7 0"),
    ("etl", 325, "25 25 13 18 2 3"),
    ("cleanup", 744, "24 24 0 17 1 2"),
    ("café", 531, "51 51 3 28 4 6"),
    ("report-daily", 1244, "44 44 20 13 9 5"),
    ("a", 97, "37 37 1 14 2 6"),
    ("z", 122, "2 2 2 11 3 3"),
    ("job1", 364, "4 4 4 1 5 0"),
    ("nightly-backup", 1442, "2 2 2 15 3 0"),
    ("ßñëäïüøáéíóýćàèìòùâêîôûæšłç", 6632, "32 32 8 25 9 3"),
    ("db_vacuum", 950, "50 50 14 27 3 5"),
    ("-", 45, "45 45 21 18 10 3"),
    ("9", 57, "57 57 9 2 10 1"),
    ("payments-reconcile", 1874, "14 14 2 27 3 5"),
    ("ωμέγα", 4758, "18 18 6 27 7 5"),
    ("x_y_z", 553, "13 13 1 22 2 0"),
    ("kafka-to-s3", 993, "33 33 9 14 10 6"),
    ("web-01", 460, "40 40 4 13 5 5"),
    ("ünïcode-job", 1372, "52 52 4 1 5 0"),
]


@pytest.mark.parametrize(("name", "code_points", "values"), DKRON_TILDE)
def test_tilde_is_dkrons_value_at_every_position(name: str, code_points: int, values: str) -> None:
    assert sum(ord(c) for c in name) == code_points
    assert dkron_hash("~ ~ ~ ~ ~ ~", name) == values
    sched = parse_schedule("~ ~ ~ ~ ~ ~", job_name=name)  # the replaced spec is what runs
    again = parse_schedule(values)
    assert sched is not None and again is not None
    after = utc("2026-01-01T00:00:00")
    assert sched.next_after(after) == again.next_after(after)


def test_tilde_examples_match_dkron() -> None:
    assert fires("0 0 ~ * * *", "2026-01-01 00:00:00", 1, job_name="test_job") == ["2026-01-01 18:00:00"]
    # Textual, as Dkron: `~/15` with 25 is `25/15`, so :25, :40, :55 (three runs an hour).
    assert fires("0 ~/15 * * * *", "2026-01-01 00:00:00", 4, job_name="etl") == [
        "2026-01-01 00:25:00", "2026-01-01 00:40:00", "2026-01-01 00:55:00", "2026-01-01 01:25:00",
    ]  # fmt: skip
    assert dkron_hash("TZ=Europe/Berlin 0 ~ ~ * * *", "report-daily") == "TZ=Europe/Berlin 0 44 20 * * *"
    assert dkron_hash("CRON_TZ=UTC 0 0 0 * * ~", "cleanup") == "CRON_TZ=UTC 0 0 0 * * 2"  # Tuesdays
    assert dkron_hash("0  ~ * * * *", "backup") == "0  6 * * * *"  # split on single spaces: '' is a position
    assert dkron_hash("@every ~", "backup") == "@every ~"  # a descriptor is left alone (and then refused)
    with pytest.raises(ScheduleError):
        parse_schedule("@every ~", job_name="backup")


def test_tilde_in_a_five_field_spec_is_hashed_as_if_the_seconds_came_first() -> None:
    assert dkron_hash("~ ~ ~ ~ ~", "test_job") == "18 18 19 7 4"  # minute mod 60, hour mod 24, ...
    assert fires("~ ~ * * *", "2026-01-01 00:00:00", 1, job_name="test_job") == ["2026-01-01 18:18:00"]


def test_h_hash_is_stable_and_pinned() -> None:
    # crc32 of the job name and field: every scheduler process, in any Python, agrees (hash() would not).
    assert fires("0 H * * * *", "2026-01-01 00:00:00", 2, job_name="backup") == [
        "2026-01-01 00:50:00",
        "2026-01-01 01:50:00",
    ]
    assert fires("H H * * *", "2026-01-01 00:00:00", 2, job_name="backup") == [
        "2026-01-01 00:50:00",
        "2026-01-02 00:50:00",
    ]


def test_h_hash_spreads_jobs_across_the_field() -> None:
    minutes = set()
    for i in range(1000):
        sched = parse_schedule("0 H * * * *", job_name=f"job-{i}")
        assert sched is not None
        t = sched.next_after(utc("2026-01-01T00:00:00"))
        assert t is not None
        minutes.add(t.minute)
    assert len(minutes) == 60


@pytest.mark.parametrize(
    ("expr", "count", "lo", "hi", "step"),
    [
        ("H/15 * * * *", 4, 0, 59, 15),  # the offset within the step is hashed
        ("H(0-29) * * * *", 1, 0, 29, 0),
        ("H(0-29)/10 * * * *", 3, 0, 29, 10),
    ],
)
def test_hash_forms(expr: str, count: int, lo: int, hi: int, step: int) -> None:
    offsets = set()
    for name in ("a", "b", "backup", "report-2", "x1", "x2"):
        ts = fires(expr, "2026-01-01 00:00:00", 8, job_name=name)
        minutes = sorted({int(t[14:16]) for t in ts})
        assert len(minutes) == count, (name, minutes)
        assert lo <= minutes[0] and minutes[-1] <= hi, (name, minutes)
        assert all(b - a == step for a, b in itertools.pairwise(minutes)), (name, minutes)
        offsets.add(minutes[0])
    assert len(offsets) > 1  # different jobs land on different values


def test_hash_step_wider_than_the_field_still_fires() -> None:
    for i in range(100):
        a, b = fires("0 H/90 * * * *", "2026-01-01 00:00:00", 2, job_name=f"job-{i}")
        assert utc(b) - utc(a) == timedelta(hours=1)  # once an hour, at the hashed minute


def test_hashed_day_of_month_fires_every_month() -> None:
    for i in range(200):
        ts = fires("0 0 0 H * *", "2026-01-31 00:00:00", 1, job_name=f"job-{i}")
        assert ts[0].startswith("2026-02-"), ts


# -------------------------------------------------------------------------------------- every, at


def test_every_is_anchored_to_the_anchor() -> None:
    anchor = utc("2026-01-01T00:00:07.500")  # truncated to the second
    sched = parse_schedule("@every 1h30m", anchor=anchor)
    assert sched is not None
    assert sched.next_after(utc("2026-01-01T00:00:00")) == utc("2026-01-01T00:00:07")
    assert sched.next_after(utc("2026-01-01T00:00:07")) == utc("2026-01-01T01:30:07")
    assert sched.next_after(utc("2026-01-02T00:00:07")) == utc("2026-01-02T01:30:07")  # 24h = 16 intervals


def test_every_defaults_to_the_epoch_and_ignores_the_zone() -> None:
    sched = parse_schedule("@every 90s", "Europe/Berlin")
    assert sched is not None
    assert sched.next_after(utc("2026-01-01T00:00:00")) == utc("2026-01-01T00:01:30")
    assert parse_schedule("@every 1s") is not None


def test_at_fires_once() -> None:
    sched = parse_schedule("@at 2027-01-01T01:00:00+01:00")
    assert sched is not None
    assert sched.next_after(utc("2026-01-01T00:00:00")) == utc("2027-01-01T00:00:00")
    assert sched.next_after(utc("2027-01-01T00:00:00")) is None
    frac = parse_schedule("@at 2027-01-01T00:00:00.123456789Z")
    assert frac is not None
    assert frac.next_after(utc("2026-01-01T00:00:00")) == utc("2027-01-01T00:00:00.123456")


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("expr", "timezone", "message"),
    [
        ("0 61 * * * *", "", "invalid schedule '0 61 * * * *': minute field '61' out of range 0-59"),
        ("60 * * * * *", "", "second field '60' out of range 0-59"),
        ("0 0 24 * * *", "", "hour field '24' out of range 0-23"),
        ("0 0 0 0 * *", "", "day-of-month field '0' out of range 1-31"),
        ("0 0 0 * 13 *", "", "month field '13' out of range 1-12"),
        ("0 0 0 * * 8", "", "day-of-week field '8' out of range 0-7"),
        ("0 1,61 * * * *", "", "minute field '1,61' value '61' out of range 0-59"),
        ("0 5-1 * * * *", "", "minute field '5-1' has a reversed range 5-1"),
        ("0 */0 * * * *", "", "minute field '*/0' has a step of 0"),
        ("0 1,,2 * * * *", "", "minute field '1,,2' has an empty list item"),
        ("0 0 0 * * L", "", "day-of-week field 'L' has an unknown value 'L'"),
        ("0 0 0 * FOO *", "", "month field 'FOO' has an unknown value 'FOO'"),
        ("0 0 0 * * MON#2", "", "day-of-week field 'MON#2' has invalid syntax"),
        ("* * * *", "", "expected 5 or 6 fields"),
        ("* * * * * * *", "", "expected 5 or 6 fields"),
        ("0 0 * * * *", "Mars/Base", "unknown time zone 'Mars/Base'"),
        ("TZ=Mars/Base 0 0 * * * *", "", "unknown time zone 'Mars/Base'"),
        ("0 0 * * * *", "America", "unknown time zone 'America'"),
        ("0 0 * * * *", "../etc/passwd", "unknown time zone '../etc/passwd'"),
        ("TZ=Europe/Berlin", "", "nothing after the time zone prefix"),
        ("0 0 0 30 2 *", "", "schedule '0 0 0 30 2 *' never fires"),
        ("0 0 0 31 4,6,9,11 *", "", "never fires"),
        ("@every 500ms", "", "@every interval must be at least 1s (got 500ms)"),
        ("@every 1x", "", "invalid schedule '@every 1x': invalid duration '1x'"),
        ("@every", "", "invalid duration ''"),
        ("@fortnightly", "", "unknown descriptor '@fortnightly'"),
        ("@daily 5", "", "unknown descriptor"),
        ("@at 2027-01-01", "", "@at needs an RFC 3339 time"),
        ("@at 2027-01-01T00:00:00", "", "@at needs an RFC 3339 time"),
        ("@at 2027-02-30T00:00:00Z", "", "@at time '2027-02-30T00:00:00Z'"),
    ],
)
def test_invalid_schedules_are_rejected_with_the_reason(expr: str, timezone: str, message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(expr, timezone)
    assert message in str(info.value)
    assert isinstance(info.value, ValidationError)


def test_never_fires_check_accepts_dow_alternatives() -> None:
    # With a weekday restricted too, "Feb 30 or a Monday in February" fires on February's Mondays.
    assert fires("0 0 0 30 2 MON", "2026-01-01 00:00:00", 2) == ["2026-02-02 00:00:00", "2026-02-09 00:00:00"]


def test_schedules_are_immutable_and_cached() -> None:
    sched = parse_schedule("0 0 * * * *", "Europe/Berlin")
    assert isinstance(sched, Schedule)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sched.expr = "x"  # type: ignore[misc]
    assert parse_schedule("0 0 * * * *", "Europe/Berlin") is sched


# --------------------------------------------------------------------------------------- job helpers


def test_next_fires_respects_starts_and_expires() -> None:
    job = Job(starts_at=utc("2026-01-01T05:00:00"), expires_at=utc("2026-01-01T08:00:00"))
    got = next_fires(job, utc("2026-01-01T00:00:00"), 10)
    assert got == [utc(f"2026-01-01T0{h}:00:00") for h in (5, 6, 7, 8)]
    assert next_fires(job, utc("2026-01-01T06:00:00"), 1) == [utc("2026-01-01T07:00:00")]
    assert next_fires(job, utc("2026-01-01T08:00:00"), 5) == []


def test_next_fires_caps_the_count_and_handles_empty() -> None:
    assert len(next_fires(Job(schedule="* * * * * *"), utc("2026-01-01T00:00:00"), 5000)) == 1000
    assert next_fires(Job(schedule="* * * * * *"), utc("2026-01-01T00:00:00"), 0) == []
    assert next_fires(Job(schedule=""), utc("2026-01-01T00:00:00"), 5) == []
    assert next_fires(Job(schedule="@manually"), utc("2026-01-01T00:00:00"), 5) == []


def test_next_fires_uses_the_job_zone_name_and_creation_time() -> None:
    job = Job(name="backup", schedule="@every 1h", created_at=utc("2026-01-01T00:20:00"))
    assert next_fires(job, utc("2026-01-01T03:00:00"), 1) == [utc("2026-01-01T03:20:00")]
    hashed = Job(name="backup", schedule="0 H * * * *", timezone="Asia/Kolkata")  # +05:30
    assert next_fires(hashed, utc("2026-01-01T00:00:00"), 1) == [utc("2026-01-01T00:20:00")]
    with pytest.raises(ScheduleError):
        next_fires(Job(schedule="bogus"), utc("2026-01-01T00:00:00"), 1)


def test_slots_between_is_half_open_and_limited() -> None:
    job = Job(schedule="0 */15 * * * *")
    got = slots_between(job, utc("2026-01-01T00:00:00"), utc("2026-01-01T01:00:00"), 100)
    assert got == [utc(f"2026-01-01T00:{m}:00") for m in ("15", "30", "45")] + [utc("2026-01-01T01:00:00")]
    assert slots_between(job, utc("2026-01-01T00:00:00"), utc("2026-01-01T01:00:00"), 2) == got[:2]
    assert slots_between(job, utc("2026-01-01T00:00:00"), utc("2026-01-01T00:14:59"), 100) == []
    bounded = Job(schedule="0 */15 * * * *", expires_at=utc("2026-01-01T00:30:00"))
    assert slots_between(bounded, utc("2026-01-01T00:00:00"), utc("2026-01-02T00:00:00"), 100) == got[:2]


def test_results_are_utc() -> None:
    sched = parse_schedule("0 0 9 * * *", "Asia/Tokyo")
    assert sched is not None
    result = sched.next_after(datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-3))))
    assert result is not None
    assert result.tzinfo is UTC


# ---------------------------------------------------------------------------------------------- @after


def test_after_fires_once_at_its_time_with_dkrons_or_a_plain_grace() -> None:
    for grace in ("<PT1H", "PT1H"):
        sched = parse_schedule(f"@after 2027-01-01T00:00:00Z {grace}")
        assert isinstance(sched, AfterSchedule)
        assert sched.grace == timedelta(hours=1)
        assert sched.next_after(utc("2026-12-31T00:00:00")) == utc("2027-01-01T00:00:00")
        assert sched.next_after(utc("2027-01-01T00:00:00")) is None
    assert parse_schedule("@after 2027-01-01T01:00:00+01:00 <P1Y2M3DT4H5M6.5S").grace == timedelta(  # type: ignore[union-attr]
        days=365 + 60 + 3, hours=4, minutes=5, seconds=6.5
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("@after 2027-01-01T00:00:00Z", "needs a time and a grace period"),
        ("@after 2027-01-01T00:00:00Z <PT1H extra", "needs a time and a grace period"),
        ("@after tomorrow <PT1H", "needs an RFC 3339 time"),
        ("@after 2027-01-01T00:00:00 <PT1H", "needs an RFC 3339 time"),  # an offset is required, as in Dkron
        ("@after 2027-01-01T00:00:00Z <P2H", "'P2H' is not an ISO 8601 duration"),
        ("@after 2027-01-01T00:00:00Z <", "'' is not an ISO 8601 duration"),
        ("@after 2027-01-01T00:00:00Z <PT", "'PT' is not an ISO 8601 duration"),
        ("@after 2027-01-01T00:00:00Z <PT0S", "'PT0S' must be more than zero"),
        ("@after 2027-01-01T00:00:00Z <pt1h", "is not an ISO 8601 duration"),
    ],
)
def test_after_refuses_what_is_malformed_with_the_reason(spec: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(spec)


@dataclass
class _AfterJob:
    schedule: str = "@after 2027-01-01T00:00:00Z <PT1H"
    name: str = "once"
    timezone: str = ""
    created_at: datetime | None = None
    starts_at: datetime | None = None
    expires_at: datetime | None = None
    misfire_policy: str = "run_once"
    catchup_window: str = "1h"


def test_an_after_job_late_within_its_grace_runs_once_then_never_again() -> None:
    job = _AfterJob()
    at = utc("2027-01-01T00:00:00")
    assert plan_late(job, None, utc("2026-12-31T23:59:59")).run == []  # not due: the planner fires it on time
    assert plan_late(job, None, at).run == [at]
    assert plan_late(job, None, utc("2027-01-01T00:59:59")).run == [at]
    assert plan_late(job, utc("2026-06-01T00:00:00"), utc("2027-01-01T00:30:00")).run == [at]
    assert plan_late(job, at, utc("2027-01-01T00:30:00")) == plan_late(job, at, at)  # ran: nothing more
    assert plan_late(job, at, at).run == [] and plan_late(job, at, at).missed == []
    past = plan_late(job, None, utc("2027-01-01T01:00:01"))
    assert past.run == [] and past.missed == [(at, "past its @after grace period of 1h0m0s")]
    # The catch-up of other schedules leaves an @after fire to plan_late, whatever its catchup_window.
    assert plan_catchup(job, utc("2026-06-01T00:00:00"), utc("2027-01-01T00:30:00")).run == []
    assert plan_late(_AfterJob(schedule="0 * * * * *"), None, at).run == []
