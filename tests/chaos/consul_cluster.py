"""A real Consul cluster on loopback for chaos tests: 3 servers (-bootstrap-expect 3) and one client agent."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cronbus.common.consul.agent import find_consul, free_port
from cronbus.common.procs import stop_process
from tests.helpers import wait_until

RAFT_FAST = "performance { raft_multiplier = 1 }"  # production timing: elections within a few seconds


@dataclass
class ConsulNode:
    name: str
    server: bool
    http_port: int
    server_port: int
    serf_lan_port: int
    serf_wan_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def raft_address(self) -> str:
        return f"127.0.0.1:{self.server_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str) -> object:
        with urllib.request.urlopen(f"http://{self.address}{path}", timeout=2) as resp:
            return json.loads(resp.read() or b"null")


class ConsulCluster:
    """Three servers and one client agent, all on 127.0.0.1 with their own ports and data directories."""

    def __init__(self, directory: Path, servers: int = 3) -> None:
        self.directory = directory
        self._taken: set[int] = set()
        self.nodes = [self._node(f"server{i + 1}", True) for i in range(servers)]
        self.client = self._node("client1", False)

    def _port(self) -> int:
        """A free port no other agent of this cluster got (free_port may hand the same one out twice)."""
        port = free_port()
        while port in self._taken:
            port = free_port()
        self._taken.add(port)
        return port

    def _node(self, name: str, server: bool) -> ConsulNode:
        return ConsulNode(
            name=name,
            server=server,
            http_port=self._port(),
            server_port=self._port(),
            serf_lan_port=self._port(),
            serf_wan_port=self._port(),
            data_dir=self.directory / f"{name}-data",
            log_path=self.directory / f"{name}.log",
        )

    @property
    def servers(self) -> list[ConsulNode]:
        return self.nodes

    def start(self, timeout_s: float = 60.0) -> ConsulCluster:
        binary = find_consul()
        joins = [arg for n in self.servers for arg in ("-retry-join", f"127.0.0.1:{n.serf_lan_port}")]
        for node in [*self.servers, self.client]:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            args = [
                binary, "agent", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-node", node.name,
                "-data-dir", str(node.data_dir), "-http-port", str(node.http_port),
                "-server-port", str(node.server_port), "-serf-lan-port", str(node.serf_lan_port),
                "-serf-wan-port", str(node.serf_wan_port), "-dns-port", "-1", "-grpc-port", "-1",
                "-retry-interval", "1s", "-hcl", RAFT_FAST, *joins,
            ]  # fmt: skip
            if node.server:
                args += ["-server", "-bootstrap-expect", str(len(self.servers))]
            log = node.log_path.open("ab")
            try:
                node.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            finally:
                log.close()
        try:
            wait_until(self._ready, timeout_s=timeout_s, interval_s=0.2, what="a Consul cluster with a leader")
        except BaseException:
            self.stop()  # the caller gets no cluster to stop
            raise
        return self

    def _ready(self) -> bool:
        for node in [*self.servers, self.client]:
            if not node.alive():
                raise AssertionError(f"consul {node.name} exited: {node.log_path.read_text()[-2000:]}")
        try:
            peers = self.client.get("/v1/status/peers")
            members = self.client.get("/v1/agent/members")
            return (
                bool(self.raft_leader())
                and isinstance(peers, list)
                and len(peers) == len(self.servers)
                and (isinstance(members, list) and sum(m.get("Status") == 1 for m in members) == len(self.servers) + 1)
            )
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def raft_leader(self, via: ConsulNode | None = None) -> ConsulNode | None:
        """The server that leads Raft now, as `via` (default: the client agent) sees it."""
        try:
            address = (via or self.client).get("/v1/status/leader")
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return next((n for n in self.servers if n.raft_address == address), None)

    def kill(self, node: ConsulNode) -> None:
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait()

    def stop(self) -> None:
        for node in [self.client, *self.servers]:
            if node.proc is not None:
                stop_process(node.proc, timeout_s=5)
        for node in [self.client, *self.servers]:
            shutil.rmtree(node.data_dir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(f"===== consul {n.name} =====\n{n.log_path.read_text()[-3000:]}" for n in self.nodes)


def wait_new_raft_leader(cluster: ConsulCluster, old: ConsulNode, timeout_s: float = 30.0) -> tuple[ConsulNode, float]:
    started = time.monotonic()

    def elected() -> ConsulNode | None:
        found = cluster.raft_leader()
        return found if found is not None and found is not old else None

    leader = wait_until(elected, timeout_s=timeout_s, interval_s=0.1, what="a new Raft leader")
    assert leader is not None
    return leader, time.monotonic() - started
