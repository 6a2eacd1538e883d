"""Real servers for the tests: Debian's nats-server and rabbitmq-server (the broker executors'), each on free
loopback ports in a folder of its own, started and stopped by the tests (scripts/setup.sh --tests installs them).
PostgreSQL's throw-away cluster is cronbus.common.local_postgres (cronbus dev uses it too)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from cronbus.common.consul.agent import free_port, listening
from cronbus.common.procs import stop_process

NATS_SERVER = "/usr/sbin/nats-server"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = "/usr/bin/epmd"
INSTALL_HINT = "scripts/setup.sh installs Debian's nats-server and rabbitmq-server"

# Users of the test NATS server: `cronbus` may publish under jobs.>, `reader` may publish nothing.
NATS_USERS = {"cronbus": "s3cret", "reader": "r3ader"}
NATS_CONFIG = """
listen: 127.0.0.1:{port}
authorization {{
  users = [
    {{user: cronbus, password: s3cret, permissions: {{publish: ["jobs.>", "_INBOX.>"], subscribe: ">"}}}}
    {{user: reader, password: r3ader, permissions: {{publish: {{deny: ">"}}, subscribe: ">"}}}}
  ]
}}
"""


def _require(binary: str) -> None:
    if not os.access(binary, os.X_OK):
        raise AssertionError(f"these tests need {binary}: {INSTALL_HINT}")


def _wait_listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not listening(port):
        if proc.poll() is not None:
            raise AssertionError(
                f"{what} exited with code {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not listening on {port} after {timeout_s}s:\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")  # fmt: skip
        time.sleep(0.05)


class NatsServer:
    """nats-server on a free loopback port with the users of NATS_USERS."""

    def __init__(self, folder: Path) -> None:
        _require(NATS_SERVER)
        self.folder = folder
        self.port = free_port()
        self.log = folder / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in_s = 0.0

    def url(self, user: str = "", password: str = "") -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"nats://{auth}127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> NatsServer:
        config = self.folder / "nats.conf"
        config.write_text(NATS_CONFIG.format(port=self.port))
        began = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([NATS_SERVER, "-c", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                         cwd=self.folder, start_new_session=True)  # fmt: skip
        _wait_listening(self.proc, self.port, timeout_s, "nats-server", self.log)
        self.started_in_s = time.monotonic() - began
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


class RabbitNode:
    """A RabbitMQ node of its own: own node name, AMQP and distribution ports, epmd (on a free port, run and
    stopped here), Erlang cookie, database and logs, all in `folder`; none of a system instance's. The only user
    is RabbitMQ's default guest/guest, which may log in from loopback."""

    def __init__(self, folder: Path) -> None:
        _require(RABBITMQ_SERVER)
        _require(EPMD)
        self.folder = folder
        self.port = free_port()
        self.epmd_port = free_port()
        self.dist_port = free_port()
        self.log = folder / "rabbit.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None
        self.started_in_s = 0.0

    def url(self, user: str = "guest", password: str = "guest", vhost: str = "") -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/{vhost}"

    def start(self, timeout_s: float = 90.0) -> RabbitNode:
        plugins = self.folder / "enabled_plugins"
        plugins.write_text("[].\n")
        env = {
            **os.environ,
            "HOME": str(self.folder),  # the Erlang cookie goes here
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": f"cronbus-test-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_PID_FILE": str(self.folder / "rabbit.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq"),  # none: the defaults
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.folder / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
        }
        began = time.monotonic()
        with open(self.log, "ab") as out:
            # An epmd of our own, so the node does not start a daemon that outlives the tests.
            self.epmd = subprocess.Popen([EPMD, "-port", str(self.epmd_port), "-address", "127.0.0.1"], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            _wait_listening(self.epmd, self.epmd_port, 10, "epmd", self.log)
            self.proc = subprocess.Popen([RABBITMQ_SERVER], stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.folder, start_new_session=True)  # fmt: skip
        try:
            # RabbitMQ opens its AMQP listener last, once the node has booted.
            _wait_listening(self.proc, self.port, timeout_s, "rabbitmq-server", self.log)
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - began
        return self

    def stop(self) -> None:
        if self.proc is not None:
            # TERM to the script stops the node cleanly (rabbitmqctl stop); anything left in its group is killed.
            stop_process(self.proc, timeout_s=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.epmd is not None:
            stop_process(self.epmd)
