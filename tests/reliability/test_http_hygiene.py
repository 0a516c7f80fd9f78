"""HTTP hygiene (issue 18): an oversized body gets its 413 with a readable detail, and every common client reads it
(no reset connection); /openapi.json has no reference that does not resolve."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from configd_core.consul import ConsulGateway
from tests.api_support import GOOD, rejected, setup_config
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.timeout(120), pytest.mark.reliability]

MB = 1024 * 1024
BIG = b'{"data": {"timeout_ms": 5, "blob": "' + b"x" * (10 * MB) + b'"}}'


@pytest.fixture
def target(server: ServerProcess, unique_ns: str) -> str:
    setup_config(server, unique_ns, "service", GOOD)
    return f"{server.base_url}/api/v1/configs/{unique_ns}/service"


def _headers(server: ServerProcess) -> dict[str, str]:
    return {**server.headers("admin"), "Content-Type": "application/json"}


def _urllib(server: ServerProcess, url: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=BIG, method="PUT", headers=_headers(server))
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _requests(server: ServerProcess, url: str) -> tuple[int, dict[str, Any]]:
    answer = requests.put(url, data=BIG, headers=_headers(server), timeout=60)
    return answer.status_code, answer.json()


def _httpx(server: ServerProcess, url: str) -> tuple[int, dict[str, Any]]:
    answer = httpx.put(url, content=BIG, headers=_headers(server), timeout=60)
    return answer.status_code, answer.json()


def _httpx_chunked(server: ServerProcess, url: str) -> tuple[int, dict[str, Any]]:
    def chunks() -> Iterator[bytes]:  # no Content-Length: refused as the stream passes the limit
        for start in range(0, len(BIG), MB):
            yield BIG[start : start + MB]

    answer = httpx.put(url, content=chunks(), headers=_headers(server), timeout=60)
    return answer.status_code, answer.json()


def _curl(server: ServerProcess, url: str, *extra: str) -> tuple[int, dict[str, Any]]:
    headers = [arg for name, value in _headers(server).items() for arg in ("-H", f"{name}: {value}")]
    done = subprocess.run(
        ["curl", "-sS", "-X", "PUT", "--data-binary", "@-", *headers, *extra, "-w", "\n%{http_code}", url],
        input=BIG,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    body, _, code = done.stdout.decode().rpartition("\n")
    return int(code), json.loads(body)


CLIENTS = {
    "urllib": _urllib,
    "requests": _requests,
    "httpx": _httpx,
    "httpx chunked": _httpx_chunked,
    "curl (Expect: 100-continue)": _curl,
    "curl (no Expect)": lambda server, url: _curl(server, url, "-H", "Expect:"),
}


@pytest.mark.parametrize("client", CLIENTS)
def test_every_common_client_reads_the_413(
    server: ServerProcess, gateway: ConsulGateway, target: str, client: str
) -> None:
    found: list[tuple[int, dict[str, Any]]] = []
    rejected(server, gateway, lambda: _as_response(found, CLIENTS[client](server, target)), 413)
    status, body = found[0]
    assert status == 413
    assert body["error"] == "RequestTooLarge"
    assert "configd accepts at most" in body["detail"]
    # The connection was closed gracefully: the server answers the next request as ever.
    with server.client("reader") as http:
        assert http.get(target.removeprefix(server.base_url)).json()["data"] == GOOD


def _as_response(found: list[tuple[int, dict[str, Any]]], result: tuple[int, dict[str, Any]]) -> httpx.Response:
    found.append(result)
    return httpx.Response(result[0], json=result[1])


def test_every_reference_of_the_openapi_document_resolves(server: ServerProcess) -> None:
    document = httpx.get(f"{server.base_url}/openapi.json", timeout=30).json()
    uri = "urn:configd:openapi"
    resolver = Registry().with_resource(uri, DRAFT202012.create_resource(document)).resolver(uri)
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert len(refs) > 20, refs
    unresolved = []
    for ref in sorted(set(refs)):
        try:
            resolver.lookup(ref)
        except Exception as exc:  # any failure is a finding
            unresolved.append(f"{ref}: {type(exc).__name__}")
    assert unresolved == []
    body = document["paths"]["/api/v1/import"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"kind", "namespace", "name", "document"} <= set(body["properties"]["items"]["items"]["properties"])
