"""With a CURVE key configured, the bus is encrypted and admits only holders of the cluster key."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import zmq
import zmq.asyncio

from cronbus.common import messages as m
from cronbus.common.bus import CurveKeys
from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import client, control, executions, finished, put_job


def _keygen(stem: Path) -> str:
    subprocess.run([sys.executable, "-m", "cronbus.services", "keygen", str(stem)], check=True, capture_output=True)
    return f"{stem}.key_secret"


async def _intruder_request(router: str, keys: CurveKeys | None, server_key: bytes) -> bytes | None:
    """What a process without the cluster key gets back when it asks the leader to run a job."""
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_key, keys.public, keys.secret
    sock.connect(router)
    try:
        await sock.send(m.encode(m.RunJob(req_id=uuid.uuid4().hex, job_name="guarded")))
        return await asyncio.wait_for(sock.recv(), 2.0)
    except TimeoutError:
        return None
    finally:
        sock.close()


async def _intruder_listen(publisher: str, keys: CurveKeys, server_key: bytes, seconds: float) -> int:
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_key, keys.public, keys.secret
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(publisher)
    received = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(sock.recv_multipart(), left)
                received += 1
            except TimeoutError:
                break
    finally:
        sock.close()
    return received


async def test_only_holders_of_the_cluster_key_use_the_bus(
    cluster: Cluster, fresh_consul: DevAgent, tmp_path: Path
) -> None:
    cluster_key = _keygen(tmp_path / "cluster")
    intruder = CurveKeys.load(_keygen(tmp_path / "intruder"))
    store = Store(client(fresh_consul))
    cluster.scheduler("--curve-key", cluster_key, name="s1")
    cluster.executor("--curve-key", cluster_key, name="e1")
    await put_job(store, name="ticking", schedule="@every 1s", executor="noop")
    await put_job(store, name="guarded", schedule="@manually", executor="noop")

    async def ran() -> bool:
        return len(finished(await executions(store, "ticking"))) >= 2

    await async_wait_until(ran, timeout_s=20, what="runs over the encrypted bus")
    leader = await store.get_leader()
    assert leader is not None
    server_key = CurveKeys.load(cluster_key).public

    assert await _intruder_request(leader[0].router, intruder, server_key) is None
    assert await _intruder_request(leader[0].router, None, server_key) is None
    assert await _intruder_listen(leader[0].publisher, intruder, server_key, 2.5) == 0
    assert await executions(store, "guarded") == []
    assert (await control_with_key(store, cluster_key)).ok  # the key holder is served
    assert "unknown CURVE key" in cluster.processes[0].log()
    await store.consul.close()


async def control_with_key(store: Store, key_file: str) -> m.ControlReply:
    keys = CurveKeys.load(key_file)
    found = await store.get_leader()
    assert found is not None
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys.public, keys.public, keys.secret
    sock.connect(found[0].router)
    try:
        await sock.send(m.encode(m.RunJob(req_id="k", job_name="guarded")))
        reply = m.to_peer_decoder.decode(await asyncio.wait_for(sock.recv(), 5))
        assert isinstance(reply, m.ControlReply)
        return reply
    finally:
        sock.close()


_ = control  # the plain helper is the unencrypted twin of control_with_key
