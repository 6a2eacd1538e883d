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
from cronbus.common.procs import stop_process


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
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))  # fmt: skip
def dev_command(
    schedulers: int, executors: int, tags: tuple[str, ...], port: int, consul_port: int, log_level: str
) -> None:
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
    try:
        try:
            agent.start()
        except CronbusError as exc:
            raise click.ClickException(
                f"{exc} (is something else using port {consul_port}? see {state_dir}/consul.log)"
            ) from exc
        common = ["--consul", agent.address, "--log-level", log_level]
        for i in range(schedulers):
            children.append(subprocess.Popen(_cronbus("scheduler", *common, "--node-name", f"scheduler-{i + 1}")))
        tag_args = [arg for tag in tags for arg in ("--tag", tag)]
        for i in range(executors):
            children.append(
                subprocess.Popen(
                    _cronbus("executor", *common, "--node-name", f"executor-{i + 1}",
                             "--data-dir", str(state_dir / f"executor-{i + 1}"), *tag_args)
                )
            )  # fmt: skip
        children.append(subprocess.Popen(_cronbus("gateway", *common, "--node-name", "gateway", "--port", str(port))))
        if not _wait_http(f"http://127.0.0.1:{port}/health", 60, lambda: stopping):
            if stopping:
                return  # Ctrl-C while starting up: the finally below stops what did start
            raise click.ClickException("the gateway did not become healthy within 60s; see the log above")
        click.echo(
            f"\ncronbus is up.\n  cronbus UI:  http://127.0.0.1:{port}/ui/\n  API:         http://127.0.0.1:{port}/v1/jobs"
            f"\n  Consul UI:   http://{agent.address}/ui/\nCtrl-C stops everything.\n"
        )
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    command = " ".join(map(str, child.args))  # type: ignore[arg-type]
                    raise click.ClickException(f"{command} exited with code {child.returncode}")
            time.sleep(0.5)
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for child in children:
            stop_process(child, timeout_s=15)
        agent.stop()
        click.echo("cronbus dev stopped")
