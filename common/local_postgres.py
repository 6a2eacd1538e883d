"""A throw-away local PostgreSQL cluster (Debian's initdb and pg_ctl) for `cronbus dev --history-store postgresql`,
the test suite and the benchmarks, as common/consul/agent.py's DevAgent is for Consul."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cronbus.common.consul.agent import free_port, listening
from cronbus.common.errors import CronbusError

INSTALL_HINT = "install Debian's postgresql (in a cronbus checkout: scripts/apt-install.sh postgresql, as root)"
# Who runs PostgreSQL when we run as root (it refuses root): an account every Debian system has.
RUN_AS = "nobody"


def postgres_bin_dir() -> Path:
    """Debian's PostgreSQL programs (initdb, pg_ctl): /usr/lib/postgresql/<version>/bin, the newest version."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise CronbusError(f"no PostgreSQL initdb and pg_ctl under /usr/lib/postgresql: {INSTALL_HINT}")
    return found[-1].parent


class LocalPostgres:
    """A PostgreSQL cluster (initdb) on a free loopback port, run with pg_ctl, in a temporary folder of its own; no
    Unix socket, trust authentication for the superuser `postgres` on loopback only, fsync off (nothing in it
    outlives `remove()`).

    initdb and the server refuse to run as root: as root, the folder is made with mkdtemp (a folder private to
    root, such as a pytest temp folder, could not be reached by an unprivileged user), given to `nobody`, and both
    run as nobody through runuser. As anyone else they run as that user."""

    USER = "postgres"

    def __init__(self, port: int = 0) -> None:
        self.bin = postgres_bin_dir()
        self.folder = Path(tempfile.mkdtemp(prefix="cronbus-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.port = port or free_port()
        self._as: list[str] = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            import pwd  # noqa: PLC0415 - POSIX only, and needed only as root

            uid, gid = pwd.getpwnam(RUN_AS)[2:4]
            os.chown(self.folder, uid, gid)
            self._as = ["runuser", "-u", RUN_AS, "--"]
        self.started_in_s = 0.0

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout_s: float = 60) -> None:
        try:
            done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout_s,
                                  cwd=self.folder, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise CronbusError(
                f"{Path(args[0]).name} did not finish within {timeout_s:.0f}s (see {self.log})"
            ) from None
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise CronbusError(f"{Path(args[0]).name} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}")

    def init(self) -> LocalPostgres:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.USER, "--auth=trust",
                  "--no-sync", "--encoding=UTF8", "--locale=C")  # fmt: skip
        return self

    def start(self, timeout_s: float = 60.0, *settings: str) -> LocalPostgres:
        """Starts the server and waits until it listens; `settings` are more `name=value` server settings."""
        began = time.monotonic()
        given = ["listen_addresses=127.0.0.1", f"port={self.port}", "unix_socket_directories=''", "fsync=off"]
        options = " ".join(f"-c {setting}" for setting in (*given, *settings))
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", str(int(timeout_s)), "start", timeout_s=timeout_s + 10)  # fmt: skip
        if not listening(self.port):
            raise CronbusError(f"postgres not listening on {self.port}:\n{self.log.read_text(errors='replace')}")
        self.started_in_s = time.monotonic() - began
        return self

    def stop(self) -> None:
        """A fast shutdown (clients are disconnected at once), waited for."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
