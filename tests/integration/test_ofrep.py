"""The OFREP endpoints of a real configd server: single and bulk evaluation, ETag, errors, tokens."""

from __future__ import annotations

import urllib.parse
from typing import Any

from tests.conftest import ServerProcess

SCHEMA = {"type": "object", "properties": {"token": {"type": "string", "writeOnly": True}}}
FLAGS: dict[str, Any] = {
    "features": {"new_checkout": True, "banner": "spring"},
    "regions": ["eu"],
    "limit": 5,
    "token": "secret",
}


def setup(server: ServerProcess, ref: str, data: dict[str, Any]) -> None:
    server.allow_secrets(ref.split("/")[0])  # the schema marks `token` secret: the server seals it
    with server.client("admin") as http:
        assert http.put(f"/api/v1/schemas/{ref}", json=SCHEMA).status_code in (200, 201)
        assert http.put(f"/api/v1/configs/{ref}", json={"data": data}).status_code == 201


def test_single_flag_evaluation_percent_encoded_and_errors(server: ServerProcess, unique_ns: str) -> None:
    ref = f"{unique_ns}/service"
    setup(server, ref, FLAGS)
    key = f"{ref}/features/new_checkout"
    with server.client("reader") as http:
        answer = http.post(f"/ofrep/v1/evaluate/flags/{urllib.parse.quote(key, safe='')}", json={"context": {}})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "key": key,
            "value": True,
            "reason": "STATIC",
            "variant": "v1",
            "metadata": {"config": ref, "version": 1, "sha256": answer.json()["metadata"]["sha256"]},
        }
        plain = http.post(f"/ofrep/v1/evaluate/flags/{ref}/regions", json={"context": {"targetingKey": "u1"}})
        assert (plain.status_code, plain.json()["value"]) == (200, ["eu"])

        missing = http.post(f"/ofrep/v1/evaluate/flags/{ref}/features/absent", json={"context": {}})
        assert missing.status_code == 404
        assert missing.json()["errorCode"] == "FLAG_NOT_FOUND" and missing.json()["key"] == f"{ref}/features/absent"
        secret = http.post(f"/ofrep/v1/evaluate/flags/{ref}/token", json={})  # secret fields are never flags
        assert (secret.status_code, secret.json()["errorCode"]) == (404, "FLAG_NOT_FOUND")
        no_config = http.post(f"/ofrep/v1/evaluate/flags/{unique_ns}/nothing/x", json={})
        assert (no_config.status_code, no_config.json()["errorCode"]) == (404, "FLAG_NOT_FOUND")
        bad_key = http.post("/ofrep/v1/evaluate/flags/NOT%20A%20KEY", json={})
        assert (bad_key.status_code, bad_key.json()["errorCode"]) == (400, "PARSE_ERROR")
        bad_body = http.post(f"/ofrep/v1/evaluate/flags/{key}", content=b"{nope", headers={"content-type": "a/json"})
        assert (bad_body.status_code, bad_body.json()["errorCode"]) == (400, "PARSE_ERROR")
        bad_context = http.post(f"/ofrep/v1/evaluate/flags/{key}", json={"context": [1]})
        assert (bad_context.status_code, bad_context.json()["errorCode"]) == (400, "INVALID_CONTEXT")

    with server.client(None) as anonymous:
        assert anonymous.post(f"/ofrep/v1/evaluate/flags/{key}", json={}).status_code == 401
    with server.client("team-reader") as scoped:  # covers team-a-* only
        assert scoped.post(f"/ofrep/v1/evaluate/flags/{key}", json={}).status_code == 403


def test_bulk_evaluation_with_etag(server: ServerProcess, unique_ns: str) -> None:
    setup(server, f"{unique_ns}/service", FLAGS)
    setup(server, f"{unique_ns}/other", {"on": False, "deep": {"a": {"b": "c"}}})
    body = {"context": {"configd.namespace": unique_ns}}
    with server.client("reader") as http:
        first = http.post("/ofrep/v1/evaluate/flags", json=body)
        assert first.status_code == 200, first.text
        flags = {f["key"]: f for f in first.json()["flags"]}
        assert sorted(flags) == [
            f"{unique_ns}/other/deep/a/b",
            f"{unique_ns}/other/on",
            f"{unique_ns}/service/features/banner",
            f"{unique_ns}/service/features/new_checkout",
            f"{unique_ns}/service/limit",
            f"{unique_ns}/service/regions",
        ]
        assert flags[f"{unique_ns}/service/limit"]["value"] == 5
        assert flags[f"{unique_ns}/other/on"] == {
            **flags[f"{unique_ns}/other/on"],
            "value": False,
            "reason": "STATIC",
            "variant": "v1",
        }
        etag = first.headers["etag"]
        again = http.post("/ofrep/v1/evaluate/flags", json=body, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag

        with server.client("editor") as editor:
            changed = {**FLAGS, "limit": 6}
            assert editor.put(f"/api/v1/configs/{unique_ns}/service", json={"data": changed}).status_code == 201
        after = http.post("/ofrep/v1/evaluate/flags", json=body, headers={"If-None-Match": etag})
        assert after.status_code == 200 and after.headers["etag"] != etag
        assert {f["key"]: f["value"] for f in after.json()["flags"]}[f"{unique_ns}/service/limit"] == 6

        bad = http.post("/ofrep/v1/evaluate/flags", json={"context": {"configd.namespace": ["Bad Name"]}})
        assert (bad.status_code, bad.json()["errorCode"]) == (400, "INVALID_CONTEXT")
    with server.client("team-reader") as scoped:
        assert scoped.post("/ofrep/v1/evaluate/flags", json=body).status_code == 403
        own = scoped.post("/ofrep/v1/evaluate/flags", json={"context": {}})
        assert own.status_code == 200
        assert all(f["key"].startswith("team-a-") for f in own.json()["flags"])
