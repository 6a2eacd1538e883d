"""Property tests for next_after: agreement with croniter in UTC, and a brute-force oracle around DST changes.

The oracle expands fields with croniter (an independent parser) and applies docs/semantics.md §2 minute by minute.
Generated day fields never spell the full range other than as `*`, where croniter and cronbus (like Dkron)
decide differently whether the field counts as restricted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from croniter.croniter import CroniterBadDateError
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cronbus.common.errors import ScheduleError
from cronbus.common.schedule import Schedule, parse_schedule

RANGES = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12), "dow": (0, 6)}
DST_ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Asia/Beirut"]
# 2026 transitions (UTC) of DST_ZONES, both directions.
TRANSITIONS = [
    ("Europe/Berlin", "2026-03-29T01:00"),
    ("Europe/Berlin", "2026-10-25T01:00"),
    ("America/New_York", "2026-03-08T07:00"),
    ("America/New_York", "2026-11-01T06:00"),
    ("Australia/Lord_Howe", "2026-04-04T15:00"),
    ("Australia/Lord_Howe", "2026-10-03T15:30"),
    ("America/Santiago", "2026-04-05T03:00"),
    ("America/Santiago", "2026-09-06T04:00"),
    ("Asia/Beirut", "2026-03-28T22:00"),
    ("Asia/Beirut", "2026-10-24T21:00"),
]


@st.composite
def cron_field(draw: st.DrawFn, name: str) -> str:
    lo, hi = RANGES[name]
    if draw(st.integers(0, 3)) == 0:
        return "*"
    value = st.integers(lo, hi)
    items = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 4))
        a, b = sorted((draw(value), draw(value)))
        # croniter reads a one-value range "a-a" as the whole cycle; cronbus (like Vixie) as just a.
        assume(a < b or kind in (0, 3, 4))
        step = draw(st.integers(2, max(2, hi - lo)))
        items.append([str(a), f"{a}-{b}", f"{a}-{b}/{step}", f"*/{step}", f"{a}/{step}"][kind])
    return ",".join(items)


def _values(text: str, name: str) -> set[int]:
    lo, hi = RANGES[name]
    out: set[int] = set()
    for item in text.split(","):
        body, _, step = item.partition("/")
        if body == "*":
            a, b = lo, hi
        elif "-" in body:
            a, b = (int(x) for x in body.split("-"))
        else:
            a = int(body)
            b = hi if step else a
        out.update(range(a, b + 1, int(step or 1)))
    return out


@st.composite
def cron_expr(draw: st.DrawFn, seconds: bool = True) -> str:
    fields = [draw(cron_field("second")) if seconds else "0"]
    fields += [draw(cron_field(n)) for n in ("minute", "hour", "dom", "month", "dow")]
    for i, name in ((3, "dom"), (5, "dow")):
        # A full range spelled otherwise than "*" is where croniter and Dkron disagree; leave it out.
        assume(fields[i] == "*" or _values(fields[i], name) != set(range(RANGES[name][0], RANGES[name][1] + 1)))
    return " ".join(fields)


def parsed(expr: str, zone: str = "") -> Schedule:
    try:
        sched = parse_schedule(expr, zone)
    except ScheduleError as e:
        assume("never fires" not in str(e))
        raise
    assert sched is not None
    return sched


def wall_matcher(expr: str) -> Callable[[datetime], bool]:
    """Whether a wall-clock time matches `expr`, with fields expanded by croniter."""
    (mins, hours, doms, months, dows, secs), _ = croniter.expand(expr, second_at_beginning=True)

    def as_set(values: Sequence[int | str], lo: int, hi: int) -> set[int]:
        return set(range(lo, hi + 1)) if values == ["*"] else {int(v) % 7 if hi == 6 else int(v) for v in values}

    sets = [as_set(v, *RANGES[n]) for v, n in zip((secs, mins, hours, doms, months, dows), RANGES, strict=True)]
    day_or = doms != ["*"] and dows != ["*"]

    def matches(w: datetime) -> bool:
        if w.second not in sets[0] or w.minute not in sets[1] or w.hour not in sets[2] or w.month not in sets[4]:
            return False
        dom_ok, dow_ok = w.day in sets[3], (w.weekday() + 1) % 7 in sets[5]
        return (dom_ok or dow_ok) if day_or else (dom_ok and dow_ok)

    return matches


def fixed_hour(expr: str) -> bool:
    return not any(c in expr.split()[2] for c in "*/?")


def offset_s(t: datetime, zone: ZoneInfo) -> int:
    off = t.astimezone(zone).utcoffset()
    assert off is not None
    return int(off.total_seconds())


instants = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 1, 1)).map(
    lambda d: d.replace(tzinfo=UTC)
)


@settings(max_examples=200, deadline=None)
@given(expr=cron_expr(), after=instants)
def test_agrees_with_croniter_in_utc(expr: str, after: datetime) -> None:
    sched = parsed(expr)
    it = croniter(expr, after, second_at_beginning=True)
    t = after
    for _ in range(4):
        try:
            expected = it.get_next(datetime)
        except CroniterBadDateError:
            return
        got = sched.next_after(t)
        assert got == expected, (expr, t)
        assert got is not None
        t = got


@settings(max_examples=200, deadline=None)
@given(expr=cron_expr(), after=instants, zone=st.sampled_from([*DST_ZONES, "Asia/Kolkata", "UTC"]))
def test_fires_increase_and_match_in_the_zone(expr: str, after: datetime, zone: str) -> None:
    sched, tz, matches = parsed(expr, zone), ZoneInfo(zone), wall_matcher(expr)
    t = after
    for _ in range(5):
        f = sched.next_after(t)
        assert f is not None
        assert f > t
        assert sched.next_after(f - timedelta(microseconds=1)) == f
        if t + timedelta(seconds=1) < f:  # a start anywhere in between finds the same fire
            assert sched.next_after(t + (f - t) / 2) == f
        wall = f.astimezone(tz)
        if matches(wall):
            assert not (fixed_hour(expr) and wall.fold), "fixed times fire at the first occurrence only"
        else:
            # The documented exception: a fixed time in a spring-forward gap fires when the gap ends.
            before, after_off = offset_s(f - timedelta(seconds=1), tz), offset_s(f, tz)
            assert fixed_hour(expr)
            assert after_off > before
            gap_start = f.replace(tzinfo=None) + timedelta(seconds=before)
            assert any(matches(gap_start + timedelta(seconds=s)) for s in range(after_off - before))
        t = f


@settings(max_examples=120, deadline=None)
@given(
    expr=cron_expr(seconds=False),
    transition=st.sampled_from(TRANSITIONS),
    shift_min=st.integers(-600, 600),
)
def test_matches_brute_force_oracle_around_transitions(expr: str, transition: tuple[str, str], shift_min: int) -> None:
    zone, at = transition
    tz = ZoneInfo(zone)
    sched, matches = parsed(expr, zone), wall_matcher(expr)
    change = datetime.fromisoformat(at).replace(tzinfo=UTC)
    start = change + timedelta(minutes=shift_min) - timedelta(hours=20)
    end = start + timedelta(hours=40)
    expected: set[datetime] = set()
    m = start + timedelta(minutes=1)
    while m <= end:
        wall = m.astimezone(tz)
        if matches(wall) and not (fixed_hour(expr) and wall.fold):
            expected.add(m)
        m += timedelta(minutes=1)
    before, after = offset_s(change - timedelta(seconds=1), tz), offset_s(change, tz)
    if fixed_hour(expr) and after > before and start < change <= end:
        gap_start = change.replace(tzinfo=None) + timedelta(seconds=before)
        if any(matches(gap_start + timedelta(minutes=i)) for i in range((after - before) // 60)):
            expected.add(change)
    got: list[datetime] = []
    t = start
    while (f := sched.next_after(t)) is not None and f <= end:
        got.append(f)
        t = f
    assert got == sorted(expected)


@pytest.mark.parametrize(("zone", "at"), TRANSITIONS)
def test_every_minute_is_one_real_minute_apart_across_transitions(zone: str, at: str) -> None:
    # A dense wildcard schedule through a transition: one real minute apart, never doubled, never skipped.
    sched = parsed("0 * * * * *", zone)
    t = datetime.fromisoformat(at).replace(tzinfo=UTC) - timedelta(hours=12)
    for _ in range(24 * 60):
        f = sched.next_after(t)
        assert f == t + timedelta(minutes=1)
        t = f
