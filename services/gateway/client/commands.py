"""The `cronbus` client commands (jobs, executions, cluster, backup, crontab import) over the gateway's API."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import msgspec
import yaml
from click.shell_completion import CompletionItem

from cronbus.common.errors import CronbusError, ValidationError
from cronbus.common.executor_config import EXECUTORS
from cronbus.common.models import JOB_SORT_FIELDS, JOB_STATUS_FILTERS, ZERO_TIME, Execution, Job, Member
from cronbus.common.schedule import parse_duration
from cronbus.services.gateway.client.api import (
    DEFAULT_GATEWAY,
    READ_ONLY_FIELDS,
    ApiError,
    ExecutionEnded,
    GatewayClient,
    GatewayError,
    GatewayUnreachableError,
    JobQuery,
    OutputReceived,
    Reply,
    check_gateway_url,
    compact_job,
)
from cronbus.services.gateway.client.crontab import parse_crontab

__all__ = ["CLIENT_COMMANDS"]

EXIT_API_ERROR: Final = 1
EXIT_UNREACHABLE: Final = 3
COMPLETION_LIMIT: Final = 500
COMPLETION_TIMEOUT_S: Final = 2.0
COMPLETION_HELP: Final = (
    "\b\nShell completion (job names complete from the gateway):\n"
    '  bash: eval "$(_CRONBUS_COMPLETE=bash_source cronbus)"\n'
    '  zsh:  eval "$(_CRONBUS_COMPLETE=zsh_source cronbus)"\n'
    "  fish: _CRONBUS_COMPLETE=fish_source cronbus | source"
)
_SESSION: Final = "cronbus.gateway.session"
# Map values that YAML types on its own (`shell: true`, `timeout: 30`) but the API wants as strings.
_STRING_MAPS: Final = ("tags", "metadata", "executor_config")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
Pair = tuple[str, str | None]


# ---- options shared by every client command ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Session:
    """What a client command works with: the client of the chosen gateway and the output mode."""

    api: GatewayClient
    json: bool


def _api() -> GatewayClient:
    return _session().api


def _session() -> Session:
    session = click.get_current_context().meta[_SESSION]
    assert isinstance(session, Session)  # put there by ClientCommand.invoke before the callback runs
    return session


def _gateway_url(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_gateway_url(value)
    except GatewayError as exc:
        raise click.BadParameter(str(exc)) from None


def _client_options() -> list[click.Parameter]:
    return [
        click.Option(["--gateway", "gateway"], default=DEFAULT_GATEWAY, show_default=True, envvar="CRONBUS_GATEWAY",
                     callback=_gateway_url, metavar="URL", help="Base URL of a cronbus gateway (or a Dkron server)."),
        click.Option(["--token", "token"], default="", envvar="CRONBUS_TOKEN", show_default=False,
                     help="API token, sent as 'Authorization: Bearer TOKEN' [env: CRONBUS_TOKEN]."),
        click.Option(["--ca-file", "ca_file"], default="", envvar="CRONBUS_CA_FILE", metavar="FILE",
                     help="CA certificate(s), PEM, an https gateway's certificate must chain to (a private CA; "
                          "default: the system's) [env: CRONBUS_CA_FILE]."),
        click.Option(["--json", "json_output"], is_flag=True, default=False,
                     help="Print the API's JSON instead of tables (for scripts)."),
    ]  # fmt: skip


def _fail(ctx: click.Context, message: str, code: int) -> None:
    click.echo(message, err=True)
    ctx.exit(code)


class ClientCommand(click.Command):
    """A command that talks to the gateway: --gateway/--token/--json, and errors turned into exit codes
    (1 the API refused, with its message; 3 no gateway answered; 2 stays click's usage error)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_client_options())

    def invoke(self, ctx: click.Context) -> Any:
        token = ctx.params.pop("token")
        ca_file = ctx.params.pop("ca_file")
        try:
            api = GatewayClient(ctx.params.pop("gateway"), token=token, ca_file=ca_file)
        except GatewayError as exc:
            raise click.BadParameter(str(exc), param_hint="--ca-file") from None
        ctx.meta[_SESSION] = Session(ctx.with_resource(api), ctx.params.pop("json_output"))
        try:
            return super().invoke(ctx)
        except GatewayUnreachableError as exc:
            _fail(ctx, f"error: {exc}", EXIT_UNREACHABLE)
        except ApiError as exc:
            hint = " (the gateway wants a token: --token or CRONBUS_TOKEN)" if exc.status == 401 and not token else ""
            _fail(ctx, f"error: {exc}{hint}", EXIT_API_ERROR)
        except CronbusError as exc:
            _fail(ctx, f"error: {exc}", EXIT_API_ERROR)
        return None


class ClientGroup(click.Group):
    command_class = ClientCommand


# ---- parameter types and completion --------------------------------------------------------------------------


class KeyValue(click.ParamType[Pair]):
    """KEY=VALUE; with `removable`, also KEY- (remove the key when editing)."""

    name = "KEY=VALUE"

    def __init__(self, *, removable: bool = False) -> None:
        self.removable = removable

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Pair:
        if isinstance(value, tuple):
            return value  # already converted (a default)
        text = str(value)
        key, sep, val = text.partition("=")
        if sep and key.strip():
            return key.strip(), val
        if self.removable and not sep and text.endswith("-") and len(text) > 1:
            return text[:-1], None
        want = "KEY=VALUE or KEY- (to remove KEY)" if self.removable else "KEY=VALUE"
        self.fail(f"{text!r} is not {want}", param, ctx)


KEY_VALUE: Final = KeyValue()
KEY_VALUE_OR_REMOVAL: Final = KeyValue(removable=True)


def _completion_client(ctx: click.Context) -> GatewayClient:
    # The options given so far are parsed; otherwise the environment and the default apply, as for a run.
    gateway = ctx.params.get("gateway") or os.environ.get("CRONBUS_GATEWAY") or DEFAULT_GATEWAY
    token = ctx.params.get("token") or os.environ.get("CRONBUS_TOKEN", "")
    ca_file = ctx.params.get("ca_file") or os.environ.get("CRONBUS_CA_FILE", "")
    return GatewayClient(str(gateway), token=str(token), timeout_s=COMPLETION_TIMEOUT_S, ca_file=str(ca_file))


def complete_job_names(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    try:
        with _completion_client(ctx) as api:
            jobs = api.list_jobs(JobQuery(q=incomplete, end=COMPLETION_LIMIT)).value
    except CronbusError:
        return []  # completion never prints into the user's shell: no gateway simply means no suggestions
    return [CompletionItem(j.name, help=j.displayname or j.schedule) for j in jobs if j.name.startswith(incomplete)]


def complete_execution_ids(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    job = ctx.params.get("job")
    if not job:
        return []
    try:
        with _completion_client(ctx) as api:
            executions = api.list_executions(str(job), end=COMPLETION_LIMIT, output_size_limit=0).value
    except CronbusError:
        return []
    return [CompletionItem(e.id, help=e.status) for e in executions if e.id.startswith(incomplete)]


def job_argument(func: F) -> F:
    return click.argument("name", metavar="JOB", shell_complete=complete_job_names)(func)


# ---- output --------------------------------------------------------------------------------------------------


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns aligned on the widest cell, two spaces apart, no trailing blanks."""
    grid = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in grid) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in grid)


def when(value: datetime | None) -> str:
    """A UTC instant for people; '-' for none (null or Go's zero time)."""
    if value is None or value == ZERO_TIME:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def took(start: datetime, end: datetime) -> str:
    if ZERO_TIME in (start, end):
        return "-"
    seconds = max((end - start) / timedelta(seconds=1), 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m{secs:02d}s" if minutes >= 60 else f"{minutes}m{secs:02d}s"


def pairs(mapping: Mapping[str, str] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (mapping or {}).items()) or "-"


def _cell(value: object) -> str:
    match value:
        case None:
            return "-"
        case bool():
            return "true" if value else "false"
        case datetime():
            return when(value)
        case dict():
            return pairs({str(k): str(v) for k, v in value.items()})
        case list():
            return ", ".join(str(v) for v in value) or "-"
        case _:
            return str(value)


def _echo_raw(raw: bytes) -> None:
    click.echo(raw.decode())


def _as_json(reply: Reply[Any]) -> bool:
    """With --json, prints the API's JSON as it came and is True: the command prints nothing else."""
    if _session().json:
        _echo_raw(reply.raw)
        return True
    return False


def _show(reply: Reply[T], line: Callable[[T], str]) -> None:
    """Prints the API's JSON with --json, else the line made of the reply's value."""
    if not _as_json(reply):
        click.echo(line(reply.value))


def _echo_list(
    reply: Reply[list[T]], headers: Sequence[str], row: Callable[[T], Sequence[str]], *, what: str, none: str
) -> None:
    """Prints a list as a table (or the API's JSON with --json), and how many of how many it shows."""
    if _as_json(reply):
        return
    if not reply.value:
        click.echo(none, err=True)
        return
    click.echo(render_table(headers, (row(item) for item in reply.value)))
    if reply.total is not None and reply.total > len(reply.value):
        click.echo(f"({len(reply.value)} of {reply.total} {what} shown)")


def _echo_fields(rows: Sequence[tuple[str, str]]) -> None:
    width = max((len(k) for k, _ in rows), default=0) + 1
    for key, value in rows:
        click.echo(f"{key + ':':<{width}} {value}".rstrip())


def _struct_rows(record: msgspec.Struct, skip: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    return [
        (f.encode_name, _cell(getattr(record, f.name))) for f in msgspec.structs.fields(record) if f.name not in skip
    ]


def _job_row(job: Job) -> list[str]:
    return [
        job.name,
        job.schedule or (f"after {job.parent_job}" if job.parent_job else "-"),
        job.timezone or "UTC",
        job.status or "never run",
        when(job.next),
        when(job.last_success),
        when(job.last_error),
        "yes" if job.disabled else "",
    ]


JOB_HEADERS: Final = ("NAME", "SCHEDULE", "TZ", "STATUS", "NEXT", "LAST SUCCESS", "LAST ERROR", "DISABLED")
EXECUTION_HEADERS: Final = ("ID", "STATUS", "ATTEMPT", "NODE", "STARTED", "FINISHED", "TOOK", "EXIT")


def _execution_row(e: Execution) -> list[str]:
    exit_code = "-" if e.exit_code is None else str(e.exit_code)
    status = e.status or ("success" if e.success else "failed")
    return [e.id, status, str(e.attempt), e.node_name or "-", when(e.started_at), when(e.finished_at),
            took(e.started_at, e.finished_at), exit_code]  # fmt: skip


def _echo_job(job: Job) -> None:
    config = job.executor_config or {}
    rows = [
        (k, "UTC" if k == "timezone" and not v else v)
        for k, v in _struct_rows(job, frozenset({"id", "executor_config"}))
    ]
    at = next(i for i, (k, _) in enumerate(rows) if k == "executor") + 1
    rows[at:at] = [("executor_config", "-" if not config else "")]
    rows[at + 1 : at + 1] = [(f"  {k}", v) for k, v in config.items()]
    _echo_fields(rows)


def _echo_member(member: Member) -> None:
    _echo_fields(_struct_rows(member))


# ---- job input: files and flags ------------------------------------------------------------------------------


def _as_string(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def load_jobs(text: str, source: str) -> tuple[list[dict[str, Any]], bool]:
    """The job objects of a JSON or YAML document (one job or a list), and whether it held a list.
    Raises ValidationError naming `source`."""
    data: Any
    try:
        data = msgspec.json.decode(text)
    except msgspec.DecodeError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValidationError(f"{source}: neither JSON nor YAML: {exc}") from None
        data = _yaml_strings(data)
    many = isinstance(data, list)
    items = data if isinstance(data, list) else [data]
    for position, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            where = f" (item {position})" if many else ""
            raise ValidationError(f"{source}{where}: expected a job object, got {type(item).__name__}")
    return items, many


def _yaml_strings(data: Any) -> Any:
    """YAML reads `shell: true` as a bool; the API wants every tag, metadata and executor_config value as text."""
    if isinstance(data, list):
        return [_yaml_strings(item) for item in data]
    if not isinstance(data, dict):
        return data
    fixed = dict(data)
    for key in _STRING_MAPS:
        if isinstance(fixed.get(key), dict):
            fixed[key] = {str(k): _as_string(v) for k, v in fixed[key].items()}
    if isinstance(fixed.get("processors"), dict):
        fixed["processors"] = {
            str(name): {str(k): _as_string(v) for k, v in cfg.items()} if isinstance(cfg, dict) else cfg
            for name, cfg in fixed["processors"].items()
        }
    return fixed


def parents_first(jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs ordered so a parent in the same batch is written before its children (the API wants it to exist)."""
    names = {job.get("name") for job in jobs}
    written: set[object] = set()
    ordered: list[dict[str, Any]] = []
    pending = list(jobs)
    while pending:
        ready = [
            j for j in pending if not j.get("parent_job") or j["parent_job"] not in names or j["parent_job"] in written
        ]
        if not ready:  # a cycle: write as given and let the gateway say what is wrong
            ordered.extend(pending)
            break
        for job in ready:
            ordered.append(job)
            written.add(job.get("name"))
            pending.remove(job)
    return ordered


@dataclasses.dataclass(frozen=True)
class JobFlags:
    """The job fields given as flags to `jobs create` and `jobs edit`; None (or empty) = not given."""

    schedule: str | None = None
    command: str | None = None
    timezone: str | None = None
    tag: tuple[Pair, ...] = ()
    metadata: tuple[Pair, ...] = ()
    retries: int | None = None
    concurrency: str | None = None
    executor: str | None = None
    config: tuple[Pair, ...] = ()
    disabled: bool | None = None
    parent_job: str | None = None

    def given(self) -> bool:
        return any(getattr(self, f.name) not in (None, ()) for f in dataclasses.fields(self))

    def apply(self, job: dict[str, Any]) -> dict[str, Any]:
        """`job` with these flags applied: scalars replace, KEY=VALUE pairs merge, KEY- removes."""
        out = dict(job)
        scalars = {
            "schedule": self.schedule,
            "timezone": self.timezone,
            "retries": self.retries,
            "concurrency": self.concurrency,
            "executor": self.executor,
            "disabled": self.disabled,
            "parent_job": self.parent_job,
        }
        out.update({k: v for k, v in scalars.items() if v is not None})
        out["tags"] = _merge(out.get("tags"), self.tag)
        out["metadata"] = _merge(out.get("metadata"), self.metadata)
        config = _merge(out.get("executor_config"), self.config) or {}
        if self.command is not None:
            if out.get("executor", "shell") not in ("", "shell"):
                raise click.UsageError(f"--command is for the shell executor, not {out['executor']!r}")
            config["command"] = self.command
        out["executor_config"] = config or None
        return {k: v for k, v in out.items() if v is not None}


def _merge(current: object, changes: Sequence[Pair]) -> dict[str, str] | None:
    merged = {str(k): str(v) for k, v in current.items()} if isinstance(current, dict) else {}
    for key, value in changes:
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged or None


def job_flag_options(func: F) -> F:
    options = [
        click.option("--schedule", help="Cron expression, @descriptor, '@every 10m', '@at TIME' or @manually."),
        click.option("--command", help="Shell command, run by /bin/sh -c (--config shell=false: exec'd directly)."),
        click.option("--timezone", help="IANA zone the schedule is read in (default UTC)."),
        click.option("--tag", multiple=True, type=KEY_VALUE_OR_REMOVAL,
                     help="Executor selection KEY=VALUE or KEY=VALUE:COUNT (repeatable; KEY- removes)."),
        click.option("--metadata", multiple=True, type=KEY_VALUE_OR_REMOVAL,
                     help="Label KEY=VALUE (repeatable; KEY- removes)."),
        click.option("--retries", type=click.IntRange(min=0), help="Extra attempts after a failed run."),
        click.option("--concurrency", type=click.Choice(["allow", "forbid", "replace"]),
                     help="What a run does while the previous one still runs."),
        click.option("--executor", type=click.Choice(EXECUTORS), help="Executor (default shell)."),
        click.option("--config", multiple=True, type=KEY_VALUE_OR_REMOVAL,
                     help="executor_config KEY=VALUE (repeatable; KEY- removes), e.g. --config timeout=30s."),
        click.option("--disabled/--enabled", "disabled", default=None, help="Disable or enable scheduled runs."),
        click.option("--parent-job", help="Run after this job instead of on a schedule."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


# ---- jobs ----------------------------------------------------------------------------------------------------


@click.group("jobs", cls=ClientGroup, epilog=COMPLETION_HELP)
def jobs_group() -> None:
    """Create, inspect, change, run and delete jobs."""


@jobs_group.command("list")
@click.option("--q", "q", default="", help="Only jobs whose name or display name contains TEXT.", metavar="TEXT")
@click.option("--status", type=click.Choice(JOB_STATUS_FILTERS), help="Only jobs with this status.")
@click.option("--disabled/--enabled", "disabled", default=None, help="Only disabled / only enabled jobs.")
@click.option(
    "--metadata", multiple=True, type=KEY_VALUE, help="Only jobs with this label (repeatable: all must match)."
)
@click.option(
    "--sort", type=click.Choice(JOB_SORT_FIELDS), default="name", show_default=True, help="Sort by this field."
)
@click.option("--desc", is_flag=True, help="Sort in descending order.")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most N jobs.", metavar="N")
def list_jobs(
    q: str,
    status: str | None,
    disabled: bool | None,
    metadata: tuple[Pair, ...],
    sort: str,
    desc: bool,
    limit: int | None,
) -> None:
    """List jobs: schedule, status, next run, last success and error."""
    query = JobQuery(q=q, status=status or "", disabled=disabled, metadata={k: v or "" for k, v in metadata},
                     sort=sort, descending=desc, end=limit)  # fmt: skip
    _echo_list(_api().list_jobs(query), JOB_HEADERS, _job_row, what="jobs", none="no jobs")


@jobs_group.command("show")
@job_argument
def show_job(name: str) -> None:
    """Show one job, every field."""
    reply = _api().get_job(name)
    if not _as_json(reply):
        _echo_job(reply.value)


@jobs_group.command("create")
@click.argument("file", type=click.File("r"), required=False)
@click.option("--name", help="Job name: lower-case letters, digits, '_' and '-'.")
@job_flag_options
@click.option("--run", is_flag=True, help="Also run the job(s) once, now.")
def create_job(file: IO[str] | None, name: str | None, run: bool, **fields: Any) -> None:
    """Create (or replace) jobs from FILE or from flags.

    FILE ('-' for standard input) is JSON or YAML: one job object, as the API shows it, or a list of them
    (parents are written before their children). Without FILE, the flags build one shell job:

    \b
      cronbus jobs create --name backup --schedule '0 3 * * *' --command 'pg_dump db > /tmp/db.sql'
    """
    flags = JobFlags(**fields)
    if file is not None:
        if name is not None or flags.given():
            raise click.UsageError("give FILE or job flags, not both")
        items, many = load_jobs(file.read(), file.name)
        _save_jobs(parents_first(items), many=many, run=run)
        return
    if not name:
        raise click.UsageError("give FILE, or --name and --schedule (or --parent-job) to build a job")
    if flags.schedule is None and flags.parent_job is None:
        raise click.UsageError("--schedule is required (or --parent-job for a job that runs after another)")
    job = flags.apply({"name": name, "executor": flags.executor or "shell"})
    config = job.get("executor_config") or {}
    if job["executor"] == "shell" and "command" in config and "shell" not in config:
        job["executor_config"] = {**config, "shell": "true"}  # a command typed at a prompt expects a shell
    _save_jobs([job], many=False, run=run)


def _save_jobs(jobs: Sequence[Mapping[str, Any]], *, many: bool, run: bool, lines: Sequence[int] = ()) -> None:
    s = _session()
    raws: list[bytes] = []
    failed = 0
    for position, job in enumerate(jobs):
        where = f"line {lines[position]}: " if lines else ""
        try:
            reply = s.api.save_job(job, run=run)
        except ApiError as exc:
            if len(jobs) == 1 and not lines:
                raise  # one job: the plain "error: <status> <message>"
            click.echo(f"error: {where}job {job.get('name', '?')!s}: {exc}", err=True)
            failed += 1
            continue
        raws.append(reply.raw)
        if not s.json:
            saved = reply.value
            started = ", run started" if run else ""
            click.echo(f"{where}saved job {saved.name} (next run {when(saved.next)}{started})")
    if s.json:
        _echo_raw(b"[" + b",".join(raws) + b"]" if many else (raws[0] if raws else b"null"))
    if failed:
        click.get_current_context().exit(EXIT_API_ERROR)


@jobs_group.command("edit")
@job_argument
@job_flag_options
@click.option("--file", "file", type=click.File("r"), help="Replace the whole definition with this JSON/YAML job.")
def edit_job(name: str, file: IO[str] | None, **fields: Any) -> None:
    """Change a job: the flags given change those fields (KEY=VALUE pairs merge, KEY- removes), or --file
    replaces the whole definition."""
    s = _session()
    flags = JobFlags(**fields)
    if file is not None:
        if flags.given():
            raise click.UsageError("give --file or job flags, not both")
        items, many = load_jobs(file.read(), file.name)
        if many and len(items) != 1:
            raise click.UsageError(f"{file.name} holds {len(items)} jobs; edit takes one")
        job = dict(items[0])
        if job.setdefault("name", name) != name:
            raise click.UsageError(f"{file.name} defines job {job['name']!r}, not {name!r}")
    elif flags.given():
        current = s.api.get_job_object(name)
        job = flags.apply({k: v for k, v in current.items() if k not in READ_ONLY_FIELDS})
    else:
        raise click.UsageError("nothing to change: give flags (see --help) or --file")
    reply = s.api.replace_job(name, job)
    if s.json:
        _echo_raw(reply.raw)
    else:
        click.echo(f"updated job {reply.value.name} (next run {when(reply.value.next)})")


@jobs_group.command("delete")
@job_argument
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete_job(name: str, yes: bool) -> None:
    """Delete a job and its execution history."""
    if not yes:
        click.confirm(f"delete job {name} and its executions?", abort=True, err=True)
    _show(_api().delete_job(name), lambda job: f"deleted job {job.name}")


@jobs_group.command("run")
@job_argument
def run_job(name: str) -> None:
    """Run a job now (also a disabled one); returns without waiting for the run."""
    _show(_api().run_job(name), lambda job: f"run of job {job.name} requested; see: cronbus executions list {job.name}")


@jobs_group.command("toggle")
@job_argument
def toggle_job(name: str) -> None:
    """Disable an enabled job, enable a disabled one."""
    _show(_api().toggle_job(name), lambda job: f"job {job.name} is now {'disabled' if job.disabled else 'enabled'}")


# ---- executions ----------------------------------------------------------------------------------------------


@click.group("executions", cls=ClientGroup, epilog=COMPLETION_HELP)
def executions_group() -> None:
    """A job's runs: history, output, live tail, kill."""


def _job_and_execution(func: F) -> F:
    func = click.argument("execution", metavar="ID", shell_complete=complete_execution_ids)(func)
    return click.argument("job", metavar="JOB", shell_complete=complete_job_names)(func)


@executions_group.command("list")
@click.argument("job", metavar="JOB", shell_complete=complete_job_names)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Newest N executions.")
def list_executions(job: str, limit: int) -> None:
    """List a job's executions, newest first."""
    # Tables show no output, so the gateway need not send it.
    reply = _api().list_executions(job, end=limit, output_size_limit=None if _session().json else 0)
    _echo_list(reply, EXECUTION_HEADERS, _execution_row, what="executions", none=f"job {job} has no executions")


SEARCH_HEADERS: Final = ("JOB", *EXECUTION_HEADERS, "LAST LINE")


def _search_row(e: Execution) -> list[str]:
    lines = [line.strip() for line in e.output.splitlines() if line.strip()]
    return [e.job_name, *_execution_row(e), (lines[-1] if lines else e.reason)[:80] or "-"]


def _instant(value: str | None) -> str:
    """A Go duration ("24h", "90m") as that long ago, RFC 3339; anything else as given (the gateway checks it)."""
    if not value:
        return ""
    try:
        ago = parse_duration(value)
    except ValidationError:
        return value
    return (datetime.now(UTC) - ago).isoformat()


@executions_group.command("search")
@click.option("--status", "statuses", multiple=True, help="Only these statuses (repeat, or comma-separate); "
              "'failures' is failed, timeout and killed.")  # fmt: skip
@click.option("--job", default="", help="Only this job's executions.")
@click.option("--node", default="", help="Only those this executor ran.")
@click.option("--since", help="Started at or after: a duration ago (24h) or an RFC 3339 time.")
@click.option("--until", help="Started before: a duration ago or an RFC 3339 time.")
@click.option("--grep", default="", help="Only those whose output contains this text (ignoring case).")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=50, show_default=True, help="Newest N.")
def search_executions(statuses: tuple[str, ...], job: str, node: str, since: str | None, until: str | None,
                      grep: str, limit: int) -> None:  # fmt: skip
    """Find executions across every job, newest first: what failed last night, and why.

    Example: cronbus executions search --status failures --since 24h
    """
    words = [w.strip() for value in statuses for w in value.split(",") if w.strip()]
    status = ",".join("failed,timeout,killed" if w == "failures" else w for w in words)
    filters = {"status": status, "job": job, "node": node, "since": _instant(since), "until": _instant(until),
               "q": grep}  # fmt: skip
    reply = _api().search_executions(filters, end=limit, output_size_limit=None if _session().json else 400)
    _echo_list(reply, SEARCH_HEADERS, _search_row, what="executions", none="no execution matches")


@executions_group.command("show")
@_job_and_execution
def show_execution(job: str, execution: str) -> None:
    """Show an execution with its whole output."""
    reply = _api().get_execution(job, execution)
    if _as_json(reply):
        return
    _echo_fields(_struct_rows(reply.value, frozenset({"output", "output_truncated"})))
    click.echo("output:")
    click.echo(reply.value.output, nl=not reply.value.output or not reply.value.output.endswith("\n"))


@executions_group.command("kill")
@_job_and_execution
def kill_execution(job: str, execution: str) -> None:
    """Stop a running execution (TERM to its process group, KILL after a grace period)."""
    _show(_api().kill_execution(job, execution), lambda _: f"kill of execution {execution} requested")


@executions_group.command("tail")
@_job_and_execution
def tail_execution(job: str, execution: str) -> None:
    """Print an execution's output as it comes, until it ends; exit 0 if it succeeded, else 1.

    The output goes to standard output, the end to standard error. With --json, one event per line.
    """
    s = _session()
    for event in s.api.stream_execution(job, execution):
        match event:
            case OutputReceived():
                if s.json:
                    click.echo(msgspec.json.encode({"event": "output", "data": event.text}).decode())
                else:
                    click.echo(event.text, nl=False)
            case ExecutionEnded():
                if s.json:
                    click.echo(msgspec.json.encode({"event": "end", "data": event}).decode())
                else:
                    code = "" if event.exit_code is None else f", exit code {event.exit_code}"
                    click.echo(f"execution {execution} ended: {event.status}{code}", err=True)
                if event.status != "success":
                    click.get_current_context().exit(EXIT_API_ERROR)


# ---- cluster -------------------------------------------------------------------------------------------------


def _member_row(m: Member) -> list[str]:
    leader = "yes" if m.Tags.get("leader") == "true" else ""
    others = pairs({k: v for k, v in m.Tags.items() if k not in ("role", "leader")})
    return [m.Name, m.Tags.get("role", "-"), f"{m.Addr}:{m.Port}", m.status_text, leader, others]


@click.command("members", cls=ClientCommand)
def members_command() -> None:
    """List the cluster's processes: schedulers, executors and gateways."""
    reply = _api().members()
    if _as_json(reply):
        return
    rows = [_member_row(m) for m in reply.value]
    click.echo(render_table(("NAME", "ROLE", "ADDRESS", "STATUS", "LEADER", "TAGS"), rows))


@click.command("leader", cls=ClientCommand)
def leader_command() -> None:
    """Show the scheduler that leads (exit 1 when there is none)."""
    reply = _api().leader()
    if not _as_json(reply):
        _echo_member(reply.value)


@click.command("busy", cls=ClientCommand)
def busy_command() -> None:
    """List the executions running now, across all jobs."""
    reply = _api().busy()
    if _as_json(reply):
        return
    if not reply.value:
        click.echo("nothing is running", err=True)
        return
    rows = [[e.job_name, e.id, e.status, e.node_name or "-", when(e.started_at)] for e in reply.value]
    click.echo(render_table(("JOB", "ID", "STATUS", "NODE", "STARTED"), rows))


def _echo_pause(paused: bool) -> None:
    click.echo("new job submissions are paused" if paused else "new job submissions are accepted")


@click.command("pause", cls=ClientCommand)
@click.option("--status", "only_status", is_flag=True, help="Only show whether submissions are paused.")
def pause_command(only_status: bool) -> None:
    """Pause new job submissions, cluster-wide (scheduled runs go on)."""
    reply = _api().pause_state() if only_status else _api().pause()
    if not _as_json(reply):
        _echo_pause(reply.value.paused)


@click.command("unpause", cls=ClientCommand)
def unpause_command() -> None:
    """Accept new job submissions again."""
    reply = _api().unpause()
    if not _as_json(reply):
        _echo_pause(reply.value.paused)


# ---- backup and restore --------------------------------------------------------------------------------------


@click.command("backup", cls=ClientCommand)
@click.argument("file", type=click.File("wb"))
def backup_command(file: IO[bytes]) -> None:
    """Save every job to FILE ('-' for standard output) as JSON, the format `restore` reads."""
    reply = _api().list_jobs()
    file.write(msgspec.json.format(reply.raw, indent=2) + b"\n")
    if file.name != "<stdout>":
        click.echo(f"saved {len(reply.value)} jobs to {file.name}", err=True)


@click.command("restore", cls=ClientCommand)
@click.argument("file", type=click.File("rb"))
def restore_command(file: IO[bytes]) -> None:
    """Create or update the jobs saved in FILE by `backup` (or GET /v1/jobs); exit 1 if any failed."""
    reply = _api().restore(file.read(), os.path.basename(str(file.name)) or "jobs.json")
    if not _as_json(reply):
        for line in reply.value:
            click.echo(line)
        failed = sum(line.startswith("fail") for line in reply.value)
        disabled = sum(line.startswith("success") and ": stored disabled" in line for line in reply.value)
        stored = len(reply.value) - failed - disabled
        click.echo(f"{stored} stored, {disabled} stored disabled, {failed} failed", err=True)
    if any(line.startswith("fail") for line in reply.value):
        click.get_current_context().exit(EXIT_API_ERROR)


# ---- schedules -----------------------------------------------------------------------------------------------


@click.group("schedule", cls=ClientGroup)
def schedule_group() -> None:
    """Try schedule expressions."""


def _prefix_zone(expr: str) -> str:
    head, _, rest = expr.strip().partition(" ")
    for prefix in ("CRON_TZ=", "TZ="):
        if head.startswith(prefix) and rest:
            return head.removeprefix(prefix)
    return ""


@schedule_group.command("preview")
@click.argument("expr", metavar='"EXPR"')
@click.option("--tz", "zone", default="", help="IANA zone the expression is read in (default UTC).")
@click.option("--count", type=click.IntRange(1, 100), default=5, show_default=True, help="How many fire times.")
@click.option("--name", default="", help="Job name that seeds the '~'/'H' hash fields.")
def preview_command(expr: str, zone: str, count: int, name: str) -> None:
    """The next fire times of EXPR, in UTC and in the zone.

    \b
      cronbus schedule preview '30 9 * * 1-5' --tz Europe/Berlin
    """
    reply = _api().preview_schedule(expr, zone, count, name)
    if _as_json(reply):
        return
    shown = _prefix_zone(expr) or zone
    try:
        tz = ZoneInfo(shown) if shown and shown not in ("UTC", "Etc/UTC") else None
    except (ZoneInfoNotFoundError, ValueError):
        tz = None  # the gateway knew the zone, this host does not: UTC alone still answers
    headers = ["#", "UTC"] + ([shown] if tz else [])
    rows = [
        [str(i), when(t)] + ([t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")] if tz else [])
        for i, t in enumerate(reply.value, start=1)
    ]
    if not rows:
        click.echo("the schedule never fires after now", err=True)
        return
    click.echo(render_table(headers, rows))


# ---- crontab import ------------------------------------------------------------------------------------------


@click.command("import-crontab", cls=ClientCommand)
@click.argument("file", type=click.File("r"))
@click.option("--prefix", default="", help="Start every job name with PREFIX- (lower-case, digits, '_', '-').")
@click.option("--tag", multiple=True, type=KEY_VALUE, help="Executor tag KEY=VALUE for every job (repeatable).")
@click.option("--system", is_flag=True, help="System crontab format (/etc/crontab): a user column after the schedule.")
@click.option("--dry-run", is_flag=True, help="Print the jobs as JSON; create nothing.")
def import_crontab_command(file: IO[str], prefix: str, tag: tuple[Pair, ...], system: bool, dry_run: bool) -> None:
    """Turn a crontab into jobs (FILE '-' reads standard input, e.g. `crontab -l | cronbus import-crontab -`).

    \b
    - 5-field lines and @descriptors (@reboot is refused); one shell job per line, named after
      its command (PREFIX-slug), the same name on every import, so importing again updates the jobs;
    - CRON_TZ=/TZ= set the time zone of the lines below; other NAME=value lines go into their env;
      SHELL= picks the shell; MAILTO= becomes owner_email;
    - '%' as cron: the text after the first unescaped '%' is the command's standard input.
    """
    tags = {k: v or "" for k, v in tag}
    try:
        entries = parse_crontab(file.read(), prefix=prefix, system=system, tags=tags)
    except ValidationError as exc:
        raise ValidationError(f"{file.name}: {exc}") from None
    if not entries:
        click.echo(f"{file.name}: no job lines", err=True)
        if dry_run or _session().json:
            click.echo("[]")
        return
    jobs = [compact_job(e.job) for e in entries]
    if dry_run:
        click.echo(msgspec.json.format(msgspec.json.encode(jobs), indent=2).decode())
        return
    _save_jobs(jobs, many=True, run=False, lines=[e.line for e in entries])


CLIENT_COMMANDS: Final[tuple[click.Command, ...]] = (
    jobs_group,
    executions_group,
    members_command,
    leader_command,
    busy_command,
    pause_command,
    unpause_command,
    backup_command,
    restore_command,
    schedule_group,
    import_crontab_command,
)
