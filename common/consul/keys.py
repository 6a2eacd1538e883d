"""The only place a Consul KV path is spelled. Every prefix ends with '/' so 'backup' never matches 'backup-db'."""

from __future__ import annotations

from urllib.parse import quote, unquote

ROOT = "cronbus/"
JOBS = ROOT + "jobs/"
STATUS = ROOT + "status/"
EXECUTIONS = ROOT + "executions/"
STATS = ROOT + "stats/"
LEADER = ROOT + "leader"
TERM = ROOT + "term"  # the last leadership term handed out (see lock.py): terms only grow
PAUSE = ROOT + "pause"

SCHEDULER_SERVICE = "cronbus-scheduler"
EXECUTOR_SERVICE = "cronbus-executor"
GATEWAY_SERVICE = "cronbus-gateway"


def _segment(name: str) -> str:
    # Job names are validated, but an id or a name edited in the Consul UI must never escape its prefix.
    return quote(name, safe="")


def job(name: str) -> str:
    return JOBS + _segment(name)


def status(name: str) -> str:
    return STATUS + _segment(name)


def executions(job_name: str) -> str:
    return EXECUTIONS + _segment(job_name) + "/"


def execution(job_name: str, execution_id: str) -> str:
    return executions(job_name) + _segment(execution_id)


def day_stats(day: str, shard: int) -> str:
    """Executions finished on `day` (YYYY-MM-DD, UTC) counted by one of the leader's writers (see ledger.py)."""
    return f"{STATS}{day}/{shard}"


def name_from_key(prefix: str, key: str) -> str:
    """The last segment of key under prefix, unquoted."""
    return unquote(key[len(prefix) :].split("/", 1)[0])
