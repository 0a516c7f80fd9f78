"""The versioned, schema-validated store against a real Consul agent (issue: configd core)."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import pytest

from configd.services.configs import ConfigStore
from configd_client import (
    ConfigdError,
    ConfigTooLarge,
    InvalidConfig,
    InvalidName,
    NotFound,
    SchemaIncompatible,
    SchemaNotFound,
    ValidationFailed,
    VersionConflict,
)
from configd_core.consul import ConsulGateway
from configd_core.layout import HEAD_INLINE_BYTES, MAX_CONFIG_BYTES, KeyLayout
from configd_core.records import HeadRecord, VersionRecord, canonical_json, sha256_hex
from tests.conftest import kv_tree

PAYMENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "timeout_ms": {"type": "integer", "minimum": 1, "maximum": 60000},
        "retries": {"type": "integer", "minimum": 0, "maximum": 10},
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
        "limits": {
            "type": "object",
            "properties": {"daily": {"type": "number", "minimum": 0}},
        },
    },
    "required": ["timeout_ms"],
}


@pytest.fixture
def store(gateway: ConsulGateway, layout: KeyLayout) -> ConfigStore:
    s = ConfigStore(gateway, layout)
    s.register_schema("payments", "service", PAYMENT_SCHEMA, actor="test")
    return s


def test_push_history_unchanged_rollback(store: ConfigStore) -> None:
    first = store.push("payments", "service", {"timeout_ms": 500, "retries": 3}, actor="alice", message="initial")
    assert first.status == "created" and first.head.version == 1
    second = store.push("payments", "service", {"timeout_ms": 800, "retries": 3}, actor="bob")
    assert second.head.version == 2

    same = store.push("payments", "service", {"retries": 3, "timeout_ms": 800}, actor="carol")
    assert same.status == "unchanged" and same.head.version == 2  # key order does not matter

    back = store.rollback("payments", "service", 1, actor="alice")
    assert back.status == "created" and back.head.version == 3
    record, data = store.get("payments", "service")
    assert data == {"timeout_ms": 500, "retries": 3}
    assert record.rollback_of == 1 and record.parent == 2 and record.message == "rollback to v1"

    page = store.history("payments", "service", limit=2)
    assert [v.version for v in page.versions] == [3, 2] and page.total == 3 and page.next_before == 2
    rest = store.history("payments", "service", limit=2, before=page.next_before)
    assert [v.version for v in rest.versions] == [1] and rest.next_before is None
    v1 = store.version("payments", "service", 1)
    assert (v1.author, v1.message, v1.parent, v1.schema_ref.version) == ("alice", "initial", None, 1)
    assert v1.sha256 == sha256_hex(canonical_json({"timeout_ms": 500, "retries": 3}))
    assert v1.created_at.endswith("Z")

    diff = store.diff("payments", "service", 1, 2)
    assert [(c.op, c.path, c.old, c.new) for c in diff.changes] == [("replace", "/timeout_ms", 500, 800)]
    assert '-  "timeout_ms": 500' in diff.unified and '+  "timeout_ms": 800' in diff.unified

    actions = [(e.action, e.version) for e in store.audit.list("payments")]
    assert actions == [("rollback", 3), ("push", 2), ("push", 1), ("schema.register", 1)]


def test_expected_version_is_optimistic_locking(store: ConfigStore) -> None:
    store.push("payments", "service", {"timeout_ms": 1}, actor="a", expected_version=0)
    with pytest.raises(VersionConflict) as info:
        store.push("payments", "service", {"timeout_ms": 2}, actor="a", expected_version=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert store.push("payments", "service", {"timeout_ms": 2}, actor="a", expected_version=1).head.version == 2


def test_twenty_threads_pushing_one_config(store: ConfigStore) -> None:
    acknowledged: list[tuple[int, dict[str, int]]] = []
    conflicts: list[VersionConflict] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def writer(worker: int) -> None:
        start.wait()
        for i in range(5):
            data = {"timeout_ms": 1000 + worker * 10 + i, "retries": worker % 10}
            try:
                result = store.push("payments", "service", data, actor=f"w{worker}")
            except VersionConflict as exc:
                with lock:
                    conflicts.append(exc)
                continue
            with lock:
                acknowledged.append((result.head.version, data))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    versions = sorted(v for v, _ in acknowledged)
    assert versions == list(range(1, len(versions) + 1)), "versions must be 1..N without gaps or duplicates"
    assert len(acknowledged) + len(conflicts) == 100
    page = store.history("payments", "service", limit=500)
    assert page.total == len(acknowledged)
    for version, data in acknowledged:
        assert store.get("payments", "service", version)[1] == data
    chain = sorted(page.versions, key=lambda r: r.version)
    assert all(r.parent == (r.version - 1 or None) for r in chain)
    print(f"\n20 threads x 5 pushes: {len(acknowledged)} acknowledged, {len(conflicts)} conflicts after retries")


def test_schema_rejection_lists_every_path_and_writes_nothing(store: ConfigStore, gateway: ConsulGateway) -> None:
    store.push("payments", "service", {"timeout_ms": 500}, actor="a")
    before = kv_tree(gateway, f"{store.layout.prefix}/")
    with pytest.raises(ValidationFailed) as info:
        store.push(
            "payments",
            "service",
            {"timeout_ms": 0, "retries": "three", "currency": "XXX", "limits": {"daily": -5}},
            actor="a",
        )
    paths = sorted(e.path for e in info.value.errors)
    assert paths == ["/currency", "/limits/daily", "/retries", "/timeout_ms"]
    assert all(e.message for e in info.value.errors)
    assert kv_tree(gateway, f"{store.layout.prefix}/") == before


def test_missing_required_property_is_reported(store: ConfigStore, gateway: ConsulGateway) -> None:
    before = kv_tree(gateway, f"{store.layout.prefix}/")
    with pytest.raises(ValidationFailed) as info:
        store.push("payments", "service", {"retries": 1}, actor="a")
    assert [e.path for e in info.value.errors] == ["/"]
    assert "timeout_ms" in info.value.errors[0].message
    assert kv_tree(gateway, f"{store.layout.prefix}/") == before


def test_push_without_schema_is_rejected(store: ConfigStore, gateway: ConsulGateway) -> None:
    before = kv_tree(gateway, f"{store.layout.prefix}/")
    with pytest.raises(SchemaNotFound, match="no schema is registered for payments/other"):
        store.push("payments", "other", {"a": 1}, actor="a")
    assert kv_tree(gateway, f"{store.layout.prefix}/") == before


def test_incompatible_schema_update_rejected_unless_forced(store: ConfigStore, gateway: ConsulGateway) -> None:
    store.push("payments", "service", {"timeout_ms": 500, "retries": 3}, actor="a")
    stricter = {**PAYMENT_SCHEMA, "properties": {**PAYMENT_SCHEMA["properties"], "retries": {"type": "string"}}}
    before = kv_tree(gateway, f"{store.layout.prefix}/")
    with pytest.raises(SchemaIncompatible) as info:
        store.register_schema("payments", "service", stricter, actor="a")
    assert [e.path for e in info.value.errors] == ["/retries"]
    assert kv_tree(gateway, f"{store.layout.prefix}/") == before

    forced = store.register_schema("payments", "service", stricter, actor="a", force=True)
    assert forced.status == "created" and forced.record.version == 2 and forced.record.forced
    compatible = {**PAYMENT_SCHEMA, "properties": {**PAYMENT_SCHEMA["properties"], "extra": {"type": "boolean"}}}
    assert store.register_schema("payments", "service", compatible, actor="a").record.version == 3
    assert store.register_schema("payments", "service", compatible, actor="a").status == "unchanged"
    assert store.schemas.versions("payments", "service") == [1, 2, 3]


def test_invalid_schema_is_rejected_with_paths(store: ConfigStore, gateway: ConsulGateway) -> None:
    before = kv_tree(gateway, f"{store.layout.prefix}/")
    with pytest.raises(ValidationFailed) as info:
        store.register_schema("payments", "bad", {"type": "object", "properties": {"a": {"type": 12}}}, actor="a")
    assert [e.path for e in info.value.errors] == ["/properties/a/type"]
    assert kv_tree(gateway, f"{store.layout.prefix}/") == before


def test_validators_are_compiled_once_per_schema_version(store: ConfigStore) -> None:
    store.push("payments", "service", {"timeout_ms": 1}, actor="a")
    compiled = store.schemas.compiled_count
    for i in range(2, 12):
        store.push("payments", "service", {"timeout_ms": i}, actor="a")
    assert store.schemas.compiled_count == compiled


def _big_config(target_bytes: int) -> dict[str, Any]:
    # Random hex barely compresses (about 2:1), so a 4 MB config needs the chunked encoding.
    per_item = 8 + 2 * 96
    return {f"k{i:07d}": os.urandom(96).hex() for i in range(target_bytes // per_item)}


def test_four_megabyte_config_round_trips(gateway: ConsulGateway, layout: KeyLayout) -> None:
    store = ConfigStore(gateway, layout)
    store.register_schema("big", "blob", {"type": "object"}, actor="a")
    data = _big_config(4 * 1024 * 1024)
    size = len(canonical_json(data))
    assert 4_000_000 < size < MAX_CONFIG_BYTES
    result = store.push("big", "blob", data, actor="a")
    record, back = store.get("big", "blob", result.head.version)
    assert back == data and record.encoding == "gzip-chunks" and record.chunks > 1 and record.size == size
    # The head stays small: watchers of the namespace never receive version bodies.
    head_entry = gateway.get(layout.head("big", "blob"))
    assert head_entry is not None and len(head_entry.value) < 1024


def test_small_documents_ride_in_their_head(store: ConfigStore, gateway: ConsulGateway, layout: KeyLayout) -> None:
    small = {"timeout_ms": 5, "limits": {"daily": 1.5}}
    store.push("payments", "service", small, actor="a")
    entry = gateway.get(layout.head("payments", "service"))
    assert entry is not None
    head = HeadRecord.from_bytes(entry.value)
    assert head.data == small and head.inline_data() == small
    # One byte over the inline limit: the head points at the version only.
    filler = "x" * (HEAD_INLINE_BYTES - len(canonical_json({"timeout_ms": 5, "pad": ""})) + 1)
    store.register_schema("payments", "wide", {"type": "object"}, actor="a")
    store.push("payments", "wide", {"timeout_ms": 5, "pad": filler}, actor="a")
    wide = store.head("payments", "wide")
    assert wide.size == HEAD_INLINE_BYTES + 1 and wide.data is None and wide.inline_data() is None
    # A tombstone carries no document, and a tampered inline document is refused, not applied.
    store.delete("payments", "service", actor="admin")
    entry = gateway.get(layout.head("payments", "service"))
    assert entry is not None and HeadRecord.from_bytes(entry.value).data is None
    with pytest.raises(ConfigdError, match="does not match its sha256"):
        head.model_copy(update={"data": {"timeout_ms": 6}}).inline_data()


def test_mid_size_config_is_compressed_inline(gateway: ConsulGateway, layout: KeyLayout) -> None:
    store = ConfigStore(gateway, layout)
    store.register_schema("big", "text", {"type": "object"}, actor="a")
    data = {"rows": [{"id": i, "name": f"row number {i}", "enabled": True} for i in range(20000)]}
    store.push("big", "text", data, actor="a")
    record, back = store.get("big", "text")
    assert record.encoding == "gzip+base64" and back == data


def test_oversize_config_gets_size_error_and_writes_nothing(store: ConfigStore, gateway: ConsulGateway) -> None:
    store.register_schema("big", "huge", {"type": "object"}, actor="a")
    data = {"blob": "x" * (MAX_CONFIG_BYTES + 10)}
    before = kv_tree(gateway, f"{store.layout.prefix}/")
    with pytest.raises(ConfigTooLarge) as info:
        store.push("big", "huge", data, actor="a")
    assert info.value.limit == MAX_CONFIG_BYTES and info.value.size > MAX_CONFIG_BYTES
    assert str(MAX_CONFIG_BYTES) in str(info.value) and str(info.value.size) in str(info.value)
    assert kv_tree(gateway, f"{store.layout.prefix}/") == before


@pytest.mark.parametrize(
    "namespace,name",
    [
        ("Payments", "service"),
        ("payments", "ser/vice"),
        ("..", "service"),
        ("payments", "a..b"),
        ("payments", ".hidden"),
        ("payments", ""),
        ("payments", "x" * 65),
        ("pay ments", "service"),
        ("payments", "serv\x00ice"),
        ("payments", "sérvice"),
    ],
)
def test_bad_names_rejected(store: ConfigStore, gateway: ConsulGateway, namespace: str, name: str) -> None:
    before = kv_tree(gateway, f"{store.layout.prefix}/")
    with pytest.raises(InvalidName):
        store.push(namespace, name, {"timeout_ms": 1}, actor="a")
    with pytest.raises(InvalidName):
        store.register_schema(namespace, name, {"type": "object"}, actor="a")
    assert kv_tree(gateway, f"{store.layout.prefix}/") == before


def _deeply_nested(levels: int) -> dict[str, Any]:
    nested: Any = 1
    for _ in range(levels):
        nested = [nested]
    return {"timeout_ms": 1, "deep": nested}


@pytest.mark.parametrize(
    "data",
    [[1, 2], "text", {"x": float("nan")}, {"x": float("inf")}, _deeply_nested(100)],
    ids=["array", "string", "nan", "infinity", "too-deep"],
)
def test_unstorable_documents_rejected(store: ConfigStore, gateway: ConsulGateway, data: Any) -> None:
    before = kv_tree(gateway, f"{store.layout.prefix}/")
    with pytest.raises(InvalidConfig):
        store.push("payments", "service", data, actor="a")
    assert kv_tree(gateway, f"{store.layout.prefix}/") == before


def test_delete_keeps_history_and_is_recorded(store: ConfigStore, gateway: ConsulGateway, layout: KeyLayout) -> None:
    store.push("payments", "service", {"timeout_ms": 1}, actor="a")
    store.push("payments", "service", {"timeout_ms": 2}, actor="a")
    store.delete("payments", "service", actor="admin", message="retired")
    with pytest.raises(NotFound):
        store.head("payments", "service")
    assert [h.name for h in store.heads("payments")] == []
    assert [v.version for v in store.history("payments", "service").versions] == [2, 1]
    assert store.get("payments", "service", 2)[1] == {"timeout_ms": 2}
    entry = store.audit.list("payments", 1)[0]
    assert (entry.action, entry.actor, entry.version, entry.message) == ("delete", "admin", 2, "retired")
    with pytest.raises(NotFound):
        store.delete("payments", "service", actor="admin")
    # Pushing again continues the numbering: versions are never reused.
    assert store.push("payments", "service", {"timeout_ms": 3}, actor="a").head.version == 3


def test_one_blocking_query_sees_every_head_of_a_namespace(store: ConfigStore, gateway: ConsulGateway) -> None:
    store.register_schema("payments", "gateway", {"type": "object"}, actor="a")
    store.push("payments", "service", {"timeout_ms": 1}, actor="a")
    index, heads = gateway.list(store.layout.heads_prefix("payments"))
    assert [HeadRecord.from_bytes(e.value).name for e in heads] == ["service"]

    result: dict[str, Any] = {}

    def watch() -> None:
        result["index"], result["entries"] = gateway.list(
            store.layout.heads_prefix("payments"), index=index, wait="10s"
        )

    watcher = threading.Thread(target=watch)
    watcher.start()
    store.push("payments", "gateway", {"anything": True}, actor="a")
    watcher.join(timeout=15)
    assert result["index"] > index
    names = {HeadRecord.from_bytes(e.value).name: HeadRecord.from_bytes(e.value).version for e in result["entries"]}
    assert names == {"gateway": 1, "service": 1}
    assert all(len(e.value) < 1024 for e in result["entries"])


def test_records_are_plain_json(store: ConfigStore, gateway: ConsulGateway, layout: KeyLayout) -> None:
    store.push("payments", "service", {"timeout_ms": 5}, actor="a")
    entry = gateway.get(layout.version("payments", "service", 1))
    assert entry is not None
    raw = json.loads(entry.value)
    assert raw["kind"] == "configd.version" and raw["data"] == {"timeout_ms": 5} and raw["encoding"] == "json"
    assert VersionRecord.from_bytes(entry.value).version == 1


def test_unknown_versions_are_not_found(store: ConfigStore) -> None:
    with pytest.raises(NotFound):
        store.head("payments", "service")
    store.push("payments", "service", {"timeout_ms": 5}, actor="a")
    with pytest.raises(NotFound):
        store.version("payments", "service", 7)
    with pytest.raises(NotFound):
        store.rollback("payments", "service", 9, actor="a")
    with pytest.raises(NotFound):
        store.history("payments", "nothing")


def test_namespace_listing_pages_by_name(gateway: ConsulGateway, layout: KeyLayout) -> None:
    store = ConfigStore(gateway, layout)
    for i in range(7):
        store.register_schema("many", f"c{i}", {"type": "object"}, actor="a")
        store.push("many", f"c{i}", {"i": i}, actor="a")
    store.delete("many", "c3", actor="a")
    first = store.heads_page("many", limit=3)
    assert [h.name for h in first.heads] == ["c0", "c1", "c2"] and first.next_after == "c2"
    second = store.heads_page("many", limit=3, after=first.next_after)
    assert [h.name for h in second.heads] == ["c4", "c5"] and second.next_after == "c5"  # c3 is a tombstone
    last = store.heads_page("many", limit=3, after=second.next_after)
    assert [h.name for h in last.heads] == ["c6"] and last.next_after is None
    assert [h.name for h in store.heads("many")] == ["c0", "c1", "c2", "c4", "c5", "c6"]


def test_two_stores_never_act_on_stale_known_heads(gateway: ConsulGateway, layout: KeyLayout) -> None:
    """Each store (one per server process) remembers the heads it last saw; another writer makes them stale.

    The transaction's guards catch a stale head or schema; every outcome they cannot prove (unchanged, an
    expected-version mismatch, a validation failure) is decided on a fresh read.
    """
    a, b = ConfigStore(gateway, layout), ConfigStore(gateway, layout)
    a.register_schema("payments", "service", PAYMENT_SCHEMA, actor="t")
    assert a.push("payments", "service", {"timeout_ms": 1}, actor="a").head.version == 1
    assert b.push("payments", "service", {"timeout_ms": 2}, actor="b").head.version == 2
    # a still remembers v1: its push must land as v3 (the CAS refuses the stale head; a re-reads).
    assert a.push("payments", "service", {"timeout_ms": 3}, actor="a").head.version == 3
    assert b.push("payments", "service", {"timeout_ms": 4}, actor="b").head.version == 4
    # The same content as b's head is "unchanged" for a too, although a remembers v3.
    same = a.push("payments", "service", {"timeout_ms": 4}, actor="a")
    assert (same.status, same.head.version) == ("unchanged", 4)
    assert a.push("payments", "service", {"timeout_ms": 5}, actor="a", expected_version=4).head.version == 5
    # b registers a stricter schema; a remembers the old one but must validate against the new one.
    stricter = {**PAYMENT_SCHEMA, "properties": {**PAYMENT_SCHEMA["properties"], "timeout_ms": {"maximum": 10}}}
    b.register_schema("payments", "service", stricter, actor="t")
    before = kv_tree(gateway, layout.prefix)
    with pytest.raises(ValidationFailed):
        a.push("payments", "service", {"timeout_ms": 11}, actor="a")
    assert kv_tree(gateway, layout.prefix) == before
    ok = a.push("payments", "service", {"timeout_ms": 6}, actor="a")
    assert ok.head.version == 6 and ok.head.schema_ref.version == 2
    # An expected version that a's memory would satisfy, but Consul's head would not, is a conflict.
    b.push("payments", "service", {"timeout_ms": 7}, actor="b")
    with pytest.raises(VersionConflict) as conflict:
        a.push("payments", "service", {"timeout_ms": 8}, actor="a", expected_version=6)
    assert (conflict.value.expected, conflict.value.actual) == (6, 7)
    versions = [v.version for v in a.history("payments", "service").versions]
    assert versions == list(range(7, 0, -1))


def test_a_push_from_stale_heads_reads_only_the_heads_again(
    gateway: ConsulGateway, layout: KeyLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two server processes alternating on one config: the one whose heads are stale re-reads the heads and
    retries with the settings it knows (their indexes are checked in the transaction) — three round trips."""
    a, b = ConfigStore(gateway, layout), ConfigStore(gateway, layout)
    a.register_schema("payments", "service", PAYMENT_SCHEMA, actor="t")
    a.push("payments", "service", {"timeout_ms": 1}, actor="a")
    b.push("payments", "service", {"timeout_ms": 2}, actor="b")
    calls: list[str] = []
    for verb in ("get", "txn", "list", "put"):
        real = getattr(gateway, verb)
        monkeypatch.setattr(
            gateway, verb, lambda *args, _real=real, _verb=verb, **kw: calls.append(_verb) or _real(*args, **kw)
        )
    assert a.push("payments", "service", {"timeout_ms": 3}, actor="a").head.version == 3
    assert calls == ["txn", "txn", "txn"]  # the refused transaction, the heads' read, the committed one
    calls.clear()
    assert a.push("payments", "service", {"timeout_ms": 4}, actor="a").head.version == 4
    assert calls == ["txn"]
