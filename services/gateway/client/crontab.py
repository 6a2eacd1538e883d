"""Crontab to jobs: user crontabs and /etc/crontab-style system tables, read the way cron reads them."""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronbus.common.errors import ValidationError
from cronbus.common.models import Job
from cronbus.common.schedule import parse_schedule
from cronbus.common.validation import MAX_NAME_CHARS

__all__ = ["CrontabError", "CrontabJob", "check_prefix", "job_name_slug", "parse_crontab", "split_percent"]

DEFAULT_SHELL: Final = "/bin/sh"  # what cron runs commands with, and what the shell executor's shell=true means
# cron takes a line as an environment setting when it is NAME=value (spaces around '=' allowed);
# a job line starts with a time field or '@', never with a letter.
_ENV_LINE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")
_NOT_NAME_CHARS: Final = re.compile(r"(?:[^a-z0-9_]|-)+")  # runs of '-' collapse too: "--full" gives "full"
_PREFIX: Final = re.compile(r"[a-z0-9_-]+")
_TIME_FIELDS: Final = 5
_UNSUPPORTED: Final = {
    "@reboot": "@reboot is not supported: cronbus has no boot event (run the command from the host's init instead)",
}


class CrontabError(ValidationError):
    """A crontab line cannot become a job; the message starts with its line number."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        super().__init__(f"line {line}: {reason}")


@dataclass(frozen=True)
class CrontabJob:
    """The job made from one crontab line."""

    line: int
    job: Job


@dataclass
class _Environment:
    """What the setting lines above a job line have set."""

    zone: str = ""
    shell: str = DEFAULT_SHELL
    mailto: str = ""
    env: dict[str, str] | None = None


def check_prefix(prefix: str) -> None:
    """Raises ValidationError unless `prefix` may start a job name."""
    if prefix and not _PREFIX.fullmatch(prefix):
        raise ValidationError(f"prefix {prefix!r} may hold only a-z, 0-9, '_' and '-'")
    if len(prefix) > MAX_NAME_CHARS // 2:
        raise ValidationError(f"prefix {prefix!r} is longer than {MAX_NAME_CHARS // 2} characters")


def job_name_slug(text: str) -> str:
    """Lower-case, only [a-z0-9_-]: every run of other characters (or of '-') becomes one '-'."""
    return _NOT_NAME_CHARS.sub("-", text.lower()).strip("-")


def split_percent(command: str) -> tuple[str, str | None]:
    """Splits a crontab command as cron does: the first unescaped '%' ends the command; what follows is its
    standard input, where each unescaped '%' is a newline. '\\%' is a literal '%' in both parts. Returns
    (command, stdin or None when there is no '%')."""
    out: list[str] = []
    escaped = False
    for i, ch in enumerate(command):
        if escaped:
            escaped = False
            if ch == "%":
                out[-1] = "%"  # the backslash only escaped the '%': it goes
            else:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            out.append(ch)
            continue
        if ch == "%":
            return "".join(out), _stdin_of(command[i + 1 :])
        out.append(ch)
    return "".join(out), None


def _stdin_of(data: str) -> str:
    # Vixie cron's do_command: '%' -> newline, '\%' -> '%', other backslashes kept, a final newline added.
    out: list[str] = []
    escaped = False
    need_newline = False
    for raw in data:
        ch = raw
        if escaped:
            if ch != "%":
                out.append("\\")
        elif ch == "%":
            ch = "\n"
        escaped = ch == "\\"
        if not escaped:
            out.append(ch)
            need_newline = ch != "\n"
    if escaped:
        out.append("\\")
    if need_newline:
        out.append("\n")
    return "".join(out)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _check_zone(line: int, zone: str) -> None:
    if not zone:
        return
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CrontabError(line, f"unknown time zone {zone!r}") from None


def _set(environment: _Environment, line: int, name: str, value: str) -> None:
    match name:
        case "CRON_TZ":
            _check_zone(line, value)
            environment.zone = value
        case "SHELL":
            if not value:
                raise CrontabError(line, "SHELL is empty")
            environment.shell = value
        case "MAILTO":
            environment.mailto = value
        case _:
            if name == "TZ":  # cron passes TZ to the command too, so it also lands in env below
                _check_zone(line, value)
                environment.zone = value
            if "," in value:
                # executor_config env is "K=v,K2=v2": a comma cannot be carried inside a value.
                raise CrontabError(line, f"the value of {name} holds ',', which executor_config env cannot carry")
            environment.env = {**(environment.env or {}), name: value}


class _Namer:
    """Stable, unique job names: prefix + slug of the command, else prefix + the job's index in the file."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.taken: set[str] = set()

    def name(self, command: str, index: int) -> str:
        slug = job_name_slug(command)
        lead = f"{self.prefix}-" if self.prefix else ""
        base = f"{lead}{slug}" if slug else f"{self.prefix or 'cron'}-{index}"
        name, n = base[:MAX_NAME_CHARS], 1
        while name in self.taken:
            n += 1
            suffix = f"-{n}"
            name = base[: MAX_NAME_CHARS - len(suffix)].rstrip("-") + suffix
        self.taken.add(name)
        return name


