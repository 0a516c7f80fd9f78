"""Hostile input through the HTTP API: every case is a 4xx with a readable detail, and Consul is unchanged except
for the one audit entry of the rejected write (none when the namespace itself is unusable).

Decision recorded here and in docs/reliability.md: duplicate keys in a JSON body are REFUSED (422), not
resolved last-wins; numbers must fit an IEEE 754 double (1e400 and 10**400 are 422).
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import socket
from collections.abc import Iterator

import httpx
import pytest

from configd_core.consul import ConsulGateway
from configd_core.diff import diff_json
from configd_core.errors import InvalidName
from configd_core.layout import NAME_PATTERN, validate_name
from tests.api_support import GOOD, rejected, setup_config
from tests.conftest import ServerProcess, kv_tree

pytestmark = [pytest.mark.timeout(120), pytest.mark.reliability]

MB = 1024 * 1024


@pytest.fixture
def target(server: ServerProcess, unique_ns: str) -> str:
    setup_config(server, unique_ns, "service", GOOD)
    return f"/api/v1/configs/{unique_ns}/service"


def _put(server: ServerProcess, path: str, body: bytes, content_type: str = "application/json") -> httpx.Response:
    headers = {"content-type": content_type}
    with server.client("admin") as http:
        return http.put(path, content=body, headers=headers)


BODIES: dict[str, tuple[bytes, int, str]] = {
    # name: (body, status, a phrase the detail must contain)
    "invalid UTF-8": (b'{"data": {"timeout_ms": 5, "blob": "\xff\xfe\xfd"}}', 400, "not UTF-8"),
    "raw NUL byte": (b'{"data": {"timeout_ms": 5, "blob": "a\x00b"}}', 422, "not valid JSON"),
    "nested 10,000 deep": (b'{"data": {"nested": ' + b"[" * 10_000 + b"]" * 10_000 + b"}}", 422, "deep"),
    "1e400": (b'{"data": {"timeout_ms": 5, "nested": 1e400}}', 422, "range of a JSON number"),
    "-1e400": (b'{"data": {"timeout_ms": 5, "nested": -1e400}}', 422, "range of a JSON number"),
    "10**400": (b'{"data": {"timeout_ms": 5, "nested": 1' + b"0" * 400 + b"}}", 422, "range of a JSON number"),
    "5000-digit integer": (b'{"data": {"timeout_ms": 5, "nested": ' + b"7" * 5000 + b"}}", 422, "5000 digits"),
    "huge expected_version": (b'{"data": {"timeout_ms": 5}, "expected_version": 1' + b"0" * 400 + b"}", 422, "range"),
    "expected_version false": (b'{"data": {"timeout_ms": 5}, "expected_version": false}', 422, "JSON integer"),
    "expected_version string": (b'{"data": {"timeout_ms": 5}, "expected_version": "1"}', 422, "JSON integer"),
    "NaN": (b'{"data": {"timeout_ms": 5, "nested": NaN}}', 422, "NaN"),
    "duplicate keys": (b'{"data": {"timeout_ms": 5, "timeout_ms": 6}}', 422, "repeats the key 'timeout_ms'"),
    "duplicate envelope keys": (b'{"data": {"timeout_ms": 5}, "data": {"timeout_ms": 6}}', 422, "repeats the key"),
    "not JSON": (b"timeout_ms=5", 422, "not valid JSON"),
    "empty": (b"", 422, "empty"),
    "array": (b"[1, 2]", 422, "expected shape"),
    "data not an object": (b'{"data": [1, 2]}', 422, "JSON object"),
    "message too long": (json.dumps({"data": GOOD, "message": "m" * 5000}).encode(), 422, "message"),
    "lone surrogate": (b'{"data": {"timeout_ms": 5, "blob": "\\ud800"}}', 422, "surrogates"),
}


@pytest.mark.parametrize("case", sorted(BODIES))
def test_hostile_bodies_are_4xx_and_write_only_their_audit_entry(
    case: str, server: ServerProcess, gateway: ConsulGateway, target: str
) -> None:
    body, status, phrase = BODIES[case]
    answer, record = rejected(server, gateway, lambda: _put(server, target, body), status)
    assert phrase in answer.text, answer.json()  # the detail, or the errors it lists
    assert record.action == "push" and record.actor == "admin"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/xml"]
)
def test_wrong_content_types_are_415(
    content_type: str, server: ServerProcess, gateway: ConsulGateway, target: str
) -> None:
    body = json.dumps({"data": GOOD}).encode()
    answer, _ = rejected(server, gateway, lambda: _put(server, target, body, content_type), 415)
    assert "application/json" in answer.json()["detail"]


def test_ten_megabyte_bodies_are_413_declared_or_streamed(
    server: ServerProcess, gateway: ConsulGateway, target: str
) -> None:
    big = b'{"data": {"timeout_ms": 5, "blob": "' + b"x" * (10 * MB) + b'"}}'
    answer, _ = rejected(server, gateway, lambda: _put(server, target, big), 413)
    assert "at most" in answer.json()["detail"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused as soon as the stream passes the limit
        for start in range(0, len(big), MB):
            yield big[start : start + MB]

    def streamed() -> httpx.Response:
        with server.client("admin") as http:
            return http.put(target, content=chunked(), headers={"content-type": "application/json"})

    answer, _ = rejected(server, gateway, streamed, 413)
    assert "at most" in answer.json()["detail"]


def test_escaped_nul_is_data_and_round_trips(server: ServerProcess, target: str) -> None:
    """``\\u0000`` inside a JSON string is legal data (unlike a raw NUL byte): stored and returned exactly."""
    data = {"timeout_ms": 5, "blob": "a\x00b", "flags": {"k\x00ey": True}}
    with server.client("admin") as http:
        assert http.put(target, json={"data": data}).status_code == 201
        assert http.get(target).json()["data"] == data


def _raw(server: ServerProcess, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, object]]:
    """A request whose path is sent byte for byte (httpx would normalise ``..``)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        headers = {"Authorization": f"Bearer {server.tokens['admin']}", "Content-Type": "application/json"}
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


