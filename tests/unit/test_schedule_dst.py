"""DST rules of docs/semantics.md §2, pinned with exact instants: gap times shift once, repeated times fire once.

Fixed-hour schedules: a wall time in a spring-forward gap fires once at the first instant after the gap; a
wall time that happens twice fires at its first occurrence only. Wildcard/step-hour schedules fire at every
real instant that matches. Each case lists the expected fires in UTC with the local time alongside.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from cronbus.common.schedule import parse_schedule

# (zone, expression, after (UTC), [(expected fire in UTC, its local wall time for the reader)])
CASES: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    # --- Europe/Berlin, spring forward 2026-03-29: 02:00 CET -> 03:00 CEST at 01:00Z
    (
        "Europe/Berlin",
        "0 30 2 * * *",
        "2026-03-28T00:00",
        [("2026-03-28T01:30", "02:30+01"), ("2026-03-29T01:00", "03:00+02 (gap)"), ("2026-03-30T00:30", "02:30+02")],
    ),
    (
        "Europe/Berlin",
        "0 0,15,30,45 2 * * *",
        "2026-03-28T23:00",
        [("2026-03-29T01:00", "03:00+02 (four gap times, once)"), ("2026-03-30T00:00", "02:00+02")],
    ),
    (
        "Europe/Berlin",
        "0 */30 * * * *",
        "2026-03-29T00:00",
        [("2026-03-29T00:30", "01:30+01"), ("2026-03-29T01:00", "03:00+02"), ("2026-03-29T01:30", "03:30+02")],
    ),
    (
        "Europe/Berlin",
        "0 30 * * * *",
        "2026-03-29T00:00",
        [("2026-03-29T00:30", "01:30+01"), ("2026-03-29T01:30", "03:30+02 (02:30 skipped)")],
    ),
    # --- Europe/Berlin, fall back 2026-10-25: 03:00 CEST -> 02:00 CET at 01:00Z
    (
        "Europe/Berlin",
        "0 30 2 * * *",
        "2026-10-24T12:00",
        [("2026-10-25T00:30", "02:30+02 (first only)"), ("2026-10-26T01:30", "02:30+01")],
    ),
    (
        "Europe/Berlin",
        "0 */30 2 * * *",
        "2026-10-24T23:00",
        [("2026-10-25T00:00", "02:00+02"), ("2026-10-25T00:30", "02:30+02"), ("2026-10-26T01:00", "02:00+01")],
    ),
    (
        "Europe/Berlin",
        "0 */30 * * * *",
        "2026-10-25T00:00",
        [
            ("2026-10-25T00:30", "02:30+02"),
            ("2026-10-25T01:00", "02:00+01"),
            ("2026-10-25T01:30", "02:30+01"),
            ("2026-10-25T02:00", "03:00+01"),
        ],
    ),
    (
        "Europe/Berlin",
        "@hourly",
        "2026-10-24T23:30",
        [("2026-10-25T00:00", "02:00+02"), ("2026-10-25T01:00", "02:00+01"), ("2026-10-25T02:00", "03:00+01")],
    ),
    # asked from inside the second pass: the first 02:45 already happened
    ("Europe/Berlin", "0 45 2 * * *", "2026-10-25T01:10", [("2026-10-26T01:45", "02:45+01")]),
    ("Europe/Berlin", "0 45 * * * *", "2026-10-25T01:10", [("2026-10-25T01:45", "02:45+01")]),
    # --- America/New_York, spring forward 2026-03-08: 02:00 EST -> 03:00 EDT at 07:00Z
    (
        "America/New_York",
        "30 2 * * *",
        "2026-03-07T00:00",
        [("2026-03-07T07:30", "02:30-05"), ("2026-03-08T07:00", "03:00-04 (gap)"), ("2026-03-09T06:30", "02:30-04")],
    ),
    (
        "America/New_York",
        "*/20 * * * *",
        "2026-03-08T06:30",
        [("2026-03-08T06:40", "01:40-05"), ("2026-03-08T07:00", "03:00-04"), ("2026-03-08T07:20", "03:20-04")],
    ),
    # --- America/New_York, fall back 2026-11-01: 02:00 EDT -> 01:00 EST at 06:00Z
    (
        "America/New_York",
        "30 1 * * *",
        "2026-10-31T12:00",
        [("2026-11-01T05:30", "01:30-04 (first only)"), ("2026-11-02T06:30", "01:30-05")],
    ),
    (
        "America/New_York",
        "*/30 * * * *",
        "2026-11-01T05:00",
        [
            ("2026-11-01T05:30", "01:30-04"),
            ("2026-11-01T06:00", "01:00-05"),
            ("2026-11-01T06:30", "01:30-05"),
            ("2026-11-01T07:00", "02:00-05"),
        ],
    ),
    (
        "America/New_York",
        "@daily",
        "2026-10-31T12:00",
        [("2026-11-01T04:00", "00:00-04"), ("2026-11-02T05:00", "00:00-05")],
    ),
    # --- Australia/Lord_Howe, 30-minute shift. Spring 2026-10-04: 02:00 +10:30 -> 02:30 +11 at 15:30Z (Oct 3)
    (
        "Australia/Lord_Howe",
        "0 15 2 * * *",
        "2026-10-02T12:00",
        [
            ("2026-10-02T15:45", "02:15+10:30"),
            ("2026-10-03T15:30", "02:30+11 (gap)"),
            ("2026-10-04T15:15", "02:15+11"),
        ],
    ),
    (
        "Australia/Lord_Howe",
        "0 30 2 * * *",
        "2026-10-02T12:00",
        [("2026-10-02T16:00", "02:30+10:30"), ("2026-10-03T15:30", "02:30+11 (exists)"), ("2026-10-04T15:30", "")],
    ),
    (
        "Australia/Lord_Howe",
        "*/15 * * * *",
        "2026-10-03T15:00",
        [("2026-10-03T15:15", "01:45+10:30"), ("2026-10-03T15:30", "02:30+11"), ("2026-10-03T15:45", "02:45+11")],
    ),
    # Lord_Howe fall back 2026-04-05: 02:00 +11 -> 01:30 +10:30 at 15:00Z (Apr 4)
    (
        "Australia/Lord_Howe",
        "0 45 1 * * *",
        "2026-04-03T12:00",
        [
            ("2026-04-03T14:45", "01:45+11"),
            ("2026-04-04T14:45", "01:45+11 (first only)"),
            ("2026-04-05T15:15", "01:45+10:30"),
        ],
    ),
    (
        "Australia/Lord_Howe",
        "*/15 * * * *",
        "2026-04-04T14:20",
        [
            ("2026-04-04T14:30", "01:30+11"),
            ("2026-04-04T14:45", "01:45+11"),
            ("2026-04-04T15:00", "01:30+10:30"),
            ("2026-04-04T15:15", "01:45+10:30"),
            ("2026-04-04T15:30", "02:00+10:30"),
        ],
    ),
    # --- America/Santiago: midnight does not exist on 2026-09-06 (00:00 -04 -> 01:00 -03 at 04:00Z)
    (
        "America/Santiago",
        "@daily",
        "2026-09-05T00:00",
        [("2026-09-05T04:00", "00:00-04"), ("2026-09-06T04:00", "01:00-03 (gap)"), ("2026-09-07T03:00", "00:00-03")],
    ),
    (
        "America/Santiago",
        "0 30 0 * * *",
        "2026-09-05T12:00",
        [("2026-09-06T04:00", "01:00-03 (gap)"), ("2026-09-07T03:30", "00:30-03")],
    ),
    (
        "America/Santiago",
        "0 0 * * * *",
        "2026-09-06T02:30",
        [("2026-09-06T03:00", "23:00-04"), ("2026-09-06T04:00", "01:00-03"), ("2026-09-06T05:00", "02:00-03")],
    ),
    # Santiago fall back 2026-04-05: 00:00 -03 -> 23:00 -04 (Apr 4) at 03:00Z; Apr 4 23:xx happens twice
    (
        "America/Santiago",
        "0 30 23 * * *",
        "2026-04-04T12:00",
        [("2026-04-05T02:30", "23:30-03 (first only)"), ("2026-04-06T03:30", "23:30-04")],
    ),
    (
        "America/Santiago",
        "@daily",
        "2026-04-04T00:00",
        [("2026-04-04T03:00", "00:00-03"), ("2026-04-05T04:00", "00:00-04"), ("2026-04-06T04:00", "00:00-04")],
    ),
    (
        "America/Santiago",
        "0 */30 * * * *",
        "2026-04-05T02:00",
        [
            ("2026-04-05T02:30", "23:30-03"),
            ("2026-04-05T03:00", "23:00-04"),
            ("2026-04-05T03:30", "23:30-04"),
            ("2026-04-05T04:00", "00:00-04"),
        ],
    ),
    # --- Asia/Beirut: midnight gap 2026-03-29 (00:00 +02 -> 01:00 +03 at 22:00Z Mar 28)
    (
        "Asia/Beirut",
        "@midnight",
        "2026-03-27T12:00",
        [("2026-03-27T22:00", "00:00+02"), ("2026-03-28T22:00", "01:00+03 (gap)"), ("2026-03-29T21:00", "00:00+03")],
    ),
    (
        "Asia/Beirut",
        "0 0 * * * *",
        "2026-03-28T20:30",
        [("2026-03-28T21:00", "23:00+02"), ("2026-03-28T22:00", "01:00+03"), ("2026-03-28T23:00", "02:00+03")],
    ),
    # Beirut fall back 2026-10-25: 00:00 +03 -> 23:00 +02 (Oct 24) at 21:00Z
    (
        "Asia/Beirut",
        "0 0 23 * * *",
        "2026-10-23T12:00",
        [("2026-10-23T20:00", "23:00+03"), ("2026-10-24T20:00", "23:00+03 (first only)"), ("2026-10-25T21:00", "")],
    ),
    (
        "Asia/Beirut",
        "0 0 * * * *",
        "2026-10-24T19:30",
        [("2026-10-24T20:00", "23:00+03"), ("2026-10-24T21:00", "23:00+02"), ("2026-10-24T22:00", "00:00+02")],
    ),
]


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), CASES, ids=[f"{c[0]} {c[1]} {c[2]}" for c in CASES])
def test_dst_fires_exactly(zone: str, expr: str, after: str, expected: list[tuple[str, str]]) -> None:
    sched = parse_schedule(expr, zone)
    assert sched is not None
    got: list[datetime] = []
    t = _utc(after)
    for _ in expected:
        f = sched.next_after(t)
        assert f is not None
        got.append(f)
        t = f
    assert got == [_utc(instant) for instant, _ in expected]


def test_annotations_match_the_zone() -> None:
    # The local times in the table are checked too, so the comments cannot drift from the instants.
    for zone, _, _, expected in CASES:
        for instant, local in expected:
            if not local:
                continue
            wall = _utc(instant).astimezone(ZoneInfo(zone))
            off = wall.strftime("%z")
            off_text = off[:3] if off[3:] == "00" else f"{off[:3]}:{off[3:]}"
            assert local.split(" ")[0] == f"{wall:%H:%M}{off_text}", (zone, instant, local)


def test_transition_queried_one_second_before_a_gap() -> None:
    sched = parse_schedule("0 30 2 * * *", "Europe/Berlin")
    assert sched is not None
    assert sched.next_after(_utc("2026-03-29T00:59:59")) == _utc("2026-03-29T01:00:00")
    assert sched.next_after(_utc("2026-03-29T01:00:00")) == _utc("2026-03-30T00:30:00")


def test_zone_without_dst_and_far_years() -> None:
    tokyo = parse_schedule("0 0 0 29 2 *", "Asia/Tokyo")
    assert tokyo is not None
    assert tokyo.next_after(_utc("2096-03-01T00:00")) == _utc("2104-02-28T15:00")
    berlin = parse_schedule("0 30 2 * * *", "Europe/Berlin")
    assert berlin is not None
    # Far-future transitions come from the zone's rule; 2300-03-25 is the last Sunday of March.
    assert berlin.next_after(_utc("2300-03-24T12:00")) == _utc("2300-03-25T01:00")
