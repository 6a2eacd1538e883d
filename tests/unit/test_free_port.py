"""Test processes get their ports from free_port(): one port given twice would make two listeners collide."""

from __future__ import annotations

import socket

from cronbus.common.consul.agent import free_port


def test_free_ports_are_free_and_never_repeat() -> None:
    ports = [free_port() for _ in range(2000)]  # the kernel alone repeats some within a few hundred
    assert len(set(ports)) == len(ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))
