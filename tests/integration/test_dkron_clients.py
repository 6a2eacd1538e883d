"""Dkron's own Python clients from PyPI, pinned in the lock, against a live cluster: every operation each offers.

pydkron 0.2.4 (a thin REST client) and django-dkron 1.2.3 (a Django app: jobs kept in its database and synced
to Dkron, one-off async commands, and a reverse proxy for the dashboard), both unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import django
import pytest
import requests
from django.conf import settings
from pydkron.client import DkronClient, DkronClientException, DkronJobNotFound

from cronbus.common.consul.agent import DevAgent
from tests.helpers import Cluster, wait_until

TOKEN = "a-token-of-32-characters-long-xx"  # the gateway's admin token; django-dkron sends it by basic auth


@pytest.fixture
def gateway_url(
    cluster: Cluster, fresh_consul: DevAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A live cluster: a scheduler, an executor and a gateway that takes the admin token. The executor finds a
    `python` on its PATH (django-dkron's commands start with one; a machine may have only python3)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    cluster.scheduler(name="s1")
    cluster.executor(name="e1")
    _, url = cluster.gateway("--token", f"{TOKEN}:admin", name="gw")

    def ready() -> bool:
        try:
            health = requests.get(f"{url}/health", timeout=2).json()
        except (requests.RequestException, ValueError):
            return False
        return bool(health.get("leader_name"))

    wait_until(ready, timeout_s=30, what="a gateway with a leader")
    yield url


def _finished(url: str, job: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = requests.get(f"{url}/v1/jobs/{job}/executions", headers=headers, timeout=5).json()
    return rows if rows and all(r["finished_at"] != "0001-01-01T00:00:00Z" for r in rows) else []


def _ran(url: str, job: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The job's executions once one has finished: the leader knows an executor (it may join after the leader)."""
    return wait_until(lambda: _finished(url, job, headers), 30, 0.2, f"a finished execution of {job}")


# ---- pydkron ------------------------------------------------------------------------------------------------


def test_pydkron_does_every_operation_it_offers(cluster: Cluster, fresh_consul: DevAgent) -> None:
    cluster.scheduler(name="s1")
    cluster.executor(name="e1")
    _, url = cluster.gateway(name="gw")
    host = urlsplit(url).netloc
    client = DkronClient([host])
    wait_until(lambda: _leader_known(client), timeout_s=30, what="a leader")

    job = client.create_job({
        "name": "pyjob", "schedule": "@every 1h", "executor": "shell",
        "executor_config": {"command": "echo from pydkron"}, "tags": {"role": "dkron:1"},
    })  # fmt: skip
    assert job["name"] == "pyjob"
    assert [j["name"] for j in client.jobs()] == ["pyjob"]
    got = client.get_job("pyjob")
    assert got.name == "pyjob" and got.schedule == "@every 1h"
    got.owner = "ops"
    assert got.save()["owner"] == "ops"  # save_job: POST /v1/jobs, 201 expected
    wait_until(lambda: _run_accepted(client, "pyjob"), timeout_s=30, what="a run of pyjob accepted")
    ran = _ran(url, "pyjob")
    assert "from pydkron" in ran[0]["output"]
    executions = client.get_executions("pyjob")  # GET /v1/jobs/pyjob/executions/ (a trailing slash: redirected)
    assert executions and executions[0]["job_name"] == "pyjob"
    assert got.executions() == client.get_executions("pyjob")
    assert got.run()["name"] == "pyjob"
    toggled = client.toggle("pyjob")
    assert toggled["disabled"] is True and client.toggle("pyjob")["disabled"] is False
    for operation in (client.get_job, client.run_job, client.delete_job, client.get_executions, client.toggle):
        with pytest.raises(DkronJobNotFound):
            operation("no-such-job")
    with pytest.raises(DkronClientException, match="status=400"):
        client.save_job(client.get_job("pyjob").__class__.from_dict({"name": "Bad Name", "schedule": "x"}, client))
    assert got.delete()["name"] == "pyjob"
    assert client.jobs() == []
    assert client.status()["agent"]["name"] == "gw"  # GET /v1/


def _run_accepted(client: DkronClient, name: str) -> bool:
    """run_job answers the job when the leader took the run (once it knows an executor), an error text else."""
    try:
        return isinstance(client.run_job(name), dict)
    except ValueError:  # a plain-text 503 ("no executor ...") is not JSON
        return False


def _leader_known(client: DkronClient) -> bool:
    try:
        return bool(client.status()["serf"].get("leader"))
    except (DkronClientException, requests.RequestException, ValueError, KeyError):
        return False


# ---- django-dkron ---------------------------------------------------------------------------------------------