ODD_PATHS = [
    "/api/v1/configs/../service",
    "/api/v1/configs/%2e%2e/service",
    "/api/v1/configs/{ns}/..",
    "/api/v1/configs/{ns}/%2e%2e",
    "/api/v1/configs/{ns}/..%2f..%2fetc%2fpasswd",
    "/api/v1/configs/{ns}/a%00b",
    "/api/v1/configs/a%00b/service",
    "/api/v1/configs/{ns}/%ff%fe",
    "/api/v1/configs/{ns}/UPPER",
    "/api/v1/configs/{ns}/a%20b",
    "/api/v1/configs/{ns}/.hidden",
    "/api/v1/configs/{ns}/-dash",
    "/api/v1/configs/{ns}/" + "n" * 65,
    "/api/v1/configs/{ns}/%E5%90%8D%E5%89%8D",
    "/api/v1/configs/{ns}/a;b",
    "/api/v1/configs/{ns}/%5c..%5cservice",
    "/api/v1/schemas/{ns}/..%2f..",
    "/api/v1/schemas/..%2f/service",
]


@pytest.mark.parametrize("template", ODD_PATHS)
def test_odd_names_and_path_traversal(
    template: str, server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    setup_config(server, unique_ns, "service", GOOD)
    path = template.format(ns=unique_ns)
    before = kv_tree(gateway, f"{server.prefix}/")
    status, body = _raw(server, "PUT", path, json.dumps({"data": GOOD}).encode())
    read_status, read_body = _raw(server, "GET", path)
    after = kv_tree(gateway, f"{server.prefix}/")
    assert 400 <= status < 500 and isinstance(body.get("detail"), str) and body["detail"], (status, body)
    assert 400 <= read_status < 500 and read_body.get("detail"), (read_status, read_body)
    audit = server.layout.audit_prefix(unique_ns)
    assert {k: v for k, v in before.items() if not k.startswith(audit)} == {
        k: v for k, v in after.items() if not k.startswith(audit)
    }, "an odd name changed Consul outside the audit log"
    added = set(after) - set(before)
    assert len(added) <= 1, added  # the rejection's audit entry, when the namespace was usable
    # Nothing escaped the prefix: no key anywhere in Consul outside configd prefixes mentions the odd name.
    assert not [k for k in kv_tree(gateway) if "passwd" in k or k.startswith(("..", "/"))]


def test_schema_references_are_never_fetched(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    """A ``$ref`` to a URL is refused at registration (422) and configd never connects to it (no SSRF)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        for ref in [f"http://127.0.0.1:{port}/schema.json", "#/definitions/missing", "urn:nothing"]:
            schema = {"type": "object", "properties": {"a": {"$ref": ref}}}

            def register(schema: dict[str, object] = schema) -> httpx.Response:
                with server.client("admin") as http:
                    return http.put(f"/api/v1/schemas/{unique_ns}/remote", json=schema)

            answer, _ = rejected(server, gateway, register, 422)
            assert answer.json()["errors"][0]["path"] == "/properties/a/$ref", answer.json()
            assert "never fetches" in answer.json()["errors"][0]["message"]
        with pytest.raises(TimeoutError):
            listener.accept()  # configd never tried to fetch the URL
        # References inside the schema keep working.
        local = {"$defs": {"ms": {"type": "integer", "minimum": 1}}, "properties": {"a": {"$ref": "#/$defs/ms"}}}
        with server.client("admin") as http:
            assert http.put(f"/api/v1/schemas/{unique_ns}/local", json=local).status_code == 201
            bad = http.put(f"/api/v1/configs/{unique_ns}/local", json={"data": {"a": 0}})
            assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "/a"
            assert http.put(f"/api/v1/configs/{unique_ns}/local", json={"data": {"a": 5}}).status_code == 201
    finally:
        listener.close()


def test_openapi_name_pattern_is_validate_name() -> None:
    """The pattern the OpenAPI document states for {ns}/{name} accepts exactly what validate_name accepts."""
    for length in range(1, 6):
        for letters in itertools.product("a0._-/A ", repeat=length):
            name = "".join(letters)
            try:
                validate_name(name)
                valid = True
            except InvalidName:
                valid = False
            assert valid == bool(re.fullmatch(NAME_PATTERN, name)), name


def test_405_lists_every_method_of_the_path(server: ServerProcess, unique_ns: str) -> None:
    with server.client("admin") as http:
        answer = http.request("PATCH", f"/api/v1/configs/{unique_ns}/service")
    assert answer.status_code == 405 and answer.json()["detail"]
    assert answer.headers["allow"] == "DELETE, GET, PUT"


def test_schema_with_an_invalid_regex_is_refused(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    """An invalid ``pattern`` was accepted at registration and then made every push a 500 (re.error)."""
    schema = {"type": "object", "properties": {"a": {"pattern": "(("}}, "patternProperties": {"[": {}}}

    def register() -> httpx.Response:
        with server.client("admin") as http:
            return http.put(f"/api/v1/schemas/{unique_ns}/regex", json=schema)

    answer, _ = rejected(server, gateway, register, 422)
    assert {e["path"] for e in answer.json()["errors"]} == {"/properties/a/pattern", "/patternProperties"}


def test_diff_of_keys_that_look_like_digits() -> None:
    """'²' passes str.isdigit() but not int(): sorting such a key made /validate a 500 (found by schemathesis)."""
    changes = diff_json({"a": 1}, {"²": 1, "10": 2, "9": 3, "٣": 4})
    assert [c.path for c in changes] == ["/9", "/10", "/a", "/²", "/٣"]
    assert {c.op for c in changes} == {"add", "remove"}


def test_validate_with_odd_keys_is_not_a_500(server: ServerProcess, target: str) -> None:
    with server.client("admin") as http:
        answer = http.post(f"{target}/validate", json={"data": {"timeout_ms": 5, "nested": {"²": {"٣": [1]}}}})
    assert answer.status_code == 200 and answer.json()["valid"] is True, answer.text
