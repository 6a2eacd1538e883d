"""Schedules: parsing cron/descriptor/@every/@at expressions and computing fire times, DST rules included.

Pure logic, no I/O. Every instant returned is a timezone-aware UTC datetime. Cron expressions are matched
over wall-clock fields in the schedule's zone (docs/semantics.md §1, §2):

- a wall time that falls in a spring-forward gap fires once, at the first instant after the gap, when the
  hour field is fixed (``0 30 2 * * *``); when the hour field is a wildcard or a step (``*/15 * * * *``,
  ``0 0 * * * *``) only real instants fire, so gap times are simply absent;
- a wall time that happens twice (fall back) fires once, at its first occurrence, when the hour field is
  fixed; with a wildcard/step hour field it fires at both occurrences (every real instant that matches).

Zone transitions are found by probing ``zoneinfo`` (it exposes no transition list) a year at a time and
cached per zone. A year with two transitions less than six hours apart would be misread; tzdata has none.
"""

from __future__ import annotations

import abc
import functools
import re
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from cronbus.common.errors import DurationError, ScheduleError, ValidationError

__all__ = [
    "MAX_FIRES",
    "AfterSchedule",
    "Catchup",
    "CatchupJob",
    "Schedule",
    "Scheduled",
    "dkron_hash",
    "format_duration",
    "job_fires",
    "next_fires",
    "parse_duration",
    "parse_iso_duration",
    "parse_schedule",
    "plan_catchup",
    "plan_late",
    "slots_between",
]

# --------------------------------------------------------------------------------------------- durations

_NS_PER_UNIT: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign, as Go prints it
    "μs": 1_000,  # U+03BC Greek mu, which Go also accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART: Final = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