@pytest.fixture
def django_dkron(gateway_url: str, tmp_path: Path) -> Iterator[Any]:
    """django-dkron configured as its README says, on a SQLite database of this test's own."""
    auth = base64.b64encode(f"django:{TOKEN}".encode()).decode()
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test",
            ALLOWED_HOSTS=["testserver"],
            ROOT_URLCONF="tests.integration.django_urls",
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "django.contrib.sessions",
                "notifications",
                "dkron",
            ],
            MIDDLEWARE=[
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
            ],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "db.sqlite3")}},
            USE_TZ=True,
            DKRON_VERSION="4.1.2",
            DKRON_NAMESPACE="app",
        )
        django.setup()
    # django-dkron and Django's models can be imported only once the settings above are configured.
    from django.core.management import call_command  # noqa: PLC0415
    from dkron import utils  # noqa: PLC0415

    settings.DATABASES["default"]["NAME"] = str(tmp_path / "db.sqlite3")
    settings.DKRON_URL = gateway_url
    settings.DKRON_API_AUTH = auth
    for cached in (utils.dkron_url, utils.api_url, utils.namespace, utils.namespace_prefix):
        cached.cache_clear()
    call_command("migrate", verbosity=0, run_syncdb=True)
    yield utils


def test_django_dkron_syncs_resyncs_deletes_runs_async_and_proxies(django_dkron: Any, gateway_url: str) -> None:
    from django.contrib.auth.models import Permission, User  # noqa: PLC0415 (needs the configured settings)
    from django.test import Client  # noqa: PLC0415
    from dkron import models  # noqa: PLC0415

    utils = django_dkron
    headers = {"Authorization": f"Bearer {TOKEN}"}
    parent = models.Job.objects.create(name="nightly", schedule="0 0 3 * * *", command="echo nightly", retries=1)
    child = models.Job.objects.create(name="report", schedule="@parent nightly", command="echo report",
                                      use_shell=True)  # fmt: skip
    utils.sync_job(parent)  # POST /v1/jobs, 201 expected
    utils.sync_job("report", job_update=None)  # reads the job first (GET), then writes it back
    stored = requests.get(f"{gateway_url}/v1/jobs/app_report", headers=headers, timeout=5).json()
    assert stored["parent_job"] == "app_nightly" and stored["schedule"] == "@manually"
    assert stored["executor_config"] == {"shell": "true", "command": "echo report"}
    assert stored["metadata"] == {"cron": "auto"}
    nightly = requests.get(f"{gateway_url}/v1/jobs/app_nightly", headers=headers, timeout=5).json()
    assert nightly["dependent_jobs"] == ["app_report"] and nightly["retries"] == 1

    # resync: the metadata filter finds what the app manages; an orphan is deleted, the rest written again.
    command = {"command": "x"}
    orphan: dict[str, Any] = {"name": "app_orphan", "schedule": "@manually", "executor": "shell",
                              "executor_config": command, "metadata": {"cron": "auto"}}  # fmt: skip
    other: dict[str, Any] = {"name": "unmanaged", "schedule": "@manually", "executor": "shell",
                             "executor_config": command}  # fmt: skip
    for body in (orphan, other):
        assert requests.post(f"{gateway_url}/v1/jobs", json=body, headers=headers, timeout=5).status_code == 201
    child.enabled = False
    child.save()
    results = sorted(utils.resync_jobs())
    assert results == [("nightly", "u", None), ("orphan", "d", None), ("report", "u", None)]
    names = sorted(j["name"] for j in requests.get(f"{gateway_url}/v1/jobs", headers=headers, timeout=5).json())
    assert names == ["app_nightly", "app_report", "unmanaged"]
    report = requests.get(f"{gateway_url}/v1/jobs/app_report", headers=headers, timeout=5).json()
    assert report["disabled"] is True

    # run_async: a temporary @manually job created with ?runoncreate, which runs at once.
    name, link = utils.run_async("check")
    assert name.startswith("tmp_check_") and link.endswith(f"#/jobs/app_{name}/show/executions")
    temp = requests.get(f"{gateway_url}/v1/jobs/app_{name}", headers=headers, timeout=5).json()
    assert temp["metadata"] == {"temp": "true"} and temp["schedule"] == "@manually"
    assert temp["executor_config"]["command"].startswith("python ./manage.py run_dkron_async_command check ")
    ran = _ran(gateway_url, f"app_{name}", headers)  # it ran (and failed: there is no manage.py here)
    assert len(ran) == 1 and ran[0]["status"] == "failed" and ran[0]["exit_code"] == 2

    utils.delete_job("report")  # DELETE /v1/jobs/app_report, 200 expected
    utils.delete_job(models.Job.objects.get(name="nightly"))
    with pytest.raises(utils.DkronException) as missing:
        utils.delete_job("nightly")
    assert missing.value.code == 404

    # The dashboard's reverse proxy, for a user with the app's permission: the API through Django.
    user = User.objects.create_user("operator", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="can_use_dashboard"))
    browser = Client()
    browser.force_login(user)
    proxied = browser.get("/dkron/_/v1/jobs", {"_end": "10", "_order": "ASC", "_sort": "id", "_start": "0"})
    assert proxied.status_code == 200
    assert proxied["X-Total-Count"] == "2"
    assert [j["id"] for j in json.loads(proxied.content)] == [f"app_{name}", "unmanaged"]
    redirected = browser.get("/dkron/_/v1/jobs/")  # the gateway's redirect comes back through the proxy
    assert redirected.status_code == 301 and redirected["Location"] == "/dkron/_/v1/jobs"
    assert Client().get("/dkron/_/v1/jobs").status_code == 302  # no permission: to the login page
