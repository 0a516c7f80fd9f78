"""configd_client.openfeature.ConfigdProvider through the real openfeature-sdk client API, against the real SDK,
the session's Consul agent and a real configd server (pushes over HTTP)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd.devagent import free_ports
from configd_client import ConfigClient, ConfigdError
from configd_client.openfeature import ConfigdProvider
from tests.conftest import ServerProcess

SCHEMA = {"type": "object"}


class AnyDocument(BaseSettings):
    model_config = SettingsConfigDict(extra="allow")


FLAGS: dict[str, Any] = {
    "features": {"new_checkout": True, "banner": "spring", "max_items": 7, "ratio": 0.25, "whole": 2},
    "regions": ["eu", "us"],
    "odd/key": {"x~y": 1},
}


def push(server: ServerProcess, ref: str, data: dict[str, Any], *, schema: bool = False) -> int:
    with server.client("admin") as http:
        if schema:
            assert http.put(f"/api/v1/schemas/{ref}", json=SCHEMA).status_code == 201
        answer = http.put(f"/api/v1/configs/{ref}", json={"data": data})
        assert answer.status_code == 201, answer.text
        version: int = answer.json()["version"]
        return version


@pytest.fixture
def sdk(server: ServerProcess, tmp_path: Path) -> Iterator[ConfigClient]:
    with ConfigClient(
        server.consul_addr, prefix=server.prefix, cache_dir=tmp_path / "cache", application="of-tests"
    ) as client:
        yield client


@pytest.fixture
def provider(sdk: ConfigClient, unique_ns: str) -> Iterator[ConfigdProvider]:
    provider = ConfigdProvider(sdk, timeout=1.0)
    api.set_provider_and_wait(provider)
    try:
        yield provider
    finally:
        api.clear_providers()


@pytest.mark.timeout(60)
def test_typed_resolution_with_reason_variant_and_errors(
    server: ServerProcess, provider: ConfigdProvider, unique_ns: str
) -> None:
    ref = f"{unique_ns}/service"
    push(server, ref, FLAGS, schema=True)
    client = api.get_client()

    details = client.get_boolean_details(f"{ref}/features/new_checkout", False)
    assert (details.value, details.reason, details.variant, details.error_code) == (True, Reason.STATIC, "v1", None)
    assert details.flag_metadata["config"] == ref and details.flag_metadata["version"] == 1
    assert client.get_string_value(f"{ref}/features/banner", "x") == "spring"
    assert client.get_integer_value(f"{ref}/features/max_items", 0) == 7
    assert client.get_float_value(f"{ref}/features/ratio", 0.0) == 0.25
    assert client.get_float_value(f"{ref}/features/whole", 0.0) == 2.0  # an integer is also a float
    assert client.get_object_value(f"{ref}/regions", []) == ["eu", "us"]
    assert client.get_object_value(f"{ref}/features", {})["max_items"] == 7
    assert client.get_integer_value(f"{ref}/odd~1key/x~0y", 0) == 1  # JSON Pointer escapes
    assert client.get_string_value(f"{ref}/regions/1", "") == "us"

    missing = client.get_boolean_details(f"{ref}/features/absent", False)
    assert (missing.value, missing.error_code, missing.reason) == (False, ErrorCode.FLAG_NOT_FOUND, Reason.ERROR)
    no_config = client.get_boolean_details(f"{unique_ns}/nothing/x", True)
    assert (no_config.value, no_config.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    wrong = client.get_integer_details(f"{ref}/features/banner", 3)
    assert (wrong.value, wrong.error_code) == (3, ErrorCode.TYPE_MISMATCH)
    not_bool = client.get_boolean_details(f"{ref}/features/max_items", False)
    assert not_bool.error_code == ErrorCode.TYPE_MISMATCH
    not_int = client.get_integer_details(f"{ref}/features/ratio", 0)
    assert not_int.error_code == ErrorCode.TYPE_MISMATCH
    bad_key = client.get_boolean_details("Not A Key", False)
    assert bad_key.error_code == ErrorCode.PARSE_ERROR


@pytest.mark.timeout(60)
def test_configuration_changed_events_name_the_changed_flags(
    server: ServerProcess, sdk: ConfigClient, unique_ns: str
) -> None:
    ref = f"{unique_ns}/service"
    push(server, ref, FLAGS, schema=True)
    provider = ConfigdProvider(sdk, configs=[ref], timeout=1.0)
    events: list[EventDetails] = []
    arrived = threading.Event()

    def on_changed(details: EventDetails) -> None:
        events.append(details)
        arrived.set()

    api.set_provider_and_wait(provider)
    client = api.get_client()
    client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_changed)
    try:
        changed = {**FLAGS, "features": {**FLAGS["features"], "new_checkout": False}}
        push(server, ref, changed)
        assert arrived.wait(10), "no PROVIDER_CONFIGURATION_CHANGED after a push"
        assert events[0].flags_changed == [ref, f"{ref}/features", f"{ref}/features/new_checkout"]
        details = client.get_boolean_details(f"{ref}/features/new_checkout", True)
        assert (details.value, details.variant) == (False, "v2")

        arrived.clear()
        with server.client("admin") as http:
            assert http.request("DELETE", f"/api/v1/configs/{ref}").status_code == 200
        assert arrived.wait(10), "no PROVIDER_CONFIGURATION_CHANGED after a delete"
        assert events[-1].flags_changed == [ref]
        gone = client.get_boolean_details(f"{ref}/features/new_checkout", True)
        assert gone.error_code == ErrorCode.FLAG_NOT_FOUND

        arrived.clear()
        push(server, ref, FLAGS)  # re-created: the flags exist again
        assert arrived.wait(10)
        back = client.get_boolean_details(f"{ref}/features/new_checkout", False)
        assert (back.value, back.error_code) == (True, None)
    finally:
        client.remove_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_changed)
        api.clear_providers()


@pytest.mark.timeout(60)
def test_stale_while_running_from_the_cache(server: ServerProcess, unique_ns: str, tmp_path: Path) -> None:
    ref = f"{unique_ns}/service"
    push(server, ref, FLAGS, schema=True)
    cache = tmp_path / "cache"
    with ConfigClient(server.consul_addr, prefix=server.prefix, cache_dir=cache, register=False) as warm:
        assert warm.settings(AnyDocument, ref, timeout=5).version == 1
    # Consul "gone": a port nobody listens on; the SDK starts from its last-known-good cache.
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    offline = ConfigClient(dead, prefix=server.prefix, cache_dir=cache, register=False, wait_seconds=1)
    provider = ConfigdProvider(offline, configs=[ref], timeout=3.0)
    stale = threading.Event()

    def on_stale(_: EventDetails) -> None:
        stale.set()

    api.add_handler(ProviderEvent.PROVIDER_STALE, on_stale)
    try:
        api.set_provider_and_wait(provider)
        assert stale.wait(5), "no PROVIDER_STALE while running from the cache"
        client = api.get_client()
        deadline = time.monotonic() + 5
        while client.get_provider_status() != ProviderStatus.STALE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get_provider_status() == ProviderStatus.STALE
        details = client.get_boolean_details(f"{ref}/features/new_checkout", False)
        assert (details.value, details.reason, details.variant) == (True, Reason.STALE, "v1")
    finally:
        api.clear_providers()  # also drops the handlers
        offline.close()


@pytest.mark.timeout(60)
def test_provider_builds_its_client_from_the_environment(
    server: ServerProcess, unique_ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = f"{unique_ns}/service"
    push(server, ref, FLAGS, schema=True)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", server.consul_addr)
    monkeypatch.setenv("CONFIGD_PREFIX", server.prefix)
    monkeypatch.setenv("CONFIGD_CACHE_DIR", str(tmp_path / "cache"))
    provider = ConfigdProvider()
    api.set_provider_and_wait(provider)
    try:
        assert api.get_client().get_string_value(f"{ref}/features/banner", "") == "spring"
        assert provider.client.layout.prefix == server.prefix
    finally:
        api.clear_providers()  # shuts the provider down, which closes the client it built
    with pytest.raises(ConfigdError, match="closed"):  # the provider's own client, closed by its shutdown
        provider.client.settings(AnyDocument, ref, timeout=1)


@pytest.mark.timeout(60)
def test_shutdown_leaves_a_client_it_was_given_running(
    server: ServerProcess, sdk: ConfigClient, unique_ns: str
) -> None:
    ref = f"{unique_ns}/service"
    push(server, ref, FLAGS, schema=True)
    api.set_provider_and_wait(ConfigdProvider(sdk))
    assert api.get_client().get_integer_value(f"{ref}/features/max_items", 0) == 7
    api.clear_providers()
    assert sdk.settings(AnyDocument, ref, timeout=5).version == 1
