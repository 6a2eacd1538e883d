"""Integration fixtures: the Consul clients a test made are closed when it ends."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clients_closed(closed_clients: None) -> None:
    """See tests/conftest.py: closed_clients."""
