"""The audit log: every accepted write (in the same Consul transaction as the write) and every rejected one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from configd_core.consul import ConsulGateway, TxnOp, op_create, op_get
from configd_core.layout import CONSUL_TXN_MAX_OPS, MAX_MESSAGE_CHARS, KeyLayout, validate_name
from configd_core.records import AuditRecord


def new_entry(
    *,
    actor: str,
    action: str,
    namespace: str,
    name: str | None,
    result: str,
    status: int,
    version: int | None = None,
    from_version: int | None = None,
    message: str = "",
    detail: str = "",
) -> AuditRecord:
    """A new audit record; its id sorts by time, so key order is time order."""
    now = datetime.now(UTC)
    return AuditRecord(
        id=f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:8]}",
        at=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        actor=actor,
        action=action,
        namespace=namespace,
        name=name,
        result=result,
        status=status,
        version=version,
        from_version=from_version,
        message=message[:MAX_MESSAGE_CHARS],
        detail=detail[:2000],
    )


class AuditLog:
    """Reads and appends audit records under ``<prefix>/audit/<ns>/``."""

    def __init__(self, gateway: ConsulGateway, layout: KeyLayout) -> None:
        self._gateway = gateway
        self._layout = layout

    def op(self, entry: AuditRecord) -> TxnOp:
        """The transaction operation that writes ``entry`` (create-only: an audit record is never rewritten)."""
        return op_create(self._layout.audit_entry(entry.namespace, entry.id), entry.to_bytes())

    def append(self, entry: AuditRecord) -> None:
        """Write one entry on its own (used for rejected attempts, which write nothing else)."""
        self._gateway.txn([self.op(entry)])

    def list(self, namespace: str | None = None, limit: int = 100) -> list[AuditRecord]:
        """The newest ``limit`` entries, newest first, of one namespace or of all."""
        if namespace is not None:
            validate_name(namespace, "namespace")
            prefix = self._layout.audit_prefix(namespace)
        else:
            prefix = self._layout.audit_root
        keys = self._gateway.keys(prefix)
        # Entry ids start with their timestamp, so sorting the last segment sorts by time across namespaces.
        keys.sort(key=lambda k: k.rsplit("/", 1)[-1], reverse=True)
        wanted = keys[: max(0, limit)]
        records: list[AuditRecord] = []
        for start in range(0, len(wanted), CONSUL_TXN_MAX_OPS):
            batch = wanted[start : start + CONSUL_TXN_MAX_OPS]
            for entry in self._gateway.txn([op_get(k) for k in batch]):
                records.append(AuditRecord.from_bytes(entry.value))
        return records
