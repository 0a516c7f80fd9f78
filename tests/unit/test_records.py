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
    SchemaRef,
    VersionRecord,
    canonical_json,
    decode_data,
    encode_data,
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
