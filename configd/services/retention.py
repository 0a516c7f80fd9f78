"""Retention and KV usage: the duties the elected replica runs (:mod:`.election`), and their reads for the API.

:class:`Retention` applies each namespace's policy (:mod:`configd.planning.retention`) in transactions of at most
64 deletes with a pause between them, checking between batches that this replica still holds the lock. Pushes never
wait for it: a delete transaction touches only old version and audit keys, and a version delete is guarded by the
head's index (a push that lands meanwhile makes that one transaction fail; the next pass retries).

:class:`KVUsage` counts keys and bytes (key + value) per namespace and kind; the elected replica stores the count in
``<prefix>/maintenance/usage`` every interval, and every replica's ``/metrics`` exports it (configd_kv_keys,
configd_kv_bytes). Counting reads every value under the prefix (Consul has no size-only listing), which is why only
one replica does it, on an interval.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from configd_core.consul import ConsulGateway, op_check_index, op_delete, op_get, op_set
from configd_core.errors import ConfigdError, VersionConflict
from configd_core.layout import CONSUL_TXN_MAX_OPS, KeyLayout, validate_name
from configd_core.records import HeadRecord, VersionRecord

from ..planning.audit import audit_op, new_entry
from ..planning.retention import RetentionPolicy, batches, expired_audit, old_enough, version_candidates

log = logging.getLogger("configd.retention")


@dataclass
class RetentionReport:
    """What one pass removed (and how many transactions lost a race and were left for the next pass)."""

    audit_deleted: int = 0
    versions_deleted: int = 0
    blob_keys_deleted: int = 0
    transactions: int = 0
    conflicts: int = 0
    stopped: bool = False
    namespaces: list[str] = field(default_factory=list)


class Retention:
    """Reads and writes retention policies; applies them (on the elected replica)."""

    def __init__(self, gateway: ConsulGateway, layout: KeyLayout, *, pause_seconds: float = 0.05) -> None:
        self._gateway = gateway
        self.layout = layout
        self.pause_seconds = pause_seconds

    # --- policies ----------------------------------------------------------------------------------
    def policy(self, namespace: str) -> RetentionPolicy | None:
        validate_name(namespace, "namespace")
        entry = self._gateway.get(self.layout.retention(namespace))
        return RetentionPolicy.model_validate_json(entry.value) if entry is not None else None

    def set_policy(self, namespace: str, policy: RetentionPolicy, *, actor: str = "configd") -> None:
        """Store the policy and its audit entry in one transaction."""
        validate_name(namespace, "namespace")
        text = policy.model_dump_json(exclude_none=True)
        entry = new_entry(
            actor=actor,
            action="retention.set",
            namespace=namespace,
            name=None,
            result="created",
            status=200,
            detail=text,
        )
        self._gateway.txn([op_set(self.layout.retention(namespace), text.encode()), audit_op(self.layout, entry)])

    def clear_policy(self, namespace: str, *, actor: str = "configd") -> None:
        """Remove the policy (keep everything) and audit it, in one transaction."""
        validate_name(namespace, "namespace")
        entry = new_entry(
            actor=actor, action="retention.clear", namespace=namespace, name=None, result="deleted", status=200
        )
        self._gateway.txn([op_delete(self.layout.retention(namespace)), audit_op(self.layout, entry)])

    def policies(self) -> dict[str, RetentionPolicy]:
        _, entries = self._gateway.list(self.layout.retention_root)
        found: dict[str, RetentionPolicy] = {}
        for entry in entries:
            try:
                found[entry.key.rsplit("/", 1)[-1]] = RetentionPolicy.model_validate_json(entry.value)
            except ValueError as exc:
                log.error("ignoring unreadable retention policy %s: %s", entry.key, exc)
        return found

    # --- applying ----------------------------------------------------------------------------------
    def run(self, holding: Callable[[], bool] = lambda: True, now: datetime | None = None) -> RetentionReport:
        """One pass over every namespace with a policy; stops early when ``holding()`` turns False."""
        report = RetentionReport()
        now = now or datetime.now(UTC)
        for namespace, policy in sorted(self.policies().items()):
            report.namespaces.append(namespace)
            if policy.trims_audit:
                self._trim_audit(namespace, policy, now, holding, report)
            if policy.trims_versions:
                self._trim_versions(namespace, policy, now, holding, report)
            if report.stopped:
                break
        if report.audit_deleted or report.versions_deleted:
            log.info(
                "retention: removed %d audit entries, %d versions (%d blob keys) in %d transactions",
                report.audit_deleted,
                report.versions_deleted,
                report.blob_keys_deleted,
                report.transactions,
            )
        return report

    def _delete(self, ops: list[dict[str, Any]], holding: Callable[[], bool], report: RetentionReport) -> bool:
        """One small delete transaction; False when the pass must stop (the lock is gone)."""
        if not holding():
            report.stopped = True
            return False
        try:
            self._gateway.txn(ops)
            report.transactions += 1
        except VersionConflict:
            report.conflicts += 1
            return True
        time.sleep(self.pause_seconds)  # leave Consul (and the pushes) room between batches
        return True

    def _trim_audit(
        self,
        namespace: str,
        policy: RetentionPolicy,
        now: datetime,
        holding: Callable[[], bool],
        report: RetentionReport,
    ) -> None:
        keys = self._gateway.keys(self.layout.audit_prefix(namespace))
        for batch in batches(expired_audit(keys, policy, now)):
            if not self._delete([op_delete(k) for k in batch], holding, report):
                return
            report.audit_deleted += len(batch)

    def _trim_versions(
        self,
        namespace: str,
        policy: RetentionPolicy,
        now: datetime,
        holding: Callable[[], bool],
        report: RetentionReport,
    ) -> None:
        heads_prefix = self.layout.heads_prefix(namespace)
        _, heads = self._gateway.list(heads_prefix)
        for head_entry in heads:
            head = HeadRecord.from_bytes(head_entry.value)
            if head.deleted:
                continue  # a tombstoned config keeps its history (delete is the admin's decision)
            prefix = self.layout.versions_prefix(namespace, head.name)
            numbers = [int(k.rsplit("/", 1)[-1]) for k in self._gateway.keys(prefix)]
            candidates = version_candidates(numbers, head.version, policy)
            doomed: list[VersionRecord] = []
            for group in batches([self.layout.version(namespace, head.name, v) for v in candidates]):
                for entry in self._gateway.txn([op_get(k) for k in group]):
                    record = VersionRecord.from_bytes(entry.value)
                    if old_enough(record.created_at, policy, now):
                        doomed.append(record)
            if not doomed:
                continue
            blob_keys = self._orphaned_blobs(namespace, head, numbers, doomed)
            keys = [self.layout.version(namespace, head.name, r.version) for r in doomed] + blob_keys
            # Each transaction re-checks the head: a push (or delete) meanwhile fails it; the next pass retries.
            for batch in batches(keys, CONSUL_TXN_MAX_OPS - 1):
                ops = [op_check_index(head_entry.key, head_entry.modify_index), *[op_delete(k) for k in batch]]
                before = report.conflicts
                if not self._delete(ops, holding, report):
                    return
                if report.conflicts > before:
                    break
                report.versions_deleted += sum(1 for k in batch if k.startswith(prefix))
                report.blob_keys_deleted += sum(1 for k in batch if not k.startswith(prefix))

    def _orphaned_blobs(
        self, namespace: str, head: HeadRecord, numbers: list[int], doomed: list[VersionRecord]
    ) -> list[str]:
        """Blob chunk keys of the doomed versions that no kept version shares (chunks are keyed by sha256)."""
        chunked = {r.sha256 for r in doomed if r.chunks}
        if not chunked:
            return []
        gone = {r.version for r in doomed}
        kept = [self.layout.version(namespace, head.name, v) for v in numbers if v not in gone]
        for group in batches(kept):
            for entry in self._gateway.txn([op_get(k) for k in group]):
                chunked.discard(VersionRecord.from_bytes(entry.value).sha256)
        found: list[str] = []
        for sha in sorted(chunked):
            found += self._gateway.keys(self.layout.blob_prefix(namespace, head.name, sha))
        return found


# --- KV usage ---------------------------------------------------------------------------------------------
class KVUsage:
    """Keys and bytes per namespace and kind under the prefix."""

    def __init__(self, gateway: ConsulGateway, layout: KeyLayout) -> None:
        self._gateway = gateway
        self.layout = layout

    def count(self, namespace: str | None = None) -> dict[str, dict[str, dict[str, int]]]:
        """``{namespace: {kind: {"keys": n, "bytes": b}}}``, read now (one namespace, or all)."""
        found: dict[str, dict[str, dict[str, int]]] = {}
        if namespace is not None:
            validate_name(namespace, "namespace")
            for kind, prefix in self.layout.namespace_prefixes(namespace).items():
                _, entries = self._gateway.list(prefix)
                if entries:
                    found.setdefault(namespace, {})[kind] = {
                        "keys": len(entries),
                        "bytes": sum(len(e.key) + len(e.value) for e in entries),
                    }
            return found
        _, entries = self._gateway.list(f"{self.layout.prefix}/")
        root = f"{self.layout.prefix}/"
        for entry in entries:
            parts = entry.key[len(root) :].split("/")
            kind, ns = _kind_and_namespace(parts)
            if ns is None:
                continue
            slot = found.setdefault(ns, {}).setdefault(kind, {"keys": 0, "bytes": 0})
            slot["keys"] += 1
            slot["bytes"] += len(entry.key) + len(entry.value)
        return found

    def publish(self, holding: Callable[[], bool] = lambda: True) -> None:
        """Count everything and store it for every replica's /metrics (the elected replica's duty)."""
        usage = self.count()
        if not holding():
            return
        stored = self.published()
        if stored is not None and stored.get("namespaces") == usage:
            return  # unchanged: no Raft write
        record = {"computed_at": datetime.now(UTC).isoformat(), "namespaces": usage}
        self._gateway.put(self.layout.usage, json.dumps(record, sort_keys=True).encode())

    def published(self) -> dict[str, Any] | None:
        entry = self._gateway.get(self.layout.usage)
        if entry is None:
            return None
        loaded: dict[str, Any] = json.loads(entry.value)
        return loaded


def _kind_and_namespace(parts: list[str]) -> tuple[str, str | None]:
    if parts[0] == "schemas" and len(parts) > 2:
        return ("schemas" if parts[1] == "heads" else "schema_versions"), parts[2]
    if parts[0] in ("heads", "versions", "blobs", "audit", "clients") and len(parts) > 1:
        return parts[0], parts[1]
    if parts[0] == "rollouts" and len(parts) > 2:
        return ("rollouts" if parts[1] == "active" else "rollout_history"), parts[2]
    return parts[0], None


class UsageCollector(Collector):
    """/metrics gauges from the stored usage record (read at scrape time: one key) and this replica's election."""

    def __init__(self, usage: KVUsage, leading: Callable[[], bool]) -> None:
        self._usage = usage
        self._leading = leading

    def collect(self) -> Iterator[GaugeMetricFamily]:
        elected = GaugeMetricFamily("configd_elected", "1 while this process holds the maintenance lock")
        elected.add_metric([], 1.0 if self._leading() else 0.0)
        yield elected
        try:
            record = self._usage.published()
        except ConfigdError:
            return
        if record is None:
            return
        keys = GaugeMetricFamily(
            "configd_kv_keys", "Consul KV keys per namespace and kind", labels=["namespace", "kind"]
        )
        size = GaugeMetricFamily(
            "configd_kv_bytes", "Consul KV bytes (keys + values) per namespace and kind", labels=["namespace", "kind"]
        )
        for namespace, kinds in sorted(record.get("namespaces", {}).items()):
            for kind, counts in sorted(kinds.items()):
                keys.add_metric([namespace, kind], counts["keys"])
                size.add_metric([namespace, kind], counts["bytes"])
        yield keys
        yield size


@dataclass
class Operations:
    """The operations services of one app: retention, usage, and whether this process is the elected replica."""

    retention: Retention
    usage: KVUsage
    leading: Callable[[], bool] = lambda: False
