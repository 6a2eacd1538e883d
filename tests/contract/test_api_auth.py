"""API tokens: 401 without a valid token, 403 below the route's role (read < operator < admin), /health open."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cronbus.common.consul.client import ConsulClient
from tests.contract.test_api_jobs import gateway_client, job_body

READ = "read-token-0123456789"
OPERATOR = "operator-token-0123456789"
ADMIN = "admin-token-0123456789"
TOKENS = {READ: "read", OPERATOR: "operator", ADMIN: "admin"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api(consul: ConsulClient) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(consul, tokens=TOKENS) as client:
        response = await client.post("/v1/jobs", json=job_body(), headers=bearer(ADMIN))
        assert response.status_code == 201
        yield client


async def test_no_or_a_wrong_token_is_401(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/jobs")
    assert response.status_code == 401
    assert response.text == "a valid API token is required (Authorization: Bearer <token>)"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await api.get("/v1/jobs", headers=bearer("not-a-token"))).status_code == 401
    assert (await api.get("/v1/jobs", headers={"Authorization": f"Basic {READ}"})).status_code == 401
    assert (await api.get("/v1/jobs", headers={"Authorization": "Bearer "})).status_code == 401


async def test_health_is_always_open(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).status_code == 200


async def test_preflights_need_no_token(api: httpx.AsyncClient) -> None:
    response = await api.options(
        "/v1/jobs/job1",
        headers={
            "Origin": "http://ui",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 204
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


async def test_read_may_only_read(api: httpx.AsyncClient) -> None:
    for path in ("/v1/jobs", "/v1/jobs/job1", "/v1/jobs/job1/executions", "/v1/members", "/v1/pause", "/metrics"):
        assert (await api.get(path, headers=bearer(READ))).status_code == 200, path
    assert (await api.get("/v1/openapi.json", headers=bearer(READ))).status_code == 200
    preview = await api.post("/v1/schedule/preview", json={"schedule": "@daily"}, headers=bearer(READ))
    assert preview.status_code == 200
    response = await api.post("/v1/jobs/job1/run", headers=bearer(READ))
    assert response.status_code == 403
    assert response.text == "the token's role 'read' may not do this (needs 'operator')"
    assert (await api.post("/v1/jobs", json=job_body(), headers=bearer(READ))).status_code == 403
    assert (await api.delete("/v1/jobs/job1", headers=bearer(READ))).status_code == 403


async def test_operator_may_also_run_toggle_and_kill(api: httpx.AsyncClient) -> None:
    # No leader in this test: 503 shows the request got past authorisation.
    assert (await api.post("/v1/jobs/job1/run", headers=bearer(OPERATOR))).status_code == 503
    assert (await api.post("/v1/jobs/job1", headers=bearer(OPERATOR))).status_code == 503
    assert (await api.post("/v1/jobs/job1/toggle", headers=bearer(OPERATOR))).status_code == 200
    assert (await api.post("/v1/jobs/job1/executions/x/kill", headers=bearer(OPERATOR))).status_code == 404
    for method, path in (
        ("POST", "/v1/jobs"),
        ("PUT", "/v1/jobs/job1"),
        ("DELETE", "/v1/jobs/job1"),
        ("DELETE", "/v1/jobs/job1/executions"),
        ("POST", "/v1/pause"),
        ("POST", "/v1/unpause"),
        ("POST", "/v1/leave"),
        ("POST", "/v1/restore"),
    ):
        response = await api.request(method, path, json=job_body(), headers=bearer(OPERATOR))
        assert response.status_code == 403, (method, path)
        assert response.text.endswith("(needs 'admin')")


async def test_admin_may_do_everything(api: httpx.AsyncClient) -> None:
    assert (await api.post("/v1/pause", headers=bearer(ADMIN))).status_code == 200
    assert (await api.post("/v1/unpause", headers=bearer(ADMIN))).status_code == 200
    assert (await api.put("/v1/jobs/job1", json=job_body(owner="x"), headers=bearer(ADMIN))).status_code == 201
    assert (await api.delete("/v1/jobs/job1/executions", headers=bearer(ADMIN))).status_code == 200
    assert (await api.delete("/v1/jobs/job1", headers=bearer(ADMIN))).status_code == 200


async def test_the_dkron_token_header_and_any_bearer_case_work(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/jobs", headers={"X-Dkron-Token": READ})).status_code == 200
    assert (await api.get("/v1/jobs", headers={"Authorization": f"bearer {READ}"})).status_code == 200
    response = await api.post("/v1/jobs/job1/toggle", headers={"X-Dkron-Token": READ})
    assert response.status_code == 403


async def test_without_tokens_everything_is_open(consul: ConsulClient) -> None:
    async with gateway_client(consul) as client:
        assert (await client.post("/v1/jobs", json=job_body())).status_code == 201
        assert (await client.delete("/v1/jobs/job1")).status_code == 200


async def test_whoami_reports_the_role_and_streams_take_a_query_token(consul: ConsulClient) -> None:
    async with gateway_client(consul, tokens=TOKENS) as http:
        assert (await http.get("/v1/whoami")).status_code == 401
        for token, role in TOKENS.items():
            reply = await http.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
            assert reply.json() == {"role": role, "auth": True}
        # Only the stream route takes ?token= (EventSource cannot send headers); it then answers 404, not 401.
        reader = next(t for t, r in TOKENS.items() if r == "read")
        stream = await http.get(f"/v1/jobs/nope/executions/x/stream?token={reader}")
        assert stream.status_code == 404
        assert (await http.get(f"/v1/jobs?token={reader}")).status_code == 401
    async with gateway_client(consul) as http:
        assert (await http.get("/v1/whoami")).json() == {"role": "admin", "auth": False}
