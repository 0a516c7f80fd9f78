"""Shared fixtures: ONE real `consul agent -dev` per test session (free ports, health-polled, torn down).

Tests isolate themselves by key prefix (``layout`` fixture), never by mocking Consul.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import pytest

from configd.devagent import ConsulAgent
from configd_client._consul import ConsulGateway
from configd_client._layout import KeyLayout


@pytest.fixture(scope="session")
def consul_agent() -> Iterator[ConsulAgent]:
    agent = ConsulAgent.dev(name="configd-test")
    agent.start(timeout=60)
    try:
        yield agent
    finally:
        agent.cleanup()


@pytest.fixture(scope="session")
def consul_addr(consul_agent: ConsulAgent) -> str:
    return consul_agent.http_addr


@pytest.fixture
def gateway(consul_addr: str) -> Iterator[ConsulGateway]:
    with ConsulGateway(consul_addr, pool_size=32) as gw:
        yield gw


@pytest.fixture
def layout() -> KeyLayout:
    """A fresh key prefix per test, so tests sharing the session's agent never see each other's keys."""
    return KeyLayout(prefix=f"t-{uuid.uuid4().hex[:12]}")


def kv_tree(gateway: ConsulGateway, prefix: str = "") -> dict[str, tuple[str, int]]:
    """Consul's whole KV tree (or one prefix): key -> (sha256 of the value, ModifyIndex)."""
    _, entries = gateway.list(prefix, consistent=True)
    return {e.key: (hashlib.sha256(e.value).hexdigest(), e.modify_index) for e in entries}
