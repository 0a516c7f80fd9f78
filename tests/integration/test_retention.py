"""Retention against a real Consul (issue 18): policies remove old audit entries and old versions in small
transactions, never a head, never a kept version; pushes run on meanwhile; history skips removed versions and a
removed version answers NotFound with a clear detail. Leader election hands the lock over."""

from __future__ import annotations

import base64
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from configd.planning.audit import new_entry
from configd.planning.retention import RetentionPolicy
from configd.services.audit import AuditLog
from configd.services.configs import ConfigStore
from configd.services.election import ElectedDriver, LeaderElection
from configd.services.retention import KVUsage, Retention
from configd_core.consul import ConsulGateway
from configd_core.errors import NotFound
from configd_core.layout import KeyLayout
from configd_core.records import HeadRecord, canonical_json, sha256_hex

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"n": {"type": "integer"}, "blob": {"type": "string"}}}


def _store(gateway: ConsulGateway, layout: KeyLayout, namespace: str, name: str, versions: int) -> ConfigStore:
    store = ConfigStore(gateway, layout)
    store.register_schema(namespace, name, SCHEMA, actor="admin")
    for n in range(versions):
        store.push(namespace, name, {"n": n}, actor="editor")
    return store


def test_versions_beyond_k_and_older_than_n_go_and_the_rest_reads_back(
    gateway: ConsulGateway, layout: KeyLayout
) -> None:
    store = _store(gateway, layout, "ns", "svc", 30)
    big = base64.b64encode(os.urandom(400_000)).decode()  # incompressible: stored as blob chunks
    store.push("ns", "svc", {"n": 1000, "blob": big}, actor="editor")  # v31, chunked
    store.push("ns", "svc", {"n": 1001}, actor="editor")  # v32
    store.push("ns", "svc", {"n": 1002, "blob": big}, actor="editor")  # v33: same blob as v31 (shared chunks)
    head_before = gateway.get(layout.head("ns", "svc"))
    assert head_before is not None
    retention = Retention(gateway, layout, pause_seconds=0)
    retention.set_policy("ns", RetentionPolicy(versions_keep_last=3, versions_max_age_days=1))

    report = retention.run(now=datetime.now(UTC) + timedelta(hours=12))  # the last K rule alone removes nothing
    assert report.versions_deleted == 0
    report = retention.run(now=datetime.now(UTC) + timedelta(days=2))
    assert report.versions_deleted == 30 and report.conflicts == 0
    assert report.transactions == 1  # 30 deletes + the head check fit one transaction

    head_after = gateway.get(layout.head("ns", "svc"))
    assert head_after == head_before  # never touched: same value, same ModifyIndex
    page = store.history("ns", "svc")
    assert [v.version for v in page.versions] == [33, 32, 31] and page.total == 3
    for version in (31, 32, 33):
        record, data = store.get("ns", "svc", version)
        assert sha256_hex(canonical_json(data)) == record.sha256
    assert store.get("ns", "svc", 33)[1]["blob"] == big  # shared chunks were kept
    with pytest.raises(NotFound, match="retention policy removed it"):
        store.version("ns", "svc", 5)
    with pytest.raises(NotFound, match="no version 30"):
        store.rollback("ns", "svc", 30, actor="editor")

    # v31's chunks are shared with v33; once v31 and v33 are both beyond the last K, the chunks go too.
    retention.set_policy("ns", RetentionPolicy(versions_keep_last=1, versions_max_age_days=1))
    store.push("ns", "svc", {"n": 2000}, actor="editor")  # v34
    report = retention.run(now=datetime.now(UTC) + timedelta(days=2))
    assert report.versions_deleted == 3 and report.blob_keys_deleted > 0
    assert gateway.keys(f"{layout.prefix}/blobs/") == []
    assert [v.version for v in store.history("ns", "svc").versions] == [34]
    assert store.get("ns", "svc")[1] == {"n": 2000}


def test_audit_by_count_and_age_in_small_batches_while_pushes_run(gateway: ConsulGateway, layout: KeyLayout) -> None:
    store = _store(gateway, layout, "busy", "svc", 1)
    log = AuditLog(gateway, layout)
    for _ in range(150):  # rejections: audit entries only
        log.append(new_entry(actor="x", action="push", namespace="busy", name="svc", result="rejected", status=422))
    retention = Retention(gateway, layout, pause_seconds=0.01)
    retention.set_policy("busy", RetentionPolicy(audit_max_entries=20))
    pushed: list[int] = []
    stop = threading.Event()

    def pushing() -> None:
        n = 100
        while not stop.is_set():
            pushed.append(store.push("busy", "svc", {"n": n}, actor="editor").head.version)
            n += 1

    pusher = threading.Thread(target=pushing)
    pusher.start()
    try:
        report = retention.run()
    finally:
        stop.set()
        pusher.join()
    assert report.transactions >= 3  # ≥ 130 deletes in transactions of ≤ 64
    assert pushed and pushed == sorted(pushed)  # every push went through meanwhile
    retention.run()  # the entries those pushes added are trimmed on the next pass
    assert len(gateway.keys(layout.audit_prefix("busy"))) == 20
    head = HeadRecord.from_bytes(gateway.get(layout.head("busy", "svc")).value)  # type: ignore[union-attr]
    assert head.version == pushed[-1]

    usage = KVUsage(gateway, layout).count("busy")["busy"]
    assert usage["audit"]["keys"] == 20 and usage["heads"]["keys"] == 1 and usage["versions"]["bytes"] > 0
    retention.clear_policy("busy")
    assert retention.policy("busy") is None


def test_one_election_holds_the_lock_and_hands_it_over(gateway: ConsulGateway, layout: KeyLayout) -> None:
    key = layout.lock("maintenance")
    runs: dict[str, int] = {"a": 0, "b": 0}
    drivers = {}
    for name in ("a", "b"):
        election = LeaderElection(gateway, key, holder=name, ttl_seconds=10, lock_delay_seconds=0)
        driver = ElectedDriver(election, tick_seconds=0.1)
        driver.register("count", lambda holding, n=name: runs.__setitem__(n, runs[n] + 1), 0.1)
        drivers[name] = driver
        driver.start()
    try:
        deadline = time.monotonic() + 15
        while sum(1 for d in drivers.values() if d.leading) != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)
        leader = next(n for n, d in drivers.items() if d.leading)
        other = "b" if leader == "a" else "a"
        assert runs[leader] > 3 and runs[other] == 0  # the duty runs only where the lock is held
        started = time.monotonic()
        drivers[leader].stop()  # resign: the session is destroyed, the lock released at once
        while not drivers[other].leading:
            assert time.monotonic() - started < 30
            time.sleep(0.05)
        print(f"\nresigned lock taken over in {time.monotonic() - started:.2f}s")
        count = runs[other]
        time.sleep(0.5)
        assert runs[other] > count
    finally:
        for driver in drivers.values():
            driver.stop()
