"""Pure-logic tests of the shared core (no network): names, layout, encodings, diff, record schemas."""

from __future__ import annotations

import base64
import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from configd.record_schemas import render
from configd_client import ConfigdError, ConfigTooLarge, InvalidName
from configd_core.diff import diff_json, unified_diff
from configd_core.layout import CHUNK_BYTES, MAX_CONFIG_BYTES, MAX_RECORD_BYTES, KeyLayout, parse_ref, validate_name
from configd_core.records import (
    ENVELOPE_KEY,
    SchemaRef,
    VersionRecord,
    canonical_json,
    decode_data,
    decode_data_and_bytes,
    document_sha256,
    encode_data,
    json_depth,
    sha256_hex,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["payments", "a", "web-frontend", "search_ranking", "v1.2", "0day", "x" * 64])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "a/b", "..", "a..b", ".a", "-a", "x" * 65, "a b", "a\x00", "ü", "a\n"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_name(name)


def test_parse_ref() -> None:
    assert parse_ref("payments/service") == ("payments", "service")
    for bad in ["payments", "a/b/c", "/b", "a/", "../x"]:
        with pytest.raises(InvalidName):
            parse_ref(bad)


def test_layout_sorts_versions_numerically_and_isolates_namespaces() -> None:
    layout = KeyLayout("p")
    keys = [layout.version("ns", "n", v) for v in (1, 2, 10, 100, 9)]
    assert sorted(keys) == [layout.version("ns", "n", v) for v in (1, 2, 9, 10, 100)]
    assert layout.head("a", "x").startswith(layout.heads_prefix("a"))
    assert not layout.head("ab", "x").startswith(layout.heads_prefix("a"))


def _record(data: Any, encoded: Any) -> VersionRecord:
    canonical = canonical_json(data)
    return VersionRecord(
        namespace="n",
        name="c",
        version=1,
        sha256=sha256_hex(canonical),
        size=len(canonical),
        schema_ref=SchemaRef(namespace="n", name="c", version=1),
        author="t",
        created_at="2026-01-01T00:00:00.000000Z",
        encoding=encoded.encoding,
        data=encoded.inline,
        chunks=len(encoded.chunks),
    )


def test_small_config_is_inline_json() -> None:
    data = {"b": 1, "a": [1, 2, {"c": None}]}
    encoded = encode_data(data, canonical_json(data))
    assert encoded.encoding == "json" and encoded.inline == data and not encoded.chunks
    assert decode_data(_record(data, encoded), lambda r: []) == data


def test_compressible_config_is_gzip_inline() -> None:
    data = {"rows": ["same text again and again"] * 20000}
    encoded = encode_data(data, canonical_json(data))
    assert encoded.encoding == "gzip+base64" and len(encoded.inline) < MAX_RECORD_BYTES
    assert json.loads(gzip.decompress(base64.b64decode(encoded.inline))) == data
    assert decode_data(_record(data, encoded), lambda r: []) == data


def test_incompressible_config_is_chunked_and_checked() -> None:
    data = {"noise": os.urandom(600 * 1024).hex()}
    encoded = encode_data(data, canonical_json(data))
    assert encoded.encoding == "gzip-chunks" and encoded.inline is None
    assert all(len(c) <= CHUNK_BYTES for c in encoded.chunks) and len(encoded.chunks) >= 3
    record = _record(data, encoded)
    assert decode_data(record, lambda r: list(encoded.chunks)) == data
    with pytest.raises(ConfigdError, match="chunks"):
        decode_data(record, lambda r: list(encoded.chunks[:-1]))
    torn = [*encoded.chunks[:-1], gzip.compress(b"")[:0] + encoded.chunks[-1][:-1]]
    with pytest.raises(Exception):  # noqa: B017 - a torn gzip stream fails in zlib or the sha256 check
        decode_data(record, lambda r: torn)


def test_compressed_data_is_the_canonical_json_and_is_hashed_as_read() -> None:
    data = {"z": 1, "a": ["é"] * 100, "noise": os.urandom(400 * 1024).hex()}  # keys out of canonical order
    canonical = canonical_json(data)
    encoded = encode_data(data, canonical)
    assert encoded.encoding == "gzip-chunks" and gzip.decompress(b"".join(encoded.chunks)) == canonical
    back, raw = decode_data_and_bytes(_record(data, encoded), lambda r: list(encoded.chunks))
    assert back == data and raw == canonical