def parse_crontab(
    text: str, *, prefix: str = "", system: bool = False, tags: Mapping[str, str] | None = None
) -> list[CrontabJob]:
    """The jobs of a crontab, in file order. `system` reads the /etc/crontab format (a user column after the
    schedule, which becomes the shell executor's `su`). Raises CrontabError for the first bad line and
    ValidationError for a bad prefix."""
    check_prefix(prefix)
    environment = _Environment()
    namer = _Namer(prefix)
    jobs: list[CrontabJob] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        setting = _ENV_LINE.fullmatch(line)
        if setting is not None:
            _set(environment, number, setting.group(1), _unquote(setting.group(2)))
            continue
        jobs.append(_job_line(environment, namer, number, line, system, len(jobs) + 1, tags))
    return jobs


def _job_line(
    environment: _Environment,
    namer: _Namer,
    number: int,
    line: str,
    system: bool,
    index: int,
    tags: Mapping[str, str] | None,
) -> CrontabJob:
    line = line.removeprefix("-")  # cronie's "do not log this job" mark
    time_fields = 1 if line.startswith("@") else _TIME_FIELDS
    user_fields = 1 if system else 0
    parts = line.split(None, time_fields + user_fields)
    if len(parts) <= time_fields + user_fields:
        want = "a descriptor" if time_fields == 1 else f"{_TIME_FIELDS} time fields"
        raise CrontabError(number, f"expected {want}{', a user' if system else ''} and a command: {line!r}")
    schedule = " ".join(parts[:time_fields])
    user = parts[time_fields] if system else ""
    command, stdin = split_percent(parts[-1])
    if not command.strip():
        raise CrontabError(number, "the command is empty")
    if schedule.lower() in _UNSUPPORTED:
        raise CrontabError(number, _UNSUPPORTED[schedule.lower()])
    name = namer.name(command, index)
    try:
        parse_schedule(schedule, environment.zone, job_name=name)
    except ValidationError as exc:
        raise CrontabError(number, str(exc)) from None
    config = {"command": command, "shell": "true"}
    if environment.shell != DEFAULT_SHELL:
        # The shell executor's shell=true means /bin/sh; any other shell is exec'd with -c, as cron would.
        config = {"command": shlex.join([environment.shell, "-c", command]), "shell": "false"}
    if environment.env:
        config["env"] = ",".join(f"{k}={v}" for k, v in environment.env.items())
    if stdin:
        config["payload"] = base64.b64encode(stdin.encode()).decode()
    if user:
        config["su"] = user
    job = Job(
        name=name,
        schedule=schedule,
        timezone=environment.zone,
        owner_email=environment.mailto,
        tags=dict(tags) if tags else None,
        executor="shell",
        executor_config=config,
    )
    return CrontabJob(number, job)
