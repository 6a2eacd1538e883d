"""`cronbus dev`: the whole system on this machine (Consul dev agent, schedulers, executor, gateway)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import click

from cronbus.common.consul.agent import DevAgent
from cronbus.common.errors import CronbusError
from cronbus.common.local_postgres import LocalPostgres
from cronbus.common.procs import stop_process


def _start_services(
    children: list[subprocess.Popen[bytes]], consul: str, log_level: str, history: str, schedulers: int,
    executors: int, tags: tuple[str, ...], state_dir: Path,
) -> None:  # fmt: skip
    """Starts the schedulers and executors, each added to `children` as soon as it is started."""
    common = ["--consul", consul, "--log-level", log_level]
    for i in range(schedulers):
        name = f"scheduler-{i + 1}"
        children.append(
            subprocess.Popen(_cronbus("scheduler", *common, "--history-store", history, "--node-name", name))
        )
    # Dkron's getting-started job targets {"server": "true:1"}: here every executor stands in for a server.
    given = {tag.partition("=")[0] for tag in tags}
    tag_args = [arg for tag in (*tags, *([] if "server" in given else ["server=true"])) for arg in ("--tag", tag)]
    for i in range(executors):
        children.append(
            subprocess.Popen(
                _cronbus("executor", *common, "--node-name", f"executor-{i + 1}",
                         "--data-dir", str(state_dir / f"executor-{i + 1}"), *tag_args)
            )
        )  # fmt: skip


def _check_alive(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is not None:
            command = " ".join(map(str, child.args))  # type: ignore[arg-type]
            raise click.ClickException(f"{command} exited with code {child.returncode}")


def _cronbus(*args: str) -> list[str]:
    return [sys.executable, "-m", "cronbus.services", *args]


def _wait_http(url: str, timeout_s: float, stopping: Callable[[], bool]) -> bool:
    """True once `url` answers 200; False after `timeout_s` or as soon as `stopping()`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stopping():
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def _start_postgres() -> LocalPostgres:
    said = "cannot start PostgreSQL for --history-store postgresql"
    try:
        server = LocalPostgres()
    except CronbusError as exc:
        raise click.ClickException(f"{said}: {exc}") from exc
    try:
        return server.init().start()
    except CronbusError as exc:
        with contextlib.suppress(CronbusError):  # the error to report is the one above
            server.remove()
        raise click.ClickException(f"{said}: {exc}") from exc


@click.command("dev")
@click.option(
    "--schedulers",
    default=1,
    type=click.IntRange(1, 5),
    show_default=True,
    help="Scheduler processes (2 or more: hot standbys).",
)
@click.option("--executors", default=1, type=click.IntRange(1, 20), show_default=True, help="Executor processes.")
@click.option("--tag", "tags", multiple=True, help="Executor tag key=value (repeatable).")
@click.option("--port", default=8080, type=click.IntRange(1, 65535), show_default=True, help="Gateway HTTP port.")
@click.option(
    "--consul-port",
    default=8500,
    type=click.IntRange(1, 65535),
    show_default=True,
    help="Consul dev agent HTTP port.",
)
@click.option(
    "--history-store",
    "history_kind",
    default="consul",
    show_default=True,
    type=click.Choice(["consul", "postgresql"]),
    help="Where finished runs are kept: in Consul, or in a throw-away PostgreSQL cluster started here (needs "
    "Debian's postgresql; removed with the rest at Ctrl-C).",
)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))  # fmt: skip
def dev_command(
    schedulers: int, executors: int, tags: tuple[str, ...], port: int, consul_port: int, history_kind: str,
    log_level: str,
) -> None:  # fmt: skip
    """Run everything on this machine, loopback only. Ctrl-C stops it all."""
    stopping = False

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    state_dir = Path(os.environ.get("CRONBUS_DEV_DIR", Path.cwd() / ".cache" / "dev"))
    state_dir.mkdir(parents=True, exist_ok=True)
    agent = DevAgent(consul_port, ui=True, log_path=state_dir / "consul.log")
    children: list[subprocess.Popen[bytes]] = []
    postgres: LocalPostgres | None = None
    try:
        try:
            agent.start()
        except CronbusError as exc:
            raise click.ClickException(
                f"{exc} (is something else using port {consul_port}? see {state_dir}/consul.log)"
            ) from exc
        history = "consul"
        if history_kind == "postgresql":
            postgres = _start_postgres()
            history = postgres.dsn
        _start_services(children, agent.address, log_level, history, schedulers, executors, tags, state_dir)
        common = ["--consul", agent.address, "--log-level", log_level, "--history-store", history]
        children.append(subprocess.Popen(_cronbus("gateway", *common, "--node-name", "gateway", "--port", str(port))))
        if not _wait_http(f"http://127.0.0.1:{port}/health", 60, lambda: stopping):
            if stopping:
                return  # Ctrl-C while starting up: the finally below stops what did start
            raise click.ClickException("the gateway did not become healthy within 60s; see the log above")
        click.echo(
            f"\ncronbus is up.\n  cronbus UI:  http://127.0.0.1:{port}/ui/\n  API:         http://127.0.0.1:{port}/v1/jobs"
            f"\n  Consul UI:   http://{agent.address}/ui/"
            + (f"\n  History:     {postgres.dsn} (PostgreSQL, removed at Ctrl-C)" if postgres else "")
            + "\nCtrl-C stops everything.\n"
        )
        while not stopping:
            _check_alive(children)
            time.sleep(0.5)
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for child in children:
            stop_process(child, timeout_s=15)
        agent.stop()
        if postgres is not None:
            postgres.remove()
        click.echo("cronbus dev stopped")
