"""Job names over the whole allowed alphabet (any Unicode lower-case letter, ASCII digits, '_' and '-') and words
that match cronbus's internal markers and key segments, through a live cluster: create, run, history delete,
delete and restore. Each name must behave like any other, and the cluster must stay healthy (a job named "fence"
once stopped the ledger)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import Cluster, wait_until

MARKERS = ["fence", "probe", "leader", "term", "status", "executions", "stats", "pause", "jobs", "_other", "-",
           "_", "0", "--", "_-_", "v1", "ui", "health", "metrics"]  # fmt: skip
LETTERS = st.characters(categories=["Ll"]) | st.sampled_from("0123456789_-")
NAMES = st.sampled_from(MARKERS) | st.text(LETTERS, min_size=1, max_size=40) | st.text(LETTERS, min_size=190,
                                                                                        max_size=200)  # fmt: skip


@pytest.fixture
def api(cluster: Cluster) -> Iterator[httpx.Client]:
    cluster.scheduler(name="s1")
    cluster.executor(name="e1")
    _, url = cluster.gateway(name="gw")
    with httpx.Client(base_url=url, timeout=10) as client:

        def ready() -> bool:
            try:
                return bool(client.get("/health").json().get("leader_name"))
            except (httpx.HTTPError, ValueError):
                return False

        wait_until(ready, timeout_s=30, what="a gateway with a leader")
        yield client


def _path(name: str) -> str:
    return f"/v1/jobs/{quote(name, safe='')}"


def _finished(api: httpx.Client, name: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = api.get(f"{_path(name)}/executions").json()
    return [r for r in rows if r["status"] not in ("pending", "running")]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_any_allowed_name_goes_through_create_run_history_delete_and_restore(api: httpx.Client, name: str) -> None:
    body = {"name": name, "schedule": "@manually", "executor": "shell",
            "executor_config": {"command": "echo ran"}}  # fmt: skip
    created = api.post("/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == _path(name)
    assert api.get(created.headers["location"]).json()["name"] == name

    def accepted() -> bool:
        answer = api.post(f"{_path(name)}/run")  # 503 until the leader knows the executor
        assert answer.status_code in (202, 503), answer.text
        return answer.status_code == 202

    wait_until(accepted, timeout_s=30, interval_s=0.3, what=f"a run of {name!r} accepted")
    rows = wait_until(lambda: _finished(api, name), timeout_s=30, interval_s=0.1, what=f"the run of {name!r}")
    assert rows[0]["job_name"] == name and rows[0]["status"] == "success"
    assert api.delete(f"{_path(name)}/executions").status_code == 200
    assert api.get(f"{_path(name)}/executions").json() == []
    dump = [api.get(_path(name)).json()]
    deleted = api.delete(_path(name))
    assert deleted.status_code == 200 and deleted.json()["name"] == name
    assert api.get(_path(name)).status_code == 404
    restored = api.post("/v1/restore", files={"file": ("dump.json", json.dumps(dump).encode(), "application/json")})
    assert restored.json() == [f"success create {name}"]
    assert api.get(_path(name)).json()["name"] == name
    assert api.delete(_path(name)).status_code == 200
    health = api.get("/health")
    assert health.status_code == 200, health.text
    assert health.json().get("leader_name") == "s1" and not health.json().get("invalid_jobs")
