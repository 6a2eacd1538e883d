"""Property-based fuzzing of a real gateway process from its own OpenAPI document: never a 5xx, never a hang."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.client import ConsulClient
from cronbus.common.settings import GatewaySettings
from cronbus.services.gateway.api.app import create_app
from tests.helpers import Cluster, wait_until

REQUEST_TIMEOUT_S = 10.0  # a request that takes longer is a hang


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One gateway process (and a Consul of its own) for the whole module: fuzz cases are many and short."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    agent = DevAgent(log_path=tmp / "consul.log").start()
    group = Cluster(agent.address, tmp)
    try:
        _, url = group.gateway(name="fuzz", port=0)
        wait_until(lambda: _healthy(url), timeout_s=30, what="gateway healthy")
        yield url
    finally:
        group.stop_all()
        agent.stop()


# The document the gateway serves, built in-process (the same code path, no server needed at collection time;
# schemathesis' lazy fixture loading does not work with pytest 9).
DOCUMENT = json.loads(
    msgspec.json.encode(create_app(GatewaySettings(node_name="schema"), ConsulClient()).openapi_schema.to_schema())
)
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path="/v1/leave")  # leave stops the gateway


def test_the_served_document_is_the_one_fuzzed(gateway_url: str) -> None:
    with urllib.request.urlopen(f"{gateway_url}/v1/openapi.json", timeout=5) as response:
        served = json.load(response)
    assert served["paths"].keys() == DOCUMENT["paths"].keys()


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors_and_documented_statuses(case: schemathesis.Case[Any], gateway_url: str) -> None:
    response = case.call(base_url=gateway_url, timeout=REQUEST_TIMEOUT_S)
    # No scheduler runs here, so run/kill/busy answer 503 "no leader": documented, and not a failure of the
    # gateway. Anything else of 5xx is.
    assert response.status_code < 500 or (response.status_code, response.text) == (503, "no leader"), (
        f"{case.method} {case.formatted_path} -> {response.status_code} {response.text!r}"
    )
    # Every check but "schema-valid data is accepted": the schema cannot express the name rule, cron syntax or
    # time zones, so the gateway rightly rejects much of what it allows.
    case.validate_response(response, excluded_checks=[not_a_server_error, positive_data_acceptance])
