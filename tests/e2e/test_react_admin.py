"""Dkron's UI's data layer against a live cluster: react-admin's own JSON-server data provider (ra-data-json-server
5.13.3 and ra-core, the versions Dkron 4.1.2's UI locks, from the npm registry, pinned in package-lock.json) in
Node.js, asked for what Dkron's UI asks for on each of its views. A break of the class "every list answers 400"
shows up here, in our CI, not in a user's browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Gateway

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).parent / "clients" / "react_admin.mjs"
PAGE = {"page": 1, "perPage": 10}


def react_admin(url: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each call's answer as the data provider gives it to react-admin: {"data", "total"} or {"error", "status"}."""
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "ra-data-json-server").is_dir():
        pytest.fail("these tests need Node.js and the npm packages of package.json (scripts/setup.sh)", pytrace=False)
    done = subprocess.run(
        [node, str(DRIVER), f"{url}/v1"], input=json.dumps(calls), capture_output=True, text=True, timeout=60,
        cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def get_list(resource: str, field: str = "id", order: str = "ASC", **filters: str) -> dict[str, Any]:
    return {"method": "getList", "resource": resource,
            "params": {"pagination": PAGE, "sort": {"field": field, "order": order}, "filter": filters}}  # fmt: skip


def test_every_view_of_dkrons_ui_gets_its_data(gateway: Gateway) -> None:
    for name, command in (("alpha", "echo alpha"), ("beta", "exit 3"), ("gamma", "echo gamma")):
        gateway.create_job(name=name, displayname=f"The {name}", schedule="@manually", executor="shell",
                           executor_config={"command": command, "shell": "true"})  # fmt: skip
    gateway.http.post("/v1/jobs/gamma/toggle")
    for name in ("alpha", "beta"):
        gateway.run(name)
        gateway.wait_finished(name)
    gateway.run("alpha")
    gateway.wait_finished("alpha", 2)
    sorts = ["displayname", "schedule", "success_count", "error_count", "last_success", "last_error", "next"]
    executions_tab = {"method": "getManyReference", "resource": "executions", "params": {
        "target": "jobs", "id": "alpha", "pagination": {"page": 1, "perPage": 25},
        "sort": {"field": "id", "order": "DESC"}, "filter": {}}}  # fmt: skip
    answers = react_admin(gateway.url, [
        get_list("jobs"),                                              # the Jobs list, as it opens
        get_list("jobs", "id", "DESC"),
        {"method": "getList", "resource": "jobs",
         "params": {"pagination": {"page": 2, "perPage": 2}, "sort": {"field": "id", "order": "ASC"}, "filter": {}}},
        get_list("jobs", q="amm"),                                     # the search box
        get_list("jobs", status="failed"),                             # the status filter
        get_list("jobs", status="untriggered"),
        get_list("jobs", disabled="true"),
        *(get_list("jobs", field, "DESC") for field in sorts),         # every sortable column
        {"method": "getOne", "resource": "jobs", "params": {"id": "alpha"}},  # a job's page
        {"method": "getMany", "resource": "jobs", "params": {"ids": ["alpha", "beta"]}},
        executions_tab,                                                # its Executions tab
        get_list("members"),                                           # the dashboard
        get_list("busy"),
        {"method": "fetch", "resource": "stats?days=30", "params": {}},
        {"method": "fetch", "resource": "jobs/alpha", "params": {"method": "POST"}},          # Run
        {"method": "fetch", "resource": "jobs/beta/toggle", "params": {"method": "POST"}},    # Toggle
        {"method": "getOne", "resource": "jobs", "params": {"id": "ghost"}},
    ])  # fmt: skip
    jobs, descending, page_two, searched, failed, untriggered, disabled = answers[:7]
    by_column = answers[7 : 7 + len(sorts)]
    one, many, tab, members, busy, stats, run, toggle, ghost = answers[7 + len(sorts) :]
    errors = [a for a in answers[:-1] if "error" in a]
    assert not errors, errors
    assert [j["id"] for j in jobs["data"]] == ["alpha", "beta", "gamma"] and jobs["total"] == 3
    assert [j["id"] for j in descending["data"]] == ["gamma", "beta", "alpha"]
    assert ([j["id"] for j in page_two["data"]], page_two["total"]) == (["gamma"], 3)
    assert [j["id"] for j in searched["data"]] == ["gamma"]
    assert [j["id"] for j in failed["data"]] == ["beta"]
    assert [j["id"] for j in untriggered["data"]] == ["gamma"]
    assert [j["id"] for j in disabled["data"]] == ["gamma"]
    assert all(answer["total"] == 3 for answer in by_column)
    assert by_column[sorts.index("success_count")]["data"][0]["id"] == "alpha"
    assert one["data"]["id"] == "alpha" and one["data"]["success_count"] == 2
    assert sorted(j["id"] for j in many["data"]) == ["alpha", "beta"]  # the ids asked for, not every job
    assert tab["total"] == 2 and len(tab["data"]) == 2
    assert all(row["job_name"] == "alpha" and row["output"].startswith("alpha") for row in tab["data"])
    assert tab["data"][0]["started_at"] > tab["data"][1]["started_at"]  # newest first: id is started_at
    assert {m["Tags"]["role"] for m in members["data"]} == {"scheduler", "executor", "gateway"}
    assert busy["total"] == 0
    assert len(stats["data"]["stats"]) == 30 and stats["data"]["stats"][-1]["success_count"] == 2
    assert run["status"] == 202 and run["data"]["id"] == "alpha"
    assert toggle["status"] == 200 and toggle["data"]["disabled"] is True
    assert ghost["status"] == 404


def test_dkrons_ui_edits_creates_and_deletes(gateway: Gateway) -> None:
    gateway.create_job(name="edited", schedule="@every 1h", executor="shell", executor_config={"command": "date"})
    shown = react_admin(gateway.url, [{"method": "getOne", "resource": "jobs", "params": {"id": "edited"}}])[0]
    record = {**shown["data"], "owner": "ops", "starts_at": "2027-01-01T09:30"}  # a DateTimeInput's value
    new = {"name": "created", "schedule": "@manually", "executor": "shell", "executor_config": {"command": "true"},
           "tags": {}, "metadata": {}}  # fmt: skip
    answers = react_admin(gateway.url, [
        {"method": "update", "resource": "jobs", "params": {"id": "edited", "data": record, "previousData": shown}},
        {"method": "create", "resource": "jobs", "params": {"data": new}},
        {"method": "delete", "resource": "jobs", "params": {"id": "created", "previousData": {"id": "created"}}},
        {"method": "deleteMany", "resource": "jobs", "params": {"ids": ["edited"]}},
        get_list("jobs"),
    ])  # fmt: skip
    updated, created, deleted, deleted_many, left = answers
    assert updated["data"]["owner"] == "ops" and updated["data"]["starts_at"] == "2027-01-01T09:30:00Z"
    assert created["data"]["id"] == "created"
    assert deleted["data"]["id"] == "created" and deleted_many["data"] == ["edited"]
    assert left["total"] == 0
