"""The unit tier: pure logic, no network. A connection to anything but loopback fails the test at once (the one
loopback use is a CLI test that proves an unreachable server exits 5, connecting to a closed port)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> None:
    host = address[0] if isinstance(address, tuple) else None
    if host is not None:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise AssertionError(f"a unit test tried to reach the network: {address!r}")
    _connect(self, address)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
    yield


@pytest.fixture(scope="session")
def consul_agent() -> None:
    raise AssertionError("the unit tier starts no Consul agent: move the test to tests/integration")