@functools.lru_cache(maxsize=4096)  # pure, and the leader asks for the same few durations for every run
def parse_duration(text: str) -> timedelta:
    """Parse a Go duration ("1h30m10s", "90s", "1.5h", "500ms", "-2m"); sub-microsecond parts are dropped.

    Raises DurationError (a ValidationError) naming the text and the problem.
    """
    s = text.strip()
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return timedelta(0)
    if not s:
        raise DurationError(f"invalid duration {text!r}: empty")
    total_ns = 0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        assert m is not None  # every group is optional, so the pattern always matches
        whole, frac, unit = m.group(1), m.group(2) or "", m.group(3)
        if not whole and not frac:
            raise DurationError(f"invalid duration {text!r}: expected a number at {s[pos:]!r}")
        if not unit:
            raise DurationError(f"invalid duration {text!r}: missing unit after {m.group(0)!r}")
        scale = _NS_PER_UNIT.get(unit)
        if scale is None:
            raise DurationError(f"invalid duration {text!r}: unknown unit {unit!r} (use h, m, s, ms, us, ns)")
        total_ns += int(whole or "0") * scale
        if frac:
            total_ns += int(frac) * scale // 10 ** len(frac)
        pos = m.end()
    try:
        return timedelta(microseconds=sign * (total_ns // 1000))
    except OverflowError:
        raise DurationError(f"invalid duration {text!r}: out of range") from None


def format_duration(d: timedelta) -> str:
    """Format like Go's Duration.String: "1h30m0s", "1m30s", "1.5s", "500ms", "0s"."""
    us = d // timedelta(microseconds=1)
    sign = "-" if us < 0 else ""
    us = abs(us)
    if us == 0:
        return "0s"
    if us < 1000:
        return f"{sign}{us}µs"
    if us < 1_000_000:
        return f"{sign}{_decimal(us, 1000)}ms"
    secs, frac = divmod(us, 1_000_000)
    text = f"{secs % 60}" + (f".{frac:06d}".rstrip("0") if frac else "") + "s"
    hours, minutes = secs // 3600, secs // 60 % 60
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0") if frac else str(whole)


# ------------------------------------------------------------------------------------------------ time

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORD: Final = date(1970, 1, 1).toordinal()
_DAY: Final = 86_400
# Searches stay within these years so that date arithmetic a few years either side cannot overflow.
_MIN_YEAR: Final = 2
_MAX_YEAR: Final = 9990
# Longest possible wait between two fires of a valid cron schedule: Feb 29 across 2100 (2096 -> 2104).
_SEARCH_YEARS: Final = 9
_SEARCH_SPAN_S: Final = (_SEARCH_YEARS + 1) * 366 * _DAY
_NEVER: Final = 1 << 62
_PROBE_S: Final = 6 * 3600
_UTC_KEYS: Final = frozenset({"", "UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/GMT", "GMT", "Zulu", "Etc/Zulu"})


def _epoch_s(t: datetime) -> int:
    """Whole seconds since the epoch, floored; `t` must be timezone-aware."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"datetime {t.isoformat()} must be timezone-aware")
    d = t - _EPOCH
    return d.days * _DAY + d.seconds


def _from_epoch(s: int) -> datetime:
    return _EPOCH + timedelta(seconds=s)


def _year_start(year: int) -> int:
    return (date(year, 1, 1).toordinal() - _EPOCH_ORD) * _DAY


_FIRST_S: Final = _year_start(_MIN_YEAR)
_LAST_S: Final = _year_start(_MAX_YEAR)


def _year_of(s: int) -> int:
    return date.fromordinal(s // _DAY + _EPOCH_ORD).year


class _Timeline:
    """UTC offsets and transitions of one zone, probed a year (UTC) at a time and cached."""

    __slots__ = ("_years", "fixed", "zone")

    def __init__(self, zone: ZoneInfo | None) -> None:
        self.zone = zone
        self.fixed: int | None = 0 if zone is None else None  # the offset when the zone never changes
        self._years: dict[int, tuple[int, tuple[tuple[int, int, int], ...]]] = {}

    def _offset(self, s: int) -> int:
        off = _from_epoch(s).astimezone(self.zone).utcoffset()
        assert off is not None  # a ZoneInfo always knows its offset
        return off.days * _DAY + off.seconds

    def year(self, y: int) -> tuple[int, tuple[tuple[int, int, int], ...]]:
        """(offset at the year's start, transitions as (instant, offset before, offset after)) for UTC year y."""
        cached = self._years.get(y)
        if cached is not None:
            return cached
        start, end = _year_start(y), _year_start(y + 1)
        found: list[tuple[int, int, int]] = []
        first = prev_off = self._offset(start)
        prev = start
        while prev < end:
            cur = min(prev + _PROBE_S, end)
            off = self._offset(cur)
            if off != prev_off:
                lo, hi = prev, cur  # offset(lo) == prev_off != offset(hi): bisect to the exact second
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self._offset(mid) == prev_off:
                        lo = mid
                    else:
                        hi = mid
                found.append((hi, prev_off, off))
                prev_off = off
            prev = cur
        result = (first, tuple(found))
        self._years[y] = result
        return result

    def segment(self, s: int) -> tuple[int, int, int, int, int]:
        """(S, p, o, T, q): the offset o holds on [S, T) around instant s; p held before S, q holds from T.

        S is -_NEVER when no transition precedes s within a year; T may be a pseudo-transition (q == o) at
        the end of the probed range.
        """
        y = _year_of(s)
        o, trans = self.year(y)
        start, before = -_NEVER, o
        for t, b, a in trans:
            if t > s:
                return (start, before, o, t, a) if start > -_NEVER else (*self._prev(y, o), o, t, a)
            start, before, o = t, b, a
        if start == -_NEVER:
            start, before = self._prev(y, o)
        nxt = self.year(y + 1)[1]
        if nxt:
            return start, before, o, nxt[0][0], nxt[0][2]
        return start, before, o, _year_start(y + 2), o

    def _prev(self, y: int, o: int) -> tuple[int, int]:
        trans = self.year(y - 1)[1]
        return (trans[-1][0], trans[-1][1]) if trans else (-_NEVER, o)


@functools.cache
def _timeline(key: str) -> _Timeline:
    if key in _UTC_KEYS:
        return _Timeline(None)
    try:
        zone = ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"unknown time zone '{key}'") from None
    return _Timeline(zone)


# ---------------------------------------------------------------------------------------------- schedules


class Schedule(abc.ABC):
    """A parsed, immutable schedule. `expr` is the text it came from; `timezone` the effective zone ("" = UTC)."""

    __slots__ = ()
    expr: str
    timezone: str

    @abc.abstractmethod
    def next_after(self, after: datetime) -> datetime | None:
        """The first fire strictly after `after` (timezone-aware, any zone), in UTC; None if it never fires again.

        Raises ValueError when `after` is naive.
        """


@dataclass(frozen=True, slots=True)
class ManualSchedule(Schedule):
    """`@manually`: runs only when asked to."""

    expr: str
    timezone: str

    def next_after(self, after: datetime) -> datetime | None:
        return None


@dataclass(frozen=True, slots=True)
class AtSchedule(Schedule):
    """`@at <RFC3339>`: one fire at `at`."""

    expr: str
    timezone: str
    at: datetime

    def next_after(self, after: datetime) -> datetime | None:
        _epoch_s(after)  # rejects naive datetimes like the other schedules do
        return self.at if self.at > after else None


@dataclass(frozen=True, slots=True)
class AfterSchedule(Schedule):
    """`@after <RFC3339> <ISO 8601 duration>` (Dkron 4.1.1): one fire at `at`; if the job reaches a leader only
    once `at` has passed (created or edited late, or the leader was down), it runs once as soon as it can, until
    `at + grace`. next_after() gives the fire on time; late() says whether a late run is still allowed."""

    expr: str
    timezone: str
    at: datetime
    grace: timedelta

    def next_after(self, after: datetime) -> datetime | None:
        _epoch_s(after)
        return self.at if self.at > after else None

    def late(self, now: datetime) -> bool:
        """Whether `now` is past the fire but within the grace period."""
        return self.at <= now <= self.at + self.grace


@dataclass(frozen=True, slots=True)
class EverySchedule(Schedule):
    """`@every <duration>`: fires at anchor + k * interval (any integer k), in real time, whatever the zone."""

    expr: str
    timezone: str
    interval: timedelta
    anchor: datetime

    def next_after(self, after: datetime) -> datetime | None:
        _epoch_s(after)
        k = (after - self.anchor) // self.interval + 1
        try:
            return self.anchor + k * self.interval
        except OverflowError:
            return None


@dataclass(frozen=True, slots=True)
class CronSchedule(Schedule):
    """A cron expression as bitmasks over wall-clock fields, matched in `timezone` under the DST rules above.

    `day_masks[w]` holds the matching days (bits 1-31) of a month whose first day has cron weekday w, so the
    day-of-month / day-of-week combination (either matches when both are restricted) is folded in once.
    `fixed_hour` selects the fixed-time DST rules (gap times shift, repeated times fire once).
    """

    expr: str
    timezone: str
    seconds: int
    minutes: int
    hours: int
    months: int
    day_masks: tuple[int, ...]
    fixed_hour: bool
    _timeline: _Timeline = field(repr=False, compare=False)

    def next_after(self, after: datetime) -> datetime | None:
        # Fires are on whole seconds, so the first candidate is the next whole second.
        t = max(_epoch_s(after) + 1, _FIRST_S)
        tl = self._timeline
        if tl.fixed is not None:
            w = self._first_wall(t + tl.fixed, _NEVER) if t < _LAST_S else -1
            return None if w < 0 else _from_epoch(w - tl.fixed)
        fixed = self.fixed_hour
        stop = min(t + _SEARCH_SPAN_S, _LAST_S)
        while t < stop:
            start, before, o, end, _ = tl.segment(t)
            # A gap opened at `start`: fixed wall times inside it fire once, at the instant the gap ends.
            if fixed and t == start and o > before and self._first_wall(start + before, start + o) >= 0:
                return _from_epoch(start)
            lo = t + o
            if fixed and before > o:
                # Clocks went back at `start`: wall times before start+before already fired (first occurrence).
                lo = max(lo, start + before)
            w = self._first_wall(lo, end + o)
            if w >= 0:
                return _from_epoch(w - o)
            t = end
        return None

    def _first_wall(self, ws: int, limit: int) -> int:
        """The first matching wall-clock second (seconds since the epoch, as if UTC) in [ws, limit), or -1."""
        months, day_masks = self.months, self.day_masks
        days, tod = divmod(ws, _DAY)
        first = date.fromordinal(days + _EPOCH_ORD)
        y, mo, d = first.year, first.month, first.day
        h, tod = divmod(tod, 3600)
        mi, s = divmod(tod, 60)
        y_stop = min(y + _SEARCH_YEARS, _MAX_YEAR)
        while y <= y_stop:
            if not (months >> mo) & 1:
                mo = _next_bit(months, mo)
                if mo < 0:
                    y += 1
                    mo = _next_bit(months, 1)
                d = h = mi = s = 0
                continue
            month_ord = date(y, mo, 1).toordinal()
            n = _DAYS_IN_MONTH[mo] + (mo == 2 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0))
            nd = _next_bit(day_masks[month_ord % 7] & ((2 << n) - 2), d)
            if nd < 0:
                mo += 1
                if mo > 12:
                    y, mo = y + 1, 1
                d = h = mi = s = 0
                continue
            if nd != d:
                d, h, mi, s = nd, 0, 0, 0
            t = self._first_time(h, mi, s)
            if t < 0:
                d, h, mi, s = d + 1, 0, 0, 0
                continue
            w = (month_ord + d - 1 - _EPOCH_ORD) * _DAY + t
            return w if w < limit else -1
        return -1

    def _first_time(self, h: int, mi: int, s: int) -> int:
        """The first matching second of the day at or after h:mi:s, or -1."""
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        while True:
            nh = _next_bit(hours, h)
            if nh < 0:
                return -1
            if nh != h:
                h, mi, s = nh, 0, 0
            nm = _next_bit(minutes, mi)
            if nm < 0:
                h, mi, s = h + 1, 0, 0
                continue
            if nm != mi:
                mi, s = nm, 0
            ns = _next_bit(seconds, s)
            if ns < 0:
                mi, s = mi + 1, 0
                continue
            return h * 3600 + mi * 60 + ns


def _next_bit(mask: int, x: int) -> int:
    """The lowest set bit position >= x, or -1."""
    m = mask >> x
    return x + (m & -m).bit_length() - 1 if m else -1


_DAYS_IN_MONTH: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MAX_DAYS: Final = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# ------------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: tuple[str, ...] = ()  # names[i] stands for lo + i
    hash_hi: int = -1  # upper bound for a bare hash, when narrower than hi
    open_hi: int = -1  # where "*" and "a/s" end, when before hi


_FIELDS: Final = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    # A hashed day stays within 1-28 so that the job fires every month.
    _Field("day-of-month", 1, 31, hash_hi=28),
    _Field("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    # 7 is Sunday too, folded to 0 after parsing; like Dkron, "*", "a/s" and hashes stop at 6 (1/2 = 1,3,5).
    _Field("day-of-week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), hash_hi=6, open_hi=6),
)
_DESCRIPTORS: Final = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
    "@minutely": "0 * * * * *",
}
_TZ_PREFIX: Final = re.compile(r"(?:CRON_)?TZ=(\S*)\s*(.*)", re.DOTALL)
_HASH: Final = re.compile(r"H(?:\(([A-Z0-9]+)-([A-Z0-9]+)\))?(?:/([0-9]+))?", re.I)
# Dkron's `~`: the value of a field at a position (0 = seconds) from the sum of the job name's code points.
_DKRON_HASH_MOD: Final = {2: (24, 0), 3: (28, 1), 4: (12, 1), 5: (7, 0)}  # position -> (modulus, offset)
_ISO_DURATION: Final = re.compile(
    r"P(?:([0-9]+)Y)?(?:([0-9]+)M)?(?:([0-9]+)D)?(?:T(?:([0-9]+)H)?(?:([0-9]+)M)?(?:([0-9]+(?:\.[0-9]+)?)S)?)?"
)
_RANGE: Final = re.compile(r"(\*|\?|[A-Z0-9]+)(?:-([A-Z0-9]+))?(?:/([0-9]+))?", re.I)
_RFC3339: Final = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_UNRESTRICTED: Final = re.compile(r"[*?](?:/1)?")


class _FieldError(Exception):
    """A field is invalid; the message completes "<name> field '<text>' ...", `token` is the bad value if any."""

    def __init__(self, message: str, token: str = "") -> None:
        super().__init__(message)
        self.token = token


def parse_schedule(
    expr: str, timezone: str = "", *, job_name: str = "", anchor: datetime | None = None
) -> Schedule | None:
    """Parse a schedule (docs/semantics.md §1); "" gives None (allowed only for child jobs, which the caller checks).

    `timezone` is the job's zone ("" = UTC), overridden by a `TZ=`/`CRON_TZ=` prefix. `job_name` seeds the
    hashes: `~` is Dkron's (dkron_hash), `H` cronbus's spread. `anchor` is the phase of `@every` (the job's
    creation time, truncated to the second; default the epoch). Raises ScheduleError naming the bad part and
    why, including for a schedule that can never fire. Results are cached: parsing the same arguments again is cheap.
    """
    return _parse(expr, timezone, job_name, anchor)


def dkron_hash(spec: str, job_name: str) -> str:
    """The spec with every `~` replaced as Dkron replaces it, so a migrated job keeps its times (docs/semantics.md,
    "Hashes"): the value is the sum of the Unicode code points of the job name, taken mod 60 at positions 0 and 1
    (seconds, minutes), mod 24 at 2 (hour), mod 28 plus 1 at 3 (day of month), mod 12 plus 1 at 4 (month), mod 7
    at 5 (day of week). Like Dkron: the spec is split on single spaces (an empty part is a position too), a
    `TZ=`/`CRON_TZ=` part is not a position, a spec with an `@` part is left alone, and the replacement is
    textual (`~/15` with the value 25 is `25/15`). A 5-field spec (cronbus's, no seconds) is hashed as if the
    seconds field came first: the minute at position 1, and so on."""
    if "~" not in spec:
        return spec
    parts = spec.split(" ")
    if any(part.startswith("@") for part in parts):
        return spec
    total = sum(ord(c) for c in job_name)
    fields = [p for p in parts if p and not p.startswith(("TZ=", "CRON_TZ="))]
    position = 1 if len(fields) == 5 else 0
    out = []
    for part in parts:
        if part.startswith(("TZ=", "CRON_TZ=")):
            out.append(part)
            continue
        modulus, offset = _DKRON_HASH_MOD.get(position, (60, 0))
        out.append(part.replace("~", str(total % modulus + offset)))
        position += 1
    return " ".join(out)


@functools.lru_cache(maxsize=16_384)
def _parse(expr: str, timezone: str, job_name: str, anchor: datetime | None) -> Schedule | None:
    text = dkron_hash(expr, job_name).strip()
    if not text:
        return None
    zone = timezone.strip()
    prefix = _TZ_PREFIX.fullmatch(text)
    if prefix:
        zone, text = prefix.group(1), prefix.group(2).strip()
        if not zone:
            raise ScheduleError(f"invalid schedule '{expr}': empty time zone in prefix")
        if not text:
            raise ScheduleError(f"invalid schedule '{expr}': nothing after the time zone prefix")
    timeline = _timeline(zone)  # validates the zone for every kind of schedule
    if text.startswith("@"):
        return _parse_descriptor(expr, zone, text, job_name, anchor, timeline)
    return _parse_cron(expr, zone, text, job_name, timeline)


def _parse_descriptor(
    expr: str, zone: str, text: str, job_name: str, anchor: datetime | None, timeline: _Timeline
) -> Schedule:
    """A schedule that starts with "@" (`text`, after any time zone prefix)."""
    word, _, arg = text.partition(" ")
    word, arg = word.lower(), arg.strip()
    if word == "@manually" and not arg:
        return ManualSchedule(expr, zone)
    if word == "@every":
        return _parse_every(expr, zone, arg, anchor)
    if word == "@at":
        return AtSchedule(expr, zone, _parse_rfc3339(expr, arg))
    if word == "@after":
        return _parse_after(expr, zone, arg)
    if word in _DESCRIPTORS and not arg:
        return _parse_cron(expr, zone, _DESCRIPTORS[word], job_name, timeline)
    raise ScheduleError(f"invalid schedule '{expr}': unknown descriptor '{text}'")


def _parse_every(expr: str, zone: str, arg: str, anchor: datetime | None) -> EverySchedule:
    try:
        interval = parse_duration(arg)
    except DurationError as e:
        raise ScheduleError(f"invalid schedule '{expr}': {e}") from None
    if interval < timedelta(seconds=1):
        raise ScheduleError(f"@every interval must be at least 1s (got {arg})")
    if anchor is None:
        base = _EPOCH
    else:
        _epoch_s(anchor)
        base = anchor.astimezone(UTC).replace(microsecond=0)
    return EverySchedule(expr, zone, interval, base)


def _parse_after(expr: str, zone: str, arg: str) -> AfterSchedule:
    """`@after <RFC 3339 time> <ISO 8601 duration>`; the duration may start with `<`, as Dkron writes it."""
    parts = arg.split()
    if len(parts) != 2:
        raise ScheduleError(
            f"invalid schedule '{expr}': @after needs a time and a grace period, like"
            " '@after 2027-01-01T00:00:00Z <PT1H'"
        )
    at = _parse_rfc3339(expr, parts[0], "@after")
    duration = parts[1].removeprefix("<")
    return AfterSchedule(expr, zone, at, parse_iso_duration(duration, f"invalid schedule '{expr}': @after grace"))


def parse_iso_duration(text: str, what: str = "duration") -> timedelta:
    """An ISO 8601 duration as Dkron reads it: PnYnMnDTnHnMnS, a year 365 days, a month 30, a fraction only on the
    seconds; it must be more than zero. Raises ScheduleError starting with `what`."""
    m = _ISO_DURATION.fullmatch(text)
    if not m or text in ("P", "PT") or text.endswith("T"):
        raise ScheduleError(f"{what} '{text}' is not an ISO 8601 duration like PT1H, P1DT12H or PT90S")
    years, months, days, hours, minutes = (int(g or 0) for g in m.groups()[:5])
    seconds = float(m.group(6) or 0)
    total = timedelta(days=365 * years + 30 * months + days, hours=hours, minutes=minutes, seconds=seconds)
    if total <= timedelta(0):
        raise ScheduleError(f"{what} '{text}' must be more than zero")
    return total


def _parse_rfc3339(expr: str, arg: str, word: str = "@at") -> datetime:
    m = _RFC3339.fullmatch(arg)
    if not m:
        raise ScheduleError(f"invalid schedule '{expr}': {word} needs an RFC 3339 time like 2027-01-01T00:00:00Z")
    day, clock, frac, off = m.groups()
    iso = f"{day}T{clock}.{(frac or '')[:6].ljust(6, '0')}{'+00:00' if off in 'Zz' else off}"
    try:
        return datetime.fromisoformat(iso).astimezone(UTC)
    except ValueError as e:
        raise ScheduleError(f"invalid schedule '{expr}': {word} time {arg!r}: {e}") from None


def _parse_cron(expr: str, zone: str, text: str, job_name: str, timeline: _Timeline) -> CronSchedule:
    parts = text.split()
    if len(parts) == 5:
        parts.insert(0, "0")
    elif len(parts) != 6:
        raise ScheduleError(
            f"invalid schedule '{expr}': expected 5 or 6 fields (second minute hour day-of-month month"
            f" day-of-week), got {len(parts)}"
        )
    masks = []
    for index, (spec, part) in enumerate(zip(_FIELDS, parts, strict=True)):
        try:
            if "H" in part.upper():  # may be hashed, so it depends on the job name
                masks.append(_parse_field(spec, part, _hash(job_name, index)))
            else:
                masks.append(_plain_field(index, part))
        except _FieldError as e:
            value = f" value '{e.token}'" if e.token and e.token != part else ""
            raise ScheduleError(f"invalid schedule '{expr}': {spec.name} field '{part}'{value} {e}") from None
    seconds, minutes, hours, dom, months, dow = masks
    dom_any, dow_any = bool(_UNRESTRICTED.fullmatch(parts[3])), bool(_UNRESTRICTED.fullmatch(parts[5]))
    if dow_any and not any((months >> m) & 1 and dom & ((2 << _MAX_DAYS[m]) - 2) for m in range(1, 13)):
        raise ScheduleError(f"schedule '{expr}' never fires")
    return CronSchedule(
        expr=expr,
        timezone=zone,
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        months=months,
        day_masks=_day_masks(dom, (dow | dow >> 7) & 0x7F, dom_any, dow_any),  # weekday 7 -> 0 (Sunday)
        fixed_hour=not any(c in parts[2] for c in "*?/"),
        _timeline=timeline,
    )


@functools.lru_cache(maxsize=1024)
def _plain_field(index: int, text: str) -> int:
    return _parse_field(_FIELDS[index], text, 0)


@functools.lru_cache(maxsize=1024)
def _day_masks(dom: int, dow: int, dom_any: bool, dow_any: bool) -> tuple[int, ...]:
    """CronSchedule.day_masks: matching days (bits 1-31) per cron weekday of the month's first day."""
    out = []
    for first in range(7):
        week = sum(1 << i for i in range(7) if (dow >> ((first + i) % 7)) & 1)  # days 1-7, as bits 0-6
        by_dow = (week * 0x1020_4081) << 1 & 0xFFFF_FFFE  # repeated every 7 bits, shifted to days 1-31
        if dom_any:
            out.append(0xFFFF_FFFE if dow_any else by_dow)
        else:
            out.append(dom if dow_any else dom | by_dow)  # Vixie: either matches when both are restricted
    return tuple(out)


def _hash(job_name: str, index: int) -> int:
    # crc32, not hash(): Python's string hash is randomised per process, and every scheduler must agree.
    return zlib.crc32(f"{job_name}\x00{index}".encode())


def _parse_field(spec: _Field, text: str, seed: int) -> int:
    """The field's values as a bitmask (bit v set when value v matches)."""
    mask = 0
    for item in text.split(","):
        if not item:
            raise _FieldError("has an empty list item")
        m = _HASH.fullmatch(item)
        bounds = _hash_item(spec, m, seed) if m else _range_item(spec, item)
        if isinstance(bounds, int):  # one hashed value
            mask |= bounds
            continue
        lo, hi, step = bounds
        for v in range(lo, hi + 1, step):
            mask |= 1 << v
    return mask


def _hash_item(spec: _Field, m: re.Match[str], seed: int) -> int | tuple[int, int, int]:
    """A hashed item ("H", "H(a-b)", with a step or not): a one-value mask, or (first, last, step)."""
    a, b, step_text = m.groups()
    if a is None:
        lo, hi = spec.lo, spec.hash_hi if spec.hash_hi >= 0 else spec.hi
    else:
        lo, hi = _value(spec, a), _value(spec, b)
        if lo > hi:
            raise _FieldError(f"has a reversed hash range {lo}-{hi}")
    if step_text is None:
        return 1 << (lo + seed % (hi - lo + 1))
    step = _step(step_text)
    lo += seed % min(step, hi - lo + 1)  # the hashed offset, kept inside the range
    return lo, hi, step


def _range_item(spec: _Field, item: str) -> tuple[int, int, int]:
    """A plain item ("*", "a", "a-b", with a step or not): (first, last, step)."""
    m = _RANGE.fullmatch(item)
    if not m:
        raise _FieldError(f"has invalid syntax in '{item}'")
    a, b, step_text = m.groups()
    top = spec.open_hi if spec.open_hi >= 0 else spec.hi
    if a in ("*", "?"):
        if b is not None:
            raise _FieldError(f"has invalid syntax in '{item}'")
        lo, hi = spec.lo, top
    else:
        lo = _value(spec, a)
        # "a/s" means a, a+s, ... up to the field's end; a bare "a" is just a.
        hi = _value(spec, b) if b is not None else (top if step_text is not None else lo)
        if lo > hi:
            raise _FieldError(f"has a reversed range {lo}-{hi}")
    step = _step(step_text) if step_text is not None else 1
    return lo, hi, step


def _value(spec: _Field, token: str) -> int:
    upper = token.upper()
    if upper in spec.names:
        return spec.lo + spec.names.index(upper)
    if not token.isdigit():
        raise _FieldError(f"has an unknown value '{token}'")
    v = int(token)
    if not spec.lo <= v <= spec.hi:
        raise _FieldError(f"out of range {spec.lo}-{spec.hi}", token)
    return v


def _step(text: str) -> int:
    step = int(text)
    if step < 1:
        raise _FieldError("has a step of 0")
    return step


# ------------------------------------------------------------------------------------------ job helpers


class Scheduled(Protocol):
    """What fire-time helpers need from a job (models.Job fits)."""

    @property
    def name(self) -> str: ...
    @property
    def schedule(self) -> str: ...
    @property
    def timezone(self) -> str: ...
    @property
    def created_at(self) -> datetime | None: ...
    @property
    def starts_at(self) -> datetime | None: ...
    @property
    def expires_at(self) -> datetime | None: ...


class CatchupJob(Scheduled, Protocol):
    """A job as seen by plan_catchup."""

    @property
    def misfire_policy(self) -> str: ...
    @property
    def catchup_window(self) -> str: ...


MAX_FIRES: Final = 1000  # cap on next_fires counts and on the runs of one catch-up


def job_fires(job: Scheduled) -> Callable[[datetime], datetime | None]:
    """next_after for the job's schedule, bounded by starts_at (first fire >= it) and expires_at (none after).

    The schedule is parsed once, here: raises ScheduleError when it or the zone is invalid.
    """
    sched = parse_schedule(job.schedule, job.timezone, job_name=job.name, anchor=job.created_at)
    return _FireAfter(sched, job.starts_at, job.expires_at)


class _FireAfter:
    """job_fires' function. An object with slots rather than a closure: the leader's planner holds one per job,
    and this takes a quarter of the memory of a closure over three cells."""

    __slots__ = ("_expires", "_sched", "_starts")

    def __init__(self, sched: Schedule | None, starts: datetime | None, expires: datetime | None) -> None:
        self._sched = sched
        self._starts = starts
        self._expires = expires

    def __call__(self, t: datetime) -> datetime | None:
        if self._sched is None:
            return None
        starts, expires = self._starts, self._expires
        if starts is not None and t < starts:
            t = starts - timedelta(microseconds=1)
        f = self._sched.next_after(t)
        return None if f is None or (expires is not None and f > expires) else f


_job_fires = job_fires  # the planner imported this name before it was public


def next_fires(job: Scheduled, after: datetime, count: int) -> list[datetime]:
    """The job's next `count` fires (at most 1000) strictly after `after`, within starts_at/expires_at.

    Raises ScheduleError when the job's schedule or zone is invalid.
    """
    fire_after = job_fires(job)
    out: list[datetime] = []
    t = after
    while len(out) < min(count, MAX_FIRES):
        f = fire_after(t)
        if f is None:
            break
        out.append(f)
        t = f
    return out


def slots_between(job: Scheduled, after: datetime, until: datetime, limit: int) -> list[datetime]:
    """The job's fires f with after < f <= until (within starts_at/expires_at), at most `limit`, ascending."""
    fire_after = job_fires(job)
    out: list[datetime] = []
    t = after
    while len(out) < limit:
        f = fire_after(t)
        if f is None or f > until:
            break
        out.append(f)
        t = f
    return out


# --------------------------------------------------------------------------------------------- catch-up


class Catchup(msgspec.Struct, frozen=True):
    """What to do about the slots missed since the last one handled: `run` them, and record `missed` ones."""

    run: list[datetime]
    missed: list[tuple[datetime, str]]


_POLICIES: Final = ("run_once", "run_all", "skip")
# Enumerating slots costs; these bound the work for a per-second job after a long outage.
_BATCH: Final = 4 * MAX_FIRES
_FORWARD_BUDGET: Final = 20_000
_ENUMERATION_BUDGET: Final = 100_000


def plan_catchup(job: CatchupJob, last_slot: datetime | None, now: datetime) -> Catchup:
    """Decide about the slots s with last_slot < s <= now (docs/semantics.md §4); nothing when last_slot is None.

    Slots before now - catchup_window are missed ("older than catchup_window 1h0m0s"). Inside the window,
    `run_once` runs the latest and records the others as coalesced into it, `run_all` runs the newest 1000
    and records older ones as "more than 1000 missed slots", `skip` records all as skipped. Both lists are
    ascending. To bound the work (a per-second job after a month offline has millions of slots), only the
    newest 1000 missed slots are listed; when there were more, one summary entry comes first, at the first
    missed slot, whose reason says that older slots are not listed. An empty policy or window means the
    defaults (run_once, 1h). Raises ValidationError for an unknown policy or an invalid window.
    """
    if last_slot is None or last_slot >= now or isinstance(_schedule_of(job), AfterSchedule):
        return Catchup([], [])  # an `@after` fire's lateness is plan_late's business
    policy = job.misfire_policy or "run_once"
    if policy not in _POLICIES:
        raise ValidationError(f"unknown misfire_policy '{policy}' (expected one of {', '.join(_POLICIES)})")
    try:
        window = parse_duration(job.catchup_window or "1h")
    except DurationError as e:
        raise ValidationError(f"invalid catchup_window: {e}") from None
    fire_after = job_fires(job)
    slots, older = _newest_slots(fire_after, last_slot, now, 2 * MAX_FIRES + 1)
    cutoff = now - window
    inside = [s for s in slots if s >= cutoff]
    old_reason = f"older than catchup_window {format_duration(window)}"
    missed = [(s, old_reason) for s in slots if s < cutoff]
    run: list[datetime] = []
    if policy == "skip":
        missed += [(s, "misfire_policy skip") for s in inside]
    elif policy == "run_once":
        run = inside[-1:]
        missed += [(s, f"coalesced into the run of {run[0].isoformat()}") for s in inside[:-1]]
    else:
        run = inside[-MAX_FIRES:]
        missed += [(s, f"more than {MAX_FIRES} missed slots") for s in inside[:-MAX_FIRES]]
    if older or len(missed) > MAX_FIRES:
        missed = missed[-MAX_FIRES:]
        first = fire_after(last_slot)
        assert first is not None  # there are slots after last_slot, or `older` would be False
        missed.insert(0, (first, f"older missed slots from {first.isoformat()} are not listed"))
    return Catchup(run, missed)


def plan_late(job: Scheduled, last_slot: datetime | None, now: datetime) -> Catchup:
    """An `@after` job whose fire has passed and has neither run nor been recorded (last_slot before it, or
    None): `run` it when `now` is within its grace period, else record it `missed`. Nothing for any other
    schedule, or before the fire (the planner fires it on time). Raises ScheduleError for an invalid schedule."""
    schedule = _schedule_of(job)
    if not isinstance(schedule, AfterSchedule) or now < schedule.at:
        return Catchup([], [])
    if last_slot is not None and last_slot >= schedule.at:
        return Catchup([], [])
    if schedule.late(now):
        return Catchup([schedule.at], [])
    return Catchup([], [(schedule.at, f"past its @after grace period of {format_duration(schedule.grace)}")])


def _schedule_of(job: Scheduled) -> Schedule | None:
    return parse_schedule(job.schedule, job.timezone, job_name=job.name, anchor=job.created_at)


def _newest_slots(
    fire_after: Callable[[datetime], datetime | None], lo: datetime, hi: datetime, k: int
) -> tuple[list[datetime], bool]:
    """The newest (at most k) fires in (lo, hi], ascending, and whether older ones exist in (lo, hi].

    Enumerates forward from lo when that is cheap; otherwise looks back from hi for a start whose span
    holds between k and _BATCH fires (doubling the span, then bisecting), so the work stays bounded.
    """
    slots, total, complete = _collect(fire_after, lo, hi, k, _FORWARD_BUDGET)
    if complete:
        return slots, total > k
    few = timedelta(0)  # a span known to hold fewer than k fires
    many: timedelta | None = None  # a span known to hold more than _BATCH fires
    span = timedelta(seconds=k)
    best: list[datetime] = []
    spent = _FORWARD_BUDGET
    while spent < _ENUMERATION_BUDGET:
        start = max(lo, hi - span)
        slots, total, complete = _collect(fire_after, start, hi, k, _BATCH)
        spent += total
        if complete and (total >= k or start == lo):
            first = fire_after(lo)
            return slots, total > k or (first is not None and first <= start)
        if complete:
            few, best = span, slots
        else:
            many = span
        # At most one fire per second: once the bounds are a second apart a span in between has been found.
        span = few * 2 if many is None else (few + many) / 2
    return best, True


def _collect(
    fire_after: Callable[[datetime], datetime | None], lo: datetime, hi: datetime, k: int, budget: int
) -> tuple[list[datetime], int, bool]:
    """(The last k fires in (lo, hi], how many there were, whether hi was reached within `budget` fires)."""
    kept: deque[datetime] = deque(maxlen=k)
    total = 0
    t = lo
    while total <= budget:
        f = fire_after(t)
        if f is None or f > hi:
            return list(kept), total, True
        kept.append(f)
        total += 1
        t = f
    return list(kept), total, False
