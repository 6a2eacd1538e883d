"""Bus keys per role: each role's key is admitted only where that role may talk, and a reload takes a key away."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import zmq
import zmq.asyncio

from cronbus.common import messages as m
from cronbus.common.bus import CurveKeys
from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from cronbus.common.models import now_utc
from tests.helpers import Cluster, async_wait_until, wait_until
from tests.integration.scheduling import client, executions, finished, put_job


def _keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cronbus.services", "keygen", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _key_dir(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    assert _keygen(str(keys)).returncode == 0
    return keys


async def _ask(router: str, keys: CurveKeys | None, server_key: bytes, job: str) -> m.ControlReply | None:
    """Asks the leader to run a job over a DEALER holding `keys` (none: no CURVE); its reply, or None in 3 s."""
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_key, keys.public, keys.secret
    sock.connect(router)
    try:
        await sock.send(m.encode(m.RunJob(req_id=uuid.uuid4().hex, job_name=job)))
        while True:
            reply = m.to_peer_decoder.decode(await asyncio.wait_for(sock.recv(), 3.0))
            if isinstance(reply, m.ControlReply):
                return reply
    except TimeoutError:
        return None
    finally:
        sock.close()


async def _listen(publisher: str, keys: CurveKeys, server_key: bytes, seconds: float) -> int:
    """How many messages a SUB holding `keys`, subscribed to everything, receives in `seconds`."""
    sock = zmq.asyncio.Context.instance().socket(zmq.SUB)
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


async def _runs_since(store: Store, job: str, since: datetime, node: str = "") -> int:
    return sum(
        1
        for r in finished(await executions(store, job))
        if r.success and r.scheduled_at >= since and (not node or r.node_name == node)
    )


async def test_each_role_is_admitted_only_where_it_may_talk(
    cluster: Cluster, fresh_consul: DevAgent, tmp_path: Path
) -> None:
    keys = _key_dir(tmp_path)
    assert _keygen(str(tmp_path / "other"), "--role", "gateway").returncode == 0  # a key in no allow-list here
    store = Store(client(fresh_consul))
    cluster.scheduler("--curve-keys", str(keys), name="s1")
    cluster.executor("--curve-keys", str(keys), name="e1")
    _, url = cluster.gateway("--curve-keys", str(keys), name="g1")
    await put_job(store, name="ticking", schedule="@every 1s", executor="noop")
    await put_job(store, name="guarded", schedule="@manually", executor="noop")
    await put_job(store, name="asked", schedule="@manually", executor="noop")
    start = now_utc()

    async def ran() -> bool:
        return await _runs_since(store, "ticking", start) >= 2

    await async_wait_until(ran, timeout_s=20, what="runs over the bus with keys per role")
    found = await store.get_leader()
    assert found is not None
    leader = found[0]
    scheduler = CurveKeys.load(str(keys / "scheduler.key_secret")).public
    assert leader.curve_key == scheduler.decode()  # the leader names its key, for the others to pin

    # An executor's key reaches the ROUTER (executors report there) but may not ask for anything.
    executor_key = CurveKeys.load(str(keys / "executor.key_secret"))
    refused = await _ask(leader.router, executor_key, scheduler, "guarded")
    assert refused is not None and not refused.ok and refused.code == 403, refused
    assert "only gateway keys" in refused.error
    # A scheduler's key, a key in no allow-list and no key at all do not get through the handshake.
    outsider = CurveKeys.load(str(tmp_path / "other/gateway.key_secret"))
    for stranger in (CurveKeys.load(str(keys / "scheduler.key_secret")), outsider, None):
        assert await _ask(leader.router, stranger, scheduler, "guarded") is None
    assert await _listen(leader.publisher, outsider, scheduler, 2.5) == 0
    assert await executions(store, "guarded") == []

    # A gateway's key asks; the gateway process itself, over HTTP, too.
    served = await _ask(leader.router, CurveKeys.load(str(keys / "gateway.key_secret")), scheduler, "guarded")
    assert served is not None and served.ok, served
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:

        async def gateway_ran() -> bool:
            try:
                response = await http.post("/v1/jobs/asked")
            except httpx.TransportError:
                return False
            return response.status_code == 202

        await async_wait_until(gateway_ran, timeout_s=20, what="a run asked for through the gateway")

    async def both_ran() -> bool:
        return bool(finished(await executions(store, "guarded")) and finished(await executions(store, "asked")))

    await async_wait_until(both_ran, timeout_s=20, what="the runs gateways asked for")
    log = cluster.processes[0].log()
    assert "refused RunJob" in log and "only gateways may send it" in log
    assert "unknown CURVE key" in log and "a scheduler's key" in log
    await store.consul.close()


async def test_an_executor_key_cannot_pose_as_a_leader(
    cluster: Cluster, fresh_consul: DevAgent, tmp_path: Path
) -> None:
    keys = _key_dir(tmp_path)
    # The impostor holds an executor's key pair and an allow-list of its own that calls that key a scheduler's, so
    # it starts, wins the lock and names the executor's key in the leader record.
    forged = tmp_path / "forged"
    shutil.copytree(keys, forged)
    (forged / "public/executors/executor.key").rename(forged / "public/schedulers/impostor.key")
    store = Store(client(fresh_consul))
    impostor = cluster.scheduler(
        "--curve-keys", str(forged), "--curve-key", str(keys / "executor.key_secret"), name="impostor"
    )

    async def impostor_leads() -> bool:
        found = await store.get_leader()
        return found is not None and found[0].name == "impostor"

    await async_wait_until(impostor_leads, timeout_s=20, what="the impostor holding the lock")
    executor = cluster.executor("--curve-keys", str(keys), name="e1")
    await put_job(store, name="ticking", schedule="@every 1s", executor="noop")
    wait_until(
        lambda: "not connecting to leader=impostor" in executor.log() and "is not a scheduler's" in executor.log(),
        timeout_s=20,
        what="the executor refusing the impostor",
    )
    assert "connecting leader=impostor" not in executor.log().replace("not connecting leader=impostor", "")
    assert "registered executor" not in impostor.log() and "hello from" not in impostor.log().lower()
    assert await _runs_since(store, "ticking", datetime.min.replace(tzinfo=now_utc().tzinfo)) == 0

    # The impostor gone, a scheduler holding a scheduler's key leads, and the same executor runs its jobs.
    impostor.signal(signal.SIGTERM)
    impostor.stop()
    cluster.scheduler("--curve-keys", str(keys), name="s1")
    start = now_utc()

    async def ran() -> bool:
        return await _runs_since(store, "ticking", start, node="e1") >= 2

    await async_wait_until(ran, timeout_s=30, what="runs once a true scheduler leads")
    await store.consul.close()


async def test_a_key_removed_from_the_allow_list_is_refused_after_sighup(
    cluster: Cluster, fresh_consul: DevAgent, tmp_path: Path
) -> None:
    keys = _key_dir(tmp_path)
    assert _keygen(str(keys), "--role", "executor", "--name", "e2").returncode == 0  # a pair of its own for e2
    store = Store(client(fresh_consul))
    scheduler = cluster.scheduler("--curve-keys", str(keys), name="s1")
    cluster.executor("--curve-keys", str(keys), "--tag", "host=one", name="e1")
    e2_pair = str(keys / "e2.key_secret")
    e2 = cluster.executor("--curve-keys", str(keys), "--curve-key", e2_pair, "--tag", "host=two", name="e2")
    await put_job(store, name="on-one", schedule="@every 1s", executor="noop", tags={"host": "one"})
    await put_job(store, name="on-two", schedule="@every 1s", executor="noop", tags={"host": "two"})
    start = now_utc()

    async def both_run() -> bool:
        return await _runs_since(store, "on-one", start) >= 2 and await _runs_since(store, "on-two", start) >= 2

    await async_wait_until(both_run, timeout_s=30, what="runs on both executors")

    e2_key = CurveKeys.load(str(keys / "e2.key_secret")).public.decode()
    (keys / "public/executors/e2.key").unlink()
    scheduler.signal(signal.SIGHUP)
    wait_until(
        lambda: f"bus connection refused socket=router key={e2_key}" in scheduler.log(),
        timeout_s=20,
        what="the leader refusing e2's key after the reload",
    )
    assert "bus keys reloaded" in scheduler.log() and "bus connections dropped" in scheduler.log()
    wait_until(lambda: "executor dead node=e2" in scheduler.log(), timeout_s=20, what="the leader giving e2 up")
    cut = now_utc()

    # e1, whose key stays, reconnects and goes on; e2 runs nothing more, though it is alive and keeps trying.
    async def one_runs() -> bool:
        return await _runs_since(store, "on-one", cut) >= 3

    await async_wait_until(one_runs, timeout_s=30, what="e1 running on after the reload")
    assert e2.alive()
    assert await _runs_since(store, "on-two", cut) == 0
    assert scheduler.alive()
    await store.consul.close()


def test_bad_keys_fail_at_start_naming_what_is_wrong(tmp_path: Path) -> None:
    keys = _key_dir(tmp_path)

    def start(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cronbus.services", "executor", "--consul", "127.0.0.1:1", *args],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done
        return done.stderr

    assert "nowhere: no such folder" in start("--curve-keys", str(tmp_path / "nowhere"))
    assert "cannot read a CURVE key pair" in start("--curve-keys", str(keys), "--curve-key", str(tmp_path / "none"))
    # The scheduler's pair given to an executor: its key is not among the executors'.
    assert "is a scheduler's key" in start("--curve-keys", str(keys), "--curve-key", str(keys / "scheduler.key_secret"))
    assert "holds no secret key" in start(
        "--curve-keys", str(keys), "--curve-key", str(keys / "public/executors/executor.key")
    )
    assert "needs --curve-keys" in start("--curve-key", str(keys / "executor.key_secret"))
    shutil.copy(keys / "public/executors/executor.key", keys / "public/gateways/twice.key")
    assert "hold one key: a key has one role" in start("--curve-keys", str(keys))
    (keys / "public/gateways/twice.key").unlink()
    shutil.rmtree(keys / "public/gateways")
    assert f"no folder {keys}/public/gateways" in start("--curve-keys", str(keys))

    again = _keygen(str(keys), "--role", "executor")
    assert again.returncode != 0 and "exists: nothing written" in again.stderr


async def test_an_executor_leaves_a_leader_whose_key_left_the_list_on_sighup(
    cluster: Cluster, fresh_consul: DevAgent, tmp_path: Path
) -> None:
    keys = _key_dir(tmp_path)
    store = Store(client(fresh_consul))
    scheduler = cluster.scheduler("--curve-keys", str(keys), name="s1")
    executor = cluster.executor("--curve-keys", str(keys), name="e1")
    await put_job(store, name="ticking", schedule="@every 1s", executor="noop")
    start = now_utc()

    async def ran() -> bool:
        return await _runs_since(store, "ticking", start) >= 2

    await async_wait_until(ran, timeout_s=20, what="runs before the reload")
    # Only the executor reloads (the scheduler keeps the lists it read): the scheduler's key is no longer trusted.
    (keys / "public/schedulers/scheduler.key").unlink()
    executor.signal(signal.SIGHUP)
    wait_until(
        lambda: (
            "leaving leader=s1: its key is no longer among the schedulers' keys" in executor.log()
            and "not connecting to leader=s1" in executor.log()
        ),
        timeout_s=20,
        what="the executor leaving the leader",
    )
    wait_until(lambda: "executor dead node=e1" in scheduler.log(), timeout_s=20, what="the leader giving e1 up")
    cut = now_utc()
    assert executor.alive() and scheduler.alive()
    assert await _runs_since(store, "ticking", cut) == 0
    await store.consul.close()
