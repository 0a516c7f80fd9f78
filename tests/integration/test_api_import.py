"""Bulk import (``POST /api/v1/import``, ``ConfigStore.import_items``) against a real server and a real Consul.

Checked first, written in batches: a bad item anywhere writes nothing (the KV tree is compared before and after),
a schema and its config land in one transaction, and a concurrent writer costs only the configs it touched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from configd.planning.bulk import ImportItem, pack_transactions
from configd.services.configs import ConfigStore
from configd_core.consul import ConsulGateway, KVEntry, TxnOp
from configd_core.layout import CONSUL_TXN_MAX_OPS, MAX_JSON_DEPTH, KeyLayout
from configd_core.records import AuditRecord, HeadRecord, SchemaVersionRecord, VersionRecord
from tests.api_support import GOOD, SERVICE_SCHEMA, rejected, setup_config, unchanged_without_audit
from tests.conftest import ServerProcess, kv_tree

pytestmark = pytest.mark.timeout(120)

STRICT_SCHEMA: dict[str, Any] = {**SERVICE_SCHEMA, "required": ["timeout_ms", "retries"]}


def _schema(ns: str, name: str, schema: dict[str, Any] = SERVICE_SCHEMA, **extra: Any) -> dict[str, Any]:
    return {"kind": "schema", "namespace": ns, "name": name, "document": schema, **extra}


def _config(ns: str, name: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"kind": "config", "namespace": ns, "name": name, "document": data, **extra}


def _pairs(ns: str, count: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for i in range(count):
        items += [_schema(ns, f"svc-{i:03d}"), _config(ns, f"svc-{i:03d}", {**GOOD, "retries": i % 10})]
    return items


def _record(gateway: ConsulGateway, key: str) -> dict[str, Any]:
    entry = gateway.get(key)
    assert entry is not None, key
    found: dict[str, Any] = json.loads(entry.value)
    return found


def _audit(gateway: ConsulGateway, layout: KeyLayout, namespace: str) -> list[AuditRecord]:
    _, entries = gateway.list(layout.audit_prefix(namespace))
    return [AuditRecord.from_bytes(e.value) for e in entries]


# --- pure logic ---------------------------------------------------------------------------------------------
def test_pack_transactions_respects_both_limits_and_never_splits_a_config() -> None:
    assert pack_transactions([]) == []
    assert pack_transactions([(6, 100)] * 10) == [range(0, 10)]  # 60 operations fit one transaction
    assert pack_transactions([(6, 100)] * 11) == [range(0, 10), range(10, 11)]  # 66 do not
    assert pack_transactions([(4, 100)] * 16 + [(6, 100)]) == [range(0, 16), range(16, 17)]
    assert pack_transactions([(2, 300), (2, 300), (2, 300)], max_bytes=700) == [range(0, 2), range(2, 3)]
    assert pack_transactions([(2, 900), (2, 10)], max_bytes=700) == [range(0, 1), range(1, 2)]  # never dropped
    sizes = [(n % 3 * 2 + 2, 1000 * n) for n in range(1, 200)]
    batches = pack_transactions(sizes, max_bytes=30_000)
    assert [i for b in batches for i in b] == list(range(len(sizes)))
    for batch in batches:
        ops, size = sum(sizes[i][0] for i in batch), sum(sizes[i][1] for i in batch)
        assert ops <= CONSUL_TXN_MAX_OPS and (size <= 30_000 or len(batch) == 1)


# --- through the HTTP API -----------------------------------------------------------------------------------
def test_mixed_import_creates_updates_and_leaves_unchanged(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ns, layout = unique_ns, server.layout
    setup_config(server, ns, "kept")
    setup_config(server, ns, "moved")
    items = [
        _schema(ns, "kept"),  # identical: unchanged
        _config(ns, "kept", GOOD, expected_version=1),  # identical: unchanged
        _config(ns, "moved", {**GOOD, "timeout_ms": 900}, expected_version=1),  # update under the current schema
        _schema(ns, "fresh", expected_version=0),
        _config(ns, "fresh", {"timeout_ms": 42}, expected_version=0),
    ]
    before = kv_tree(gateway, f"{server.prefix}/")
    with server.client("admin") as http:
        answer = http.post("/api/v1/import", json={"message": "bulk", "items": items})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["summary"] == {"created": 3, "unchanged": 2, "conflict": 0, "failed": 0}
        assert [(r["kind"], r["name"], r["status"], r["version"]) for r in body["items"]] == [
            ("schema", "kept", "unchanged", 1),
            ("config", "kept", "unchanged", 1),
            ("config", "moved", "created", 2),
            ("schema", "fresh", "created", 1),
            ("config", "fresh", "created", 1),
        ]
        assert all(r["detail"] == "" and r["forced"] is False and len(r["sha256"]) == 64 for r in body["items"])
        moved = http.get(f"/api/v1/configs/{ns}/moved").json()
        assert moved["data"]["timeout_ms"] == 900 and moved["parent"] == 1 and moved["message"] == "bulk"
        assert moved["author"] == "admin" and moved["schema_version"] == 1
        fresh = http.get(f"/api/v1/configs/{ns}/fresh").json()
        assert fresh["data"] == {"timeout_ms": 42} and fresh["version"] == 1
        schemas = http.get(f"/api/v1/schemas/{ns}").json()
        assert schemas["namespace"] == ns
        assert [(s["name"], s["version"]) for s in schemas["schemas"]] == [("fresh", 1), ("kept", 1), ("moved", 1)]
        assert http.get(f"/api/v1/schemas/{ns}-none").status_code == 404
        again = [_schema(ns, "fresh"), _config(ns, "fresh", {"timeout_ms": 42}, expected_version=1)]
        assert [r["status"] for r in http.post("/api/v1/import", json={"items": again}).json()["items"]] == [
            "unchanged",
            "unchanged",
        ]
    # One audit entry per written item, as the single-item endpoints write them; nothing for unchanged items.
    entries = sorted((e.action, e.name, e.version, e.result) for e in _audit(gateway, layout, ns))
    assert [e for e in entries if e[1] == "fresh" or e[1:3] == ("moved", 2)] == [
        ("push", "fresh", 1, "created"),
        ("push", "moved", 2, "created"),
        ("schema.register", "fresh", 1, "created"),
    ]
    added = sorted(set(kv_tree(gateway, f"{server.prefix}/")) - set(before))
    assert [k for k in added if not k.startswith(layout.audit_root)] == sorted(
        [
            layout.head(ns, "fresh"),
            layout.version(ns, "fresh", 1),
            layout.version(ns, "moved", 2),
            layout.schema_head(ns, "fresh"),
            layout.schema_version(ns, "fresh", 1),
        ]
    )


def test_imported_records_equal_the_single_item_ones(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    """The same schema and config written one by one and imported give the same records, field for field."""
    layout, single, bulk = server.layout, unique_ns, f"{unique_ns}-bulk"
    setup_config(server, single, "svc")
    with server.client("admin") as http:
        answer = http.post("/api/v1/import", json={"items": [_schema(bulk, "svc"), _config(bulk, "svc", GOOD)]})
        assert answer.status_code == 200, answer.text
    volatile = {"namespace", "created_at", "id", "at", "schema_ref"}
    for key_of in (
        lambda ns: layout.head(ns, "svc"),
        lambda ns: layout.version(ns, "svc", 1),
        lambda ns: layout.schema_head(ns, "svc"),
        lambda ns: layout.schema_version(ns, "svc", 1),
    ):
        one, imported = _record(gateway, key_of(single)), _record(gateway, key_of(bulk))
        assert {k: v for k, v in imported.items() if k not in volatile} == {
            k: v for k, v in one.items() if k not in volatile
        }
    head = HeadRecord.model_validate(_record(gateway, layout.head(bulk, "svc")))
    assert head.data == GOOD  # small documents ride in the head
    assert (head.schema_ref.namespace, head.schema_ref.name, head.schema_ref.version) == (bulk, "svc", 1)
    shapes = [
        sorted((a.action, a.name, a.result, a.status, a.version) for a in _audit(gateway, layout, ns))
        for ns in (single, bulk)
    ]
    assert shapes[0] == shapes[1]


def test_an_import_larger_than_one_transaction_with_large_configs(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ns, layout = unique_ns, server.layout
    items = _pairs(ns, 40)  # 40 × 6 operations: at least four transactions
    chunked = {**GOOD, "blob": os.urandom(300 * 1024).hex()}  # gzip cannot fit it in a record: blob chunks
    # Alone, each of these fits its transaction; together, with the longest message (in five records), the pair
    # would pass Consul's 512 KiB per transaction with the data inline.
    big_schema = {**SERVICE_SCHEMA, "description": "x" * 129_000}
    mid = {**GOOD, "blob": "y" * 252_000}
    items += [_schema(ns, "chunked"), _config(ns, "chunked", chunked), _schema(ns, "pair", big_schema)]
    items += [_config(ns, "pair", mid)]
    with server.client("admin") as http:
        answer = http.post("/api/v1/import", json={"items": items, "message": "€" * 1000})
        assert answer.status_code == 200, answer.text
        assert answer.json()["summary"]["created"] == len(items)
        listing = http.get(f"/api/v1/configs/{ns}").json()["configs"]
        assert len(listing) == 42 and all(c["version"] == 1 for c in listing)
        assert http.get(f"/api/v1/configs/{ns}/chunked").json()["data"] == chunked
        assert http.get(f"/api/v1/configs/{ns}/pair").json()["data"] == mid
        assert len(http.get(f"/api/v1/schemas/{ns}").json()["schemas"]) == 42
    big = VersionRecord.model_validate(_record(gateway, layout.version(ns, "chunked", 1)))
    assert big.encoding == "gzip-chunks" and big.chunks >= 2
    pair = VersionRecord.model_validate(_record(gateway, layout.version(ns, "pair", 1)))
    assert pair.encoding == "gzip-chunks", "the pair would not fit one transaction with its data inline"
    # Each config's schema and data committed in one transaction: the same Raft index on both heads.
    for name in ("svc-000", "svc-039", "pair"):
        assert _index(gateway, layout.head(ns, name)) == _index(gateway, layout.schema_head(ns, name))
    indexes = {_index(gateway, layout.head(ns, f"svc-{i:03d}")) for i in range(40)}
    assert 4 <= len(indexes) < 40, indexes  # batched: several configs per transaction, more than one transaction


def _index(gateway: ConsulGateway, key: str) -> int:
    entry = gateway.get(key)
    assert entry is not None, key
    return entry.modify_index


def test_one_bad_item_anywhere_writes_nothing(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    ns = unique_ns
    setup_config(server, ns, "existing")
    good = _pairs(ns, 30)
    with server.client("admin") as http:
        bad = [*good, _config(ns, "existing", {**GOOD, "timeout_ms": 0}), _config(ns, "odd", {"timeout_ms": "x"})]
        answer, record = rejected(server, gateway, lambda: http.post("/api/v1/import", json={"items": bad}), 422)
        body = answer.json()
        assert "nothing written" in body["detail"] and "2 of 62 item(s)" in body["detail"]
        assert {(e["path"]) for e in body["errors"]} == {"/items/60/document/timeout_ms", "/items/61"}
        assert (record.action, record.namespace, record.actor) == ("import", ns, "admin")

        stale = [*good, _config(ns, "existing", {**GOOD, "retries": 9}, expected_version=3)]
        answer, _ = rejected(server, gateway, lambda: http.post("/api/v1/import", json={"items": stale}), 409)
        assert (answer.json()["expected"], answer.json()["actual"]) == (3, 1)
        assert answer.json()["errors"][0]["path"] == "/items/60/expected_version"

        orphan = [*good, _config(ns, "no-schema", GOOD)]
        answer, _ = rejected(server, gateway, lambda: http.post("/api/v1/import", json={"items": orphan}), 404)
        assert answer.json()["errors"] == [
            {"path": "/items/60", "message": f"{ns}/no-schema: no schema is registered for {ns}/no-schema and the "
             "import brings none"}
        ]  # fmt: skip

        invalid_schema = [_schema(ns, "s", {"type": "no-such-type"}), _config(ns, "s", GOOD)]
        answer, _ = rejected(server, gateway, lambda: http.post("/api/v1/import", json={"items": invalid_schema}), 422)
        assert answer.json()["errors"][0]["path"].startswith("/items/0/document/type")

        twice = [_schema(ns, "t"), _schema(ns, "t"), _config(ns, "bad name!", GOOD)]
        answer, _ = rejected(server, gateway, lambda: http.post("/api/v1/import", json={"items": twice}), 422)
        assert [e["path"] for e in answer.json()["errors"]] == ["/items/1", "/items/2/name"]

        deep: dict[str, Any] = {}
        for _ in range(MAX_JSON_DEPTH - 2):
            deep = {"n": deep}
        fits = [_config(ns, "existing", {**GOOD, "nested": deep})]  # 64 levels: the documents' own limit
        assert http.post("/api/v1/import", json={"items": fits}).status_code == 200
        for extra in (1, 200):  # just too deep, and far too deep: the item's own error either way
            wrapped = deep
            for _ in range(extra):
                wrapped = {"n": wrapped}
            too_deep = [_schema(ns, "t"), _config(ns, "existing", {**GOOD, "nested": wrapped})]
            body = {"items": too_deep}
            answer, _ = rejected(server, gateway, lambda b=body: http.post("/api/v1/import", json=b), 422)
            assert [e["path"] for e in answer.json()["errors"]] == ["/items/1/document"]
            assert "deeper than 64 levels" in answer.json()["errors"][0]["message"]

        # A body that is not an import at all cannot be attributed to a namespace: nothing at all is written.
        unchanged_without_audit(server, gateway, lambda: http.post("/api/v1/import", json={"items": []}), 422)
        unchanged_without_audit(server, gateway, lambda: http.post("/api/v1/import", content=b"{"), 422)


def test_items_the_token_may_not_write_refuse_the_import(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    team_ns = "team-a-" + unique_ns.removeprefix("ns-")
    setup_config(server, team_ns)
    mine = [_config(team_ns, "service", {**GOOD, "retries": 5})]
    with server.client("team-editor") as http:
        outside = [*mine, _config(unique_ns, "service", GOOD)]
        answer, record = rejected(server, gateway, lambda: http.post("/api/v1/import", json={"items": outside}), 403)
        assert answer.json()["errors"][0]["path"] == "/items/1" and "may not access namespace" in answer.text
        assert (record.namespace, record.action, record.actor) == (unique_ns, "import", "team-editor")
        schema = [*mine, _schema(team_ns, "service", {**SERVICE_SCHEMA, "title": "t"})]
        answer, record = rejected(server, gateway, lambda: http.post("/api/v1/import", json={"items": schema}), 403)
        assert "needs admin" in answer.json()["errors"][0]["message"] and record.namespace == team_ns
        assert http.post("/api/v1/import", json={"items": mine}).json()["summary"]["created"] == 1
    with server.client("reader") as http:  # refused before the body is read: nothing to attribute it to
        unchanged_without_audit(server, gateway, lambda: http.post("/api/v1/import", json={"items": mine}), 403)


def test_schema_and_config_consistent_only_together_land_atomically(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ns, layout = unique_ns, server.layout
    setup_config(server, ns, "svc")  # {"timeout_ms": 500, "retries": 3, "currency": "EUR"} under SERVICE_SCHEMA
    strict = {**SERVICE_SCHEMA, "required": ["timeout_ms", "flags"]}  # the current config fails it
    new = {"timeout_ms": 700, "flags": {"beta": True}}
    with server.client("admin") as http:
        alone = [_schema(ns, "svc", strict)]
        answer, _ = rejected(server, gateway, lambda: http.post("/api/v1/import", json={"items": alone}), 422)
        assert "set force" in answer.text and "'flags' is a required property" in answer.text
        together = [_schema(ns, "svc", strict, expected_version=1), _config(ns, "svc", new, expected_version=1)]
        answer = http.post("/api/v1/import", json={"items": together})
        assert answer.status_code == 200, answer.text
        assert [(r["status"], r["version"], r["forced"]) for r in answer.json()["items"]] == [
            ("created", 2, False),
            ("created", 2, False),
        ]
        head = http.get(f"/api/v1/configs/{ns}/svc").json()
        assert head["data"] == new and head["schema_version"] == 2
    assert _index(gateway, layout.head(ns, "svc")) == _index(gateway, layout.schema_head(ns, "svc"))
    forced_schema = {**strict, "required": ["timeout_ms", "flags", "currency"]}
    with server.client("admin") as http:
        forced = http.post("/api/v1/import", json={"items": [_schema(ns, "svc", forced_schema, force=True)]}).json()
    assert forced["items"][0]["forced"] is True and forced["items"][0]["version"] == 3
    record = SchemaVersionRecord.model_validate(_record(gateway, layout.schema_version(ns, "svc", 3)))
    assert record.forced is True


# --- a concurrent writer, made deterministic: it writes through real Consul just before the import commits --
class RacingGateway(ConsulGateway):
    """A real gateway that runs ``race`` once, right before its first writing transaction."""

    def __init__(self, address: str, race: Callable[[], None]) -> None:
        super().__init__(address)
        self._race: Callable[[], None] | None = race

    def txn(self, ops: list[TxnOp]) -> list[KVEntry]:
        if self._race is not None and any(op["KV"]["Verb"] == "cas" for op in ops):
            race, self._race = self._race, None
            race()
        return super().txn(ops)


def test_a_concurrent_writer_costs_only_the_config_it_touched(
    consul_addr: str, gateway: ConsulGateway, layout: KeyLayout
) -> None:
    other = ConfigStore(gateway, layout)
    for i in range(12):
        other.register_schema("ns", f"c{i:02d}", SERVICE_SCHEMA, actor="setup")
        other.push("ns", f"c{i:02d}", GOOD, actor="setup")

    def race() -> None:
        other.push("ns", "c05", {**GOOD, "retries": 7}, actor="racer")

    with RacingGateway(consul_addr, race) as racing:
        store = ConfigStore(racing, layout)
        items = [ImportItem("config", "ns", f"c{i:02d}", {**GOOD, "retries": 1}) for i in range(12)]
        before_audit = len(_audit(gateway, layout, "ns"))
        outcomes = store.import_items(items, actor="importer", message="bulk")
    assert [(o.item.name, o.status) for o in outcomes if o.status != "created"] == [("c05", "conflict")]
    assert "nothing of this config was written" in outcomes[5].detail and outcomes[5].version is None
    assert all(o.version == 2 for o in outcomes if o.status == "created")
    head = other.head("ns", "c05")
    assert (head.version, head.author) == (2, "racer")
    assert gateway.get(layout.version("ns", "c05", 3)) is None  # never half-written
    after = _audit(gateway, layout, "ns")
    assert len(after) == before_audit + 12  # the racer's push and the eleven configs that landed
    assert sorted((a.actor, a.name) for a in after if a.actor != "setup") == sorted(
        [("racer", "c05")] + [("importer", f"c{i:02d}") for i in range(12) if i != 5]
    )
