"""Every service starts, registers in the Consul catalog with a health check that reflects it, and stops cleanly."""

from __future__ import annotations

import json
import signal
import urllib.request
from typing import Any

from cronbus.common.consul.agent import DevAgent
from tests.helpers import Cluster, wait_until


def _checks(agent: DevAgent) -> dict[str, str]:
    """ServiceID -> check status of every service check on the agent."""
    with urllib.request.urlopen(f"http://{agent.address}/v1/health/state/any", timeout=5) as resp:
        checks: list[dict[str, Any]] = json.load(resp)
    return {c["ServiceID"]: c["Status"] for c in checks if c.get("ServiceID")}


def test_services_register_pass_and_deregister(cluster: Cluster, fresh_consul: DevAgent) -> None:
    scheduler = cluster.scheduler(name="s1")
    executor = cluster.executor("--tag", "role=web", name="e1")
    gateway, url = cluster.gateway(name="g1")
    expected = {"scheduler-s1", "executor-e1", "gateway-g1"}
    wait_until(
        lambda: all(_checks(fresh_consul).get(sid) == "passing" for sid in expected),
        timeout_s=20,
        what="all three services passing in the catalog",
    )
    with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
        assert json.load(resp)["status"] == "healthy"
    for process in (scheduler, executor, gateway):
        process.signal(signal.SIGTERM)
    assert [p.stop() for p in (scheduler, executor, gateway)] == [0, 0, 0]
    assert not expected & set(_checks(fresh_consul)), "a stopped service must deregister"


def test_sigkill_turns_the_health_check_critical(cluster: Cluster, fresh_consul: DevAgent) -> None:
    executor = cluster.executor(name="doomed")
    scheduler = cluster.scheduler(name="doomed-s")
    wait_until(lambda: _checks(fresh_consul).get("executor-doomed") == "passing", timeout_s=20)
    wait_until(lambda: _checks(fresh_consul).get("scheduler-doomed-s") == "passing", timeout_s=20)
    executor.kill()
    scheduler.kill()
    # TTL 3 s for executors, --lock-ttl 1.5 s for the scheduler: critical within a few seconds.
    wait_until(lambda: _checks(fresh_consul).get("executor-doomed") == "critical", timeout_s=8)
    wait_until(lambda: _checks(fresh_consul).get("scheduler-doomed-s") == "critical", timeout_s=5)