def test_compressed_data_from_before_is_checked_by_reserialising() -> None:
    # Records written before stored the compact JSON in the key order sent: not canonical, still verified.
    data = {"z": 1, "a": ["same text again and again"] * 20000}
    compact = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    assert compact != canonical_json(data)
    record = _record(data, encode_data(data, canonical_json(data))).model_copy(
        update={"data": base64.b64encode(gzip.compress(compact, mtime=0)).decode("ascii")}
    )
    assert record.encoding == "gzip+base64"
    assert decode_data_and_bytes(record, lambda r: []) == (data, None)
    other = json.dumps({**data, "z": 2}, separators=(",", ":")).encode()
    tampered = record.model_copy(update={"data": base64.b64encode(gzip.compress(other, mtime=0)).decode("ascii")})
    with pytest.raises(ConfigdError, match="sha256"):
        decode_data(tampered, lambda r: [])


def test_compressed_data_with_secret_envelopes_is_checked_over_fingerprints() -> None:
    envelope = {ENVELOPE_KEY: {"kid": "k1", "fp": "f", "ct": "cipher", "nonce": "n"}}
    data = {"password": envelope, "rows": ["same text again and again"] * 20000}
    encoded = encode_data(data, canonical_json(data))
    record = _record(data, encoded).model_copy(update={"sha256": document_sha256(data)})
    assert record.encoding == "gzip+base64" and record.sha256 != sha256_hex(canonical_json(data))
    assert decode_data_and_bytes(record, lambda r: []) == (data, None)


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ({}, 1), ([], 1), ({"a": [1, {"b": []}]}, 4), ([[[[]]], {}], 4), ({"a": 1, "b": {"c": {}}}, 3)],
)
def test_json_depth(value: Any, depth: int) -> None:
    assert json_depth(value) == depth


def test_json_depth_stops_past_its_limit() -> None:
    deep: Any = []
    for _ in range(500):
        deep = [deep]
    assert json_depth(deep, 64) == 65


def test_sha_mismatch_is_refused() -> None:
    data = {"a": 1}
    encoded = encode_data(data, canonical_json(data))
    record = _record({"a": 2}, encoded).model_copy(update={"data": {"a": 1}, "sha256": sha256_hex(b"other")})
    with pytest.raises(ConfigdError, match="sha256"):
        decode_data(record, lambda r: [])


def test_oversize_is_refused_with_both_numbers() -> None:
    with pytest.raises(ConfigTooLarge) as info:
        encode_data({}, b"x" * (MAX_CONFIG_BYTES + 1))
    assert info.value.size == MAX_CONFIG_BYTES + 1 and info.value.limit == MAX_CONFIG_BYTES


def test_canonical_json_ignores_key_order_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": "é"}) == canonical_json({"a": "é", "b": 1}) == '{"a":"é","b":1}'.encode()


def test_diff_paths_are_json_pointers() -> None:
    old = {"a": 1, "list": [1, 2, 3], "nested": {"x/y": 1, "t~": True}, "gone": 0}
    new = {"a": 2, "list": [1, 5], "nested": {"x/y": 1, "t~": 1}, "new": {"k": "v"}}
    got = [(c.op, c.path, c.old, c.new) for c in diff_json(old, new)]
    assert got == [
        ("replace", "/a", 1, 2),
        ("remove", "/gone", 0, None),
        ("replace", "/list/1", 2, 5),
        ("remove", "/list/2", 3, None),
        ("replace", "/nested/t~0", True, 1),
        ("add", "/new", None, {"k": "v"}),
    ]
    assert diff_json(old, old) == []
    text = unified_diff({"a": 1}, {"a": 2}, from_label="v1", to_label="v2")
    assert text.startswith("--- v1\n+++ v2\n") and '-  "a": 1' in text and '+  "a": 2' in text


def test_record_schemas_are_generated_from_the_models() -> None:
    for filename, text in render().items():
        shipped = ROOT / "schemas" / "records" / filename
        assert shipped.exists(), f"run `make schemas`: {shipped} is missing"
        assert shipped.read_text() == text, f"run `make schemas`: {shipped} is stale"
        Draft202012Validator.check_schema(json.loads(text))
