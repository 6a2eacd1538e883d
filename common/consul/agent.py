"""Finding the consul binary and running a local dev agent (for `cronbus dev` and the test suite)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from cronbus.common.errors import CronbusError
from cronbus.common.procs import stop_process

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "Install Consul >= 1.8 and put it on PATH or set CONSUL_BIN; in a cronbus checkout on Debian, "
    "scripts/get-consul.sh fetches one."
)


def _version_ok(binary: str) -> bool:
    try:
        out = subprocess.run([binary, "version"], check=False, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    match = re.search(r"Consul v(\d+)\.(\d+)", out)
    return match is not None and (int(match[1]), int(match[2])) >= (1, 8)


def find_consul() -> str:
    """CONSUL_BIN, else consul on PATH, else the repo's cache (.cache/consul). Raises CronbusError."""
    env = os.environ.get("CONSUL_BIN")
    if env:
        if _version_ok(env):
            return env
        raise CronbusError(f"CONSUL_BIN={env} is not a runnable Consul >= 1.8. {INSTALL_HINT}")
    repo_cache = Path(__file__).resolve().parents[2] / ".cache/consul/root/usr/bin/consul"
    for candidate in (shutil.which("consul"), str(repo_cache)):
        if candidate and Path(candidate).exists() and _version_ok(candidate):
            return candidate
    raise CronbusError(f"no consul binary found. {INSTALL_HINT}")


_handed_out: set[int] = set()


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on that loopback port now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port free on loopback when chosen, never the same one twice in this process: each is released at
    once, so two chosen in a row (an agent's six) could otherwise be the same port."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class DevAgent:
    """A Consul agent in dev mode on loopback, with free ports; stop() kills it and removes its data."""

    def __init__(
        self,
        http_port: int | None = None,
        *,
        ui: bool = False,
        log_path: Path | None = None,
        acl_master_token: str = "",
    ) -> None:
        self.http_port = http_port or free_port()
        self.acl_master_token = acl_master_token
        self._ui = ui
        self._log_path = log_path
        self._dir = tempfile.mkdtemp(prefix="cronbus-consul-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 30.0) -> DevAgent:
        binary = find_consul()
        args = [
            binary, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
            "-node", "cronbus-dev", "-data-dir", self._dir,
            "-http-port", str(self.http_port), "-server-port", str(free_port()),
            "-serf-lan-port", str(free_port()), "-serf-wan-port", str(free_port()),
            "-dns-port", "-1", "-grpc-port", "-1",
        ]  # fmt: skip
        if self._ui:
            args.append("-ui")
        if self.acl_master_token:
            # Deny by default: every call without the token fails, so a test proves the token is sent.
            token = self.acl_master_token
            acl = f'enabled = true default_policy = "deny" tokens {{ master = "{token}" agent = "{token}" }}'
            args += ["-hcl", f"acl {{ {acl} }}"]
        if self._log_path:
            with open(self._log_path, "ab") as out:  # the agent writes to its own copy of the descriptor
                self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        else:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CronbusError(f"consul agent exited with code {self.proc.returncode}")
            if self._leader_known():
                log.info("consul dev agent ready addr=%s", self.address)
                return self
            time.sleep(0.1)
        self.stop()
        raise CronbusError(f"consul agent on {self.address} not ready after {timeout_s}s")

    def _leader_known(self) -> bool:
        try:
            request = urllib.request.Request(
                f"http://{self.address}/v1/status/leader", headers={"X-Consul-Token": self.acl_master_token}
            )
            with urllib.request.urlopen(request, timeout=1) as resp:
                return len(resp.read().strip()) > 2  # '""' until a leader is elected
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
        shutil.rmtree(self._dir, ignore_errors=True)
