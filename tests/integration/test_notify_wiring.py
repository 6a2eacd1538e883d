"""The scheduler process sends its notifications: a pre-run and a finished webhook for a real run."""

from __future__ import annotations

import json

from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import client, executor_joined, put_job
from tests.integration.test_notify import Receiver


async def test_a_run_sends_pre_run_and_finished_webhooks(cluster: Cluster, fresh_consul: DevAgent) -> None:
    store = Store(client(fresh_consul))
    async with Receiver() as receiver:
        cluster.scheduler(
            "--webhook-url", f"{receiver.url}/done", "--pre-webhook-url", f"{receiver.url}/starting",
            "--notify-on", "failure", name="s1",
        )  # fmt: skip
        cluster.executor(name="e1")
        await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executor up")
        await put_job(
            store, name="broken", schedule="@every 1s", executor="shell", executor_config={"command": "false"}
        )

        async def both() -> bool:
            paths = {r.path for r in receiver.accepted}
            return {"/done", "/starting"} <= paths

        await async_wait_until(both, timeout_s=20, what="both webhooks")
        done = next(r for r in receiver.accepted if r.path == "/done")
        assert "broken" in done.body.decode()
        # notify-on failure: the succeeding probe job sent no finished webhook
        finished_jobs = [json.loads(r.body).get("job", "") for r in receiver.accepted if r.path == "/done"]
        assert "probe" not in json.dumps(finished_jobs)
    await store.consul.close()
